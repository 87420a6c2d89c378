"""A real OpenSSH server on loopback, configured by an image's own sshd drop-in.

The server runs in a ``bwrap`` mount namespace so that a drill touches
nothing on the machine: the emergency account exists only in the sandbox's
``/etc/passwd``, the privilege-separation directory is a temporary one, and
the drop-in's ``AuthorizedKeysCommand /usr/local/bin/breakglass ...`` is
bound to a wrapper that runs ``breakglass host authorized-keys --root ROOT``.
The image's ``etc/ssh/sshd_config.d/*.conf`` is included verbatim, so a
missing or wrong drop-in makes the login fail, as it would on the host.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from builder.errors import CheckFailed, ToolMissing
from builder.payload import SSHD_DROPIN_PATH

COMMAND_PATH = "/usr/local/bin/breakglass"
EMERGENCY_UID = 4242


def _tool(name: str) -> str:
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    if path is None:
        raise ToolMissing(
            f"{name} is not installed", hint="apt-get install openssh-server bubblewrap"
        )
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class LoginResult:
    ok: bool
    user: str
    detail: str


class LoopbackSshd:
    """``sshd -D`` on 127.0.0.1 for one image root; ``start()``, ``login()``, ``stop()``."""

    def __init__(self, root: Path, workdir: Path, users: tuple[str, ...]) -> None:
        self.root = root
        self.workdir = workdir
        self.users = users
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def _prepare(self) -> list[str]:
        w = self.workdir
        w.mkdir(parents=True, exist_ok=True)
        os.chmod(w, 0o711)  # noqa: S103 - the emergency account must reach its home below
        host_key = w / "ssh_host_ed25519_key"
        if not host_key.exists():
            subprocess.run(
                [_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                check=True, stdin=subprocess.DEVNULL, capture_output=True,
            )  # fmt: skip
        passwd = Path("/etc/passwd").read_text(encoding="utf-8")
        group = Path("/etc/group").read_text(encoding="utf-8")
        for i, user in enumerate(self.users):
            home = w / "home" / user
            home.mkdir(parents=True, exist_ok=True)
            os.chown(home, EMERGENCY_UID + i, EMERGENCY_UID + i)
            passwd += f"{user}:x:{EMERGENCY_UID + i}:{EMERGENCY_UID + i}::{home}:/bin/sh\n"
            group += f"{user}:x:{EMERGENCY_UID + i}:\n"
        (w / "passwd").write_text(passwd, encoding="utf-8")
        (w / "group").write_text(group, encoding="utf-8")
        (w / "privsep").mkdir(exist_ok=True, mode=0o755)
        (w / "bin").mkdir(exist_ok=True, mode=0o755)
        wrapper = w / "bin" / "breakglass"
        # the drop-in calls `breakglass host authorized-keys %u`; point it at this root
        wrapper.write_text(
            f'#!/bin/sh\nexec "{sys.executable}" -m builder "$1" "$2" --root "{self.root}" "$3"\n',
            encoding="utf-8",
        )
        os.chmod(wrapper, 0o755)  # noqa: S103 - sshd runs it; it holds no secret
        self.port = _free_port()
        config = w / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile none\n"
            "UsePAM no\nStrictModes no\nAuthorizedKeysFile none\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin no\nLogLevel VERBOSE\n"
            f"Include {self.root / SSHD_DROPIN_PATH.rsplit('/', 1)[0]}/*.conf\n",
            encoding="utf-8",
        )
        return [
            _tool("bwrap"), "--die-with-parent", "--dev-bind", "/", "/",
            "--bind", str(w / "passwd"), "/etc/passwd", "--bind", str(w / "group"), "/etc/group",
            "--bind", str(w / "privsep"), "/run/sshd",
            "--bind", str(w / "bin"), str(Path(COMMAND_PATH).parent),
            _tool("sshd"), "-D", "-e", "-f", str(config),
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> None:
        """Start sshd and wait until it accepts connections. Raises CheckFailed if it does not."""
        argv = self._prepare()
        log = (self.workdir / "sshd.log").open("wb")
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise CheckFailed(f"sshd exited at start ({self.log_tail()})")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        raise CheckFailed("sshd did not start listening in time")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = (self.workdir / "sshd.log").read_text("utf-8", "replace").strip().splitlines()
            return lines[-1][:200] if lines else "no log"
        return "no log"

    def login(self, user: str, key: Path, timeout: float = 15.0) -> LoginResult:
        """Log in as ``user`` with the private key file ``key`` and run ``id -un``; never raises."""
        argv = [
            _tool("ssh"), "-F", "/dev/null", "-i", str(key), "-p", str(self.port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", f"UserKnownHostsFile={self.workdir / 'known_hosts'}", "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR", f"{user}@127.0.0.1", "id -un",
        ]  # fmt: skip
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return LoginResult(False, user, "ssh login timed out")
        who = proc.stdout.strip()
        if proc.returncode == 0 and who == user:
            return LoginResult(True, user, f"ssh login as {user} succeeded (id -un: {who})")
        reason = (proc.stderr.strip().splitlines() or ["no message"])[-1][:160]
        return LoginResult(False, user, f"ssh login as {user} refused ({reason})")

    def stop(self) -> None:
        """Stop sshd and every process of its session; calling it twice is harmless."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def __enter__(self) -> LoopbackSshd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
