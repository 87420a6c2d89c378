"""A real OpenSSH sshd asks ``host authorized-keys``: no login while DORMANT, login while ACTIVE,
none after expiry.

Needs root (sshd, temporary local accounts). The emergency account
``breakglass`` and the unprivileged ``AuthorizedKeysCommandUser``
``breakglass-akc`` are created for the test when they do not exist, and
removed afterwards; the privilege-separation directory ``/run/sshd`` is
created if missing. The image root lives under ``/run`` (a tmpfs, as on a
host) so that the AKC account can reach it; the command runs with the system
``python3``, as on an image with an OS.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.host.request import open_request
from builder.host.unseal import unseal
from tests import hostkit
from tests.conftest import require_root, require_tool

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _emergency_account(name: str) -> Iterator[None]:
    import pwd

    try:
        pwd.getpwnam(name)
        created = False
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
        created = True
    # "*" is no password rather than a locked account, so sshd allows key login
    subprocess.run(["usermod", "-p", "*", name], check=True)
    try:
        yield
    finally:
        if created:
            subprocess.run(["userdel", "-r", name], check=False, capture_output=True)


@contextlib.contextmanager
def _sudoers(root: Path, wrapper: Path, extra: str) -> Iterator[None]:
    """The image's sudoers rules on this machine for the test (the ForceCommand needs them).

    Paths are moved into the unpacked root; ``extra`` adds rules (a command to run via sudo).
    The file is checked with ``visudo -c`` first and removed afterwards.
    """
    visudo = require_tool("visudo")
    require_tool("sudo")
    rules = (root / "etc/sudoers.d/breakglass").read_text()
    assert "NOPASSWD: BREAKGLASS_RECORD" in rules
    rules = rules.replace("/usr/local/bin/breakglass", str(wrapper))
    rules = rules.replace("/var/lib/breakglass", str(root / "var/lib/breakglass")) + extra
    # a name without a dot: sudo skips files in sudoers.d whose names hold one
    path = Path(f"/etc/sudoers.d/breakglass-test-{os.getpid()}")
    staged = path.with_name(f"{path.name}.new")
    staged.write_text(rules)
    staged.chmod(0o440)
    try:
        subprocess.run([visudo, "-cqf", str(staged)], check=True)
        staged.rename(path)
        yield
    finally:
        staged.unlink(missing_ok=True)
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _sshd(root: Path, sudo_extra: str = "") -> Iterator[int]:
    sshd = require_tool("sshd")
    # AuthorizedKeysCommand must sit on a root-owned path that nobody else can write (not /tmp)
    work = Path(tempfile.mkdtemp(prefix="breakglass-sshd-", dir="/run"))
    work.chmod(0o755)  # the AKC account runs the wrapper in it
    try:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "host_key")],
            check=True,
        )
        wrapper = work / "breakglass"
        # the system python3 (the venv's interpreter may sit under /root, which the AKC user
        # cannot enter); the fast path needs nothing outside the standard library
        wrapper.write_text(
            f'#!/bin/sh\nPYTHONPATH={hostkit.REPO} exec /usr/bin/python3 -m builder "$@" --root {root}\n'
        )
        wrapper.chmod(0o755)
        dropin = (root / "etc/ssh/sshd_config.d/50-breakglass.conf").read_text()
        assert "AuthorizedKeysCommand /usr/local/bin/breakglass host authorized-keys %u" in dropin
        assert "AuthorizedKeysCommandUser breakglass-akc" in dropin
        assert "ForceCommand exec sudo -n /usr/local/bin/breakglass host record-session" in dropin
        (work / "50-breakglass.conf").write_text(
            dropin.replace("/usr/local/bin/breakglass", str(wrapper))
        )
        port = _free_port()
        (work / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nHostKey {work / 'host_key'}\nPidFile {work / 'sshd.pid'}\n"
            "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"AuthorizedKeysFile none\nInclude {work / '50-breakglass.conf'}\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        stack = contextlib.ExitStack()
        stack.enter_context(_sudoers(root, wrapper, sudo_extra))
        proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(work / "sshd_config"), "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), 0.2),
                ):
                    break
                time.sleep(0.05)
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            stack.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _akc_account() -> Iterator[None]:
    import pwd

    try:
        pwd.getpwnam("breakglass-akc")
        created = False
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                        "/nonexistent", "--shell", "/usr/sbin/nologin", "breakglass-akc"], check=True)  # fmt: skip
        created = True
    try:
        yield
    finally:
        if created:
            subprocess.run(["userdel", "breakglass-akc"], check=False, capture_output=True)


@contextlib.contextmanager
def _run_dir() -> Iterator[Path]:
    """A directory under /run that other users may enter (tmp_path under /tmp is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="breakglass-host-", dir="/run"))
    try:
        d.chmod(0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _as_akc(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "breakglass-akc", "--", *argv],
                          capture_output=True, text=True, check=False)  # fmt: skip


def _login(port: int, key: Path, user: str) -> int:
    return subprocess.run(
        [
            require_tool("ssh"), "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5",
            "-p", str(port), f"{user}@127.0.0.1", "true",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    ).returncode  # fmt: skip


def _activate(image: hostkit.Image, ttl: int) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    req = open_request(
        image.root, now, scope="ssh-emergency", ttl_seconds=ttl, reason="sshd", requester="dave"
    )
    approvals = [hostkit.lib_approve(req, image.approvers[n], now) for n in ("bob", "carol")]
    assert unseal(image.root, now, req.id, approvals).phase == "ACTIVE"


def test_sshd_admits_the_emergency_key_only_while_active(tmp_path: Path) -> None:
    require_root("to run sshd and add local accounts")
    require_tool("ssh")
    require_tool("runuser")
    with _akc_account(), _run_dir() as run_dir:
        _sshd_flow(hostkit.clone(hostkit.shared_image(), run_dir / "root"), tmp_path)


def _sshd_flow(image: hostkit.Image, tmp_path: Path) -> None:
    user = image.emergency_user
    # the responder's copy of the key, taken during an earlier window
    _activate(image, 600)
    key = tmp_path / "id_emergency"
    shutil.copy(image.root / "run/breakglass/ssh-emergency/emergency-ssh-key", key)
    key.chmod(0o600)
    assert hostkit.run("host", "reseal", "--root", str(image.root)).returncode == 0
    with _emergency_account(user), _sshd(image.root) as port:
        assert _login(port, key, user) != 0  # DORMANT
        _activate(image, 4)
        activated = time.monotonic()
        assert _login(port, key, user) == 0  # ACTIVE
        # the AKC account reads the grant, and nothing that is secret
        runtime = image.root / "run/breakglass"
        assert f"{stat.S_IMODE(runtime.stat().st_mode):04o}" == "0710"
        assert _as_akc("cat", str(runtime / ".grant.json")).returncode == 0
        for secret in (
            runtime / "ssh-emergency/emergency-ssh-key",
            image.root / "var/lib/breakglass/state.json",
        ):
            assert _as_akc("cat", str(secret)).returncode != 0, secret
        assert _as_akc("ls", str(runtime)).returncode != 0
        time.sleep(max(0.0, 4.5 - (time.monotonic() - activated)))
        assert _login(port, key, user) != 0  # expired, no timer
    # the AKC account cannot settle the host: the timer's tick wipes the plaintext
    assert hostkit.plaintext_files(image.root) != []
    assert hostkit.run("host", "tick", "--root", str(image.root)).returncode == 0
    assert hostkit.plaintext_files(image.root) == []
