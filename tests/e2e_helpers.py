"""What the end-to-end image tests share: a copy of the example project, the demo keys, a
sandbox that enters an unpacked rootfs, and that rootfs's own sshd on a loopback port.

The sandbox is bubblewrap: the rootfs bound at ``/`` with a fresh ``/dev`` and
``/proc`` and its own pid namespace, so nothing is mounted on the host and
every process started inside dies with the sandbox.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import DEMO_KEYS, ROOT, require_tool

# What a login shell on the image would have; nothing of the test machine leaks in.
IMAGE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
EMERGENCY_USER = "breakglass"


def copy_example(dest: Path, extra_yaml: str = "") -> Path:
    """Copy images/ and templates/ to ``dest``, append ``extra_yaml`` to the example spec
    (top-level keys), and return the spec's path. The committed sealed bundle stays valid:
    neither ``base`` nor ``packer`` is part of the sealed policy."""
    shutil.copytree(ROOT / "images", dest / "images")
    shutil.copytree(ROOT / "templates", dest / "templates")
    spec = dest / "images" / "example.yaml"
    if extra_yaml:
        spec.write_text(spec.read_text() + "\n" + extra_yaml)
    return spec


def copy_demo_keys(dest: Path) -> Path:
    """A copy of examples/keys with private keys at 0600 (what the demo_keys fixture gives,
    for module-scoped fixtures)."""
    dest.mkdir(parents=True)
    for src in DEMO_KEYS.iterdir():
        shutil.copy(src, dest / src.name)
        public = src.suffix == ".pub" or src.name in ("allowed_signers", "README.md")
        os.chmod(dest / src.name, 0o644 if public else 0o600)
    return dest


def sandbox_argv(rootfs: Path) -> list[str]:
    """bwrap entering ``rootfs`` as ``/`` with its own /dev, /proc and pid namespace."""
    bwrap = require_tool("bwrap")
    return [
        bwrap, "--bind", str(rootfs), "/", "--dev", "/dev", "--proc", "/proc",
        "--unshare-pid", "--die-with-parent", "--chdir", "/",
    ]  # fmt: skip


def in_image(rootfs: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``rootfs`` with the image's own programs; never raises on exit."""
    return subprocess.run(
        [*sandbox_argv(rootfs), *argv],
        capture_output=True,
        text=True,
        env=IMAGE_ENV,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def image_sshd(rootfs: Path, log: Path) -> Iterator[int]:
    """The rootfs's own ``/usr/sbin/sshd`` on a loopback port, with its config and the
    break-glass drop-in as the image has them and a host key made inside; yields the port.

    sshd runs in the foreground in its own session and pid namespace, so stopping the
    sandbox stops every connection it forked. Its log goes to ``log``.
    """
    keydir = rootfs / "run/e2e-sshd"
    keydir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (rootfs / "run/sshd").mkdir(mode=0o755, exist_ok=True)
    made = in_image(
        rootfs, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/run/e2e-sshd/host_key"
    )
    assert made.returncode == 0, made.stderr
    port = free_port()
    # The drop-in's ForceCommand runs the session recorder through sudo, which bwrap's
    # no_new_privs stops; a ForceCommand read first wins, so logins here run unrecorded
    # (tests/test_host_record.py proves the recording against a real sshd and sudo).
    (keydir / "sshd_config").write_text(
        f"Match User {EMERGENCY_USER}\n    ForceCommand none\nMatch all\n"
        "Include /etc/ssh/sshd_config\n"
    )
    argv = [
        *sandbox_argv(rootfs), "/usr/sbin/sshd", "-D", "-e", "-p", str(port),
        "-f", "/run/e2e-sshd/sshd_config",
        "-o", "ListenAddress=127.0.0.1", "-o", "HostKey=/run/e2e-sshd/host_key",
        "-o", "PidFile=none",
    ]  # fmt: skip
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            argv,
            env=IMAGE_ENV,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 15
            while not _accepts(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"sshd in the image did not start: {log.read_text()}")
                time.sleep(0.05)
            yield port
        finally:
            _stop(proc)
            shutil.rmtree(keydir, ignore_errors=True)
    assert not _accepts(port), "sshd still listening after the sandbox was stopped"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def ssh_login(port: int, key: Path, user: str = EMERGENCY_USER) -> subprocess.CompletedProcess[str]:
    """Log in with ``key`` alone (no agent, no password) and print the account's name."""
    return subprocess.run(
        [
            require_tool("ssh"), "-i", str(key), "-F", "/dev/null", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "ConnectTimeout=10",
            "-o", "LogLevel=ERROR", "-p", str(port), f"{user}@127.0.0.1", "id", "-un",
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )  # fmt: skip


def error_lines(stderr: str) -> list[str]:
    """The ``breakglass: error:`` lines of a run (progress lines may precede them)."""
    return [line for line in stderr.splitlines() if line.startswith("breakglass: error:")]
