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
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from builder.core.errors import CheckFailed, ToolMissing
from builder.core.payload import SSHD_DROPIN_PATH
from builder.release.accounts import AKC_USER

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


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of group ``pgid``, from ``/proc``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="ascii", errors="replace").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _group_gone(pgid: int, timeout: float) -> bool:
    """Wait until group ``pgid`` has no live process; True when it has none.

    A zombie counts as gone: it runs nothing and holds no file, and who reaps
    it (init, after its parent was killed) is not ours to wait for.
    """
    deadline = time.monotonic() + timeout
    while _group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


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
        self.env: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    def set_env(self, env: dict[str, str]) -> None:
        """Run every later ``authorized-keys`` call with ``env`` added (sshd itself clears it)."""
        self.env = dict(env)
        self._write_wrapper()

    def _write_wrapper(self) -> None:
        # the drop-in calls `breakglass host authorized-keys %u`; point it at this root
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(self.env.items()))
        text = (
            f"#!/bin/sh\n{exports}"
            f'exec "{sys.executable}" -m builder "$1" "$2" --root "{self.root}" "$3"\n'
        )
        wrapper = self.workdir / "bin" / "breakglass"
        # replaced whole, so that a login racing the change runs the old script or the new one
        tmp = wrapper.with_name(".breakglass.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o755)  # noqa: S103 - sshd runs it; it holds no secret
        os.replace(tmp, wrapper)

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
        # The image's drop-in names AuthorizedKeysCommandUser breakglass-akc. The drill's root
        # lives in a private temp directory that account could not enter, so here the name maps
        # to uid 0; tests/test_host_sshd.py proves the unprivileged account against a real sshd.
        passwd += f"{AKC_USER}:x:0:0:breakglass drill AKC:/nonexistent:/usr/sbin/nologin\n"
        (w / "passwd").write_text(passwd, encoding="utf-8")
        (w / "group").write_text(group, encoding="utf-8")
        (w / "privsep").mkdir(exist_ok=True, mode=0o755)
        (w / "bin").mkdir(exist_ok=True, mode=0o755)
        self._write_wrapper()
        self.port = _free_port()
        config = w / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile none\n"
            "UsePAM no\nStrictModes no\nAuthorizedKeysFile none\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin no\nLogLevel VERBOSE\n"
            # The drop-in's ForceCommand records each login through sudo; bwrap sets
            # no_new_privs, so sudo cannot run in here. The first ForceCommand sshd reads wins:
            # the drill logs in unrecorded (tests/test_host_record.py proves the recording).
            + (
                f"Match User {','.join(self.users)}\n    ForceCommand none\nMatch all\n"
                if self.users
                else ""
            )
            + f"Include {self.root / SSHD_DROPIN_PATH.rsplit('/', 1)[0]}/*.conf\n",
            encoding="utf-8",
        )
        return [
            _tool("bwrap"), "--die-with-parent", "--dev-bind", "/", "/",
            "--bind", str(w / "passwd"), "/etc/passwd", "--bind", str(w / "group"), "/etc/group",
            "--bind", str(w / "privsep"), "/run/sshd",
            "--bind", str(w / "bin"), str(Path(COMMAND_PATH).parent),
            _tool("sshd"), "-D", "-e", "-f", str(config),
        ]  # fmt: skip

    def start(self, timeout: float = 60.0, attempts: int = 5) -> None:
        """Start sshd and wait until it says it listens. Raises CheckFailed if it never does.

        Readiness is sshd's own "Server listening" line, not a successful
        connect: the port is picked before sshd binds it, so another process
        may take it meanwhile, and a connect would then reach that process.
        Such a collision is retried with a fresh port.
        """
        deadline = time.monotonic() + timeout
        for _ in range(attempts):
            argv = self._prepare()
            if self._launch(argv, deadline):
                return
        raise CheckFailed(f"sshd could not bind a loopback port ({self.log_tail()})")

    def _launch(self, argv: list[str], deadline: float) -> bool:
        """Run sshd; True once it listens, False when its port was taken. Raises CheckFailed."""
        log_path = self.workdir / "sshd.log"
        with log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        listening = f"Server listening on 127.0.0.1 port {self.port}".encode()
        while time.monotonic() < deadline:
            text = log_path.read_bytes()
            if listening in text:
                return True
            if self._proc.poll() is not None:
                self._proc = None
                if b"Address already in use" in text:
                    return False
                raise CheckFailed(f"sshd exited at start ({self.log_tail()})")
            time.sleep(0.05)
        self.stop()
        raise CheckFailed("sshd did not start listening in time")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = (self.workdir / "sshd.log").read_text("utf-8", "replace").strip().splitlines()
            return lines[-1][:200] if lines else "no log"
        return "no log"

    def login(self, user: str, key: Path, timeout: float = 60.0) -> LoginResult:
        """Log in as ``user`` with the private key file ``key`` and run ``id -un``; never raises."""
        argv = [
            _tool("ssh"), "-F", "/dev/null", "-i", str(key), "-p", str(self.port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", f"UserKnownHostsFile={self.workdir / 'known_hosts'}", "-o", "ConnectTimeout=30",
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
        """Stop sshd and every process of its group, and wait until they are gone.

        Calling it twice is harmless. Per-connection children start their own
        session; they end with their client, which the drill never leaves running.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait)
            if _group_gone(proc.pid, wait):
                return

    def __enter__(self) -> LoopbackSshd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
