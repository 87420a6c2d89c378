"""A test fleet on this machine: N hosts, each an image root with its own real sshd on loopback.

Each host is a copy of one really built image root (``tests.hostkit``) and an
``sshd -D`` in a ``bwrap`` mount namespace listening on its own 127.0.0.1
port, with its own host key. Inside the sandbox ``/usr/local/bin/breakglass``
runs the project's CLI against that host's root, as the image's own command
would on a real host. The fleet writes a pyinfra inventory file (two groups,
``web`` and ``db``) with each host's port, the admin key, a known_hosts file
and ``breakglass_root``. Nothing listens beyond loopback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.hostkit import PYTHON, Image, clone


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FleetHost:
    name: str
    root: Path
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "sshd.log"


@dataclass
class TestFleet:
    """The running fleet; ``stop()`` ends every sshd it started."""

    directory: Path
    image: Image
    hosts: list[FleetHost] = field(default_factory=list)

    @property
    def admin_key(self) -> Path:
        return self.directory / "admin_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def inventory(self) -> Path:
        return self.directory / "inventory.py"

    def host(self, name: str) -> FleetHost:
        return next(h for h in self.hosts if h.name == name)

    def ssh_argv(self, host: FleetHost, *command: str) -> list[str]:
        """``ssh`` to ``host`` as root with the admin key (for the sequential baseline)."""
        return [
            "ssh", "-F", "/dev/null", "-i", str(self.admin_key), "-p", str(host.port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "LogLevel=ERROR", "root@127.0.0.1", *command,
        ]  # fmt: skip

    def write_known_hosts(self) -> None:
        lines = []
        for h in self.hosts:
            kind, key = (h.workdir / "host_key.pub").read_text().split()[:2]
            lines.append(f"[127.0.0.1]:{h.port} {kind} {key}\n")
        self.known_hosts.write_text("".join(lines))

    def write_inventory(self) -> None:
        data = (
            f'"ssh_hostname": "127.0.0.1", "ssh_user": "root", "ssh_key": "{self.admin_key}", '
            f'"ssh_known_hosts_file": "{self.known_hosts}", "ssh_strict_host_key_checking": "yes", '
            '"ssh_allow_agent": False, "ssh_look_for_keys": False'
        )
        groups: dict[str, list[str]] = {"web": [], "db": []}
        for i, h in enumerate(self.hosts):
            entry = f'    ("{h.name}", {{{data}, "ssh_port": {h.port}, "breakglass_root": "{h.root}"}}),\n'
            groups["web" if i % 2 == 0 else "db"].append(entry)
        text = "".join(f"{g} = [\n{''.join(entries)}]\n" for g, entries in groups.items())
        self.inventory.write_text(text, encoding="utf-8")

    def _config(self, h: FleetHost) -> Path:
        config = h.workdir / "sshd_config"
        config.write_text(
            f"Port {h.port}\nListenAddress 127.0.0.1\nHostKey {h.workdir / 'host_key'}\n"
            "PidFile none\nUsePAM no\nStrictModes no\n"
            f"AuthorizedKeysFile {self.admin_key}.pub\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            "MaxStartups 200\nLogLevel INFO\n",
            encoding="utf-8",
        )
        return config

    def _launch(self, h: FleetHost) -> None:
        h.port = _free_port()
        argv = [
            "bwrap", "--die-with-parent", "--dev-bind", "/", "/",
            "--bind", str(h.workdir / "privsep"), "/run/sshd",
            "--bind", str(h.workdir / "bin"), "/usr/local/bin",
            "--bind", str(h.workdir / "passwd"), "/etc/passwd",
            "/usr/sbin/sshd", "-D", "-e", "-f", str(self._config(h)),
        ]  # fmt: skip
        with h.log.open("wb") as log:
            h.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )

    def start_host(self, h: FleetHost, timeout: float = 60.0) -> None:
        """(Re)start one host's sshd on a fresh port and wait until it listens."""
        for _ in range(5):
            self._launch(h)
            if self._wait([h], timeout):
                return
        raise RuntimeError(f"sshd of {h.name} did not start: {h.log.read_text()[-300:]}")

    def _wait(self, hosts: list[FleetHost], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        waiting = list(hosts)
        while waiting and time.monotonic() < deadline:
            for h in list(waiting):
                if f"Server listening on 127.0.0.1 port {h.port}".encode() in h.log.read_bytes():
                    waiting.remove(h)
                elif h.proc is not None and h.proc.poll() is not None:
                    return False
            time.sleep(0.05)
        return not waiting

    def stop_host(self, h: FleetHost) -> None:
        proc, h.proc = h.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def stop(self) -> None:
        for h in self.hosts:
            self.stop_host(h)


def start_fleet(image: Image, directory: Path, count: int) -> TestFleet:
    """Clone ``image`` ``count`` times, start every sshd, write the inventory; returns the fleet."""
    directory.mkdir(parents=True, exist_ok=True)
    fleet = TestFleet(directory, image)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleet-admin", "-f", str(fleet.admin_key)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    for i in range(count):
        name = f"host-{i:03d}"
        work = directory / name
        (work / "privsep").mkdir(parents=True)
        (work / "bin").mkdir()
        h = FleetHost(name, clone(image, work / "root").root, work)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "host_key")],
            check=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        # the host's own root account: home in the host's directory, a plain /bin/sh (the
        # machine's root may have a slow shell profile that no fleet host would run)
        (work / "home").mkdir()
        passwd = "".join(
            f"root:x:0:0:root:{work / 'home'}:/bin/sh\n" if line.startswith("root:") else line
            for line in Path("/etc/passwd").read_text().splitlines(keepends=True)
        )
        (work / "passwd").write_text(passwd)
        wrapper = work / "bin" / "breakglass"
        wrapper.write_text(f'#!/bin/sh\nexec "{PYTHON}" -m builder "$@" --root "{h.root}"\n')
        wrapper.chmod(0o755)
        fleet.hosts.append(h)
    try:
        for h in fleet.hosts:
            fleet._launch(h)
        if not fleet._wait(fleet.hosts, 60.0):
            for h in fleet.hosts:  # a port taken meanwhile: retry those hosts one by one
                if h.proc is None or h.proc.poll() is not None:
                    fleet.start_host(h)
        fleet.write_known_hosts()
        fleet.write_inventory()
    except BaseException:
        fleet.stop()
        raise
    return fleet


def activate(image: Image, host: FleetHost, ttl: int = 600) -> None:
    """Open a real window on ``host``: request, two approvals, unseal (library, real crypto)."""
    import datetime as dt

    from builder.host.request import open_request
    from builder.host.unseal import unseal
    from tests.hostkit import lib_approve

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    req = open_request(
        host.root, now, scope="agent-backup", ttl_seconds=ttl, reason="fleet", requester="dave"
    )
    approvals = [lib_approve(req, image.approvers[n], now) for n in ("bob", "carol")]
    assert unseal(host.root, now, req.id, approvals).phase == "ACTIVE"


def forge_expired(host: FleetHost) -> None:
    """Write a state that says ACTIVE until an hour ago: what a host whose expiry never ran shows."""
    import datetime as dt

    from builder.core.canonical import dumps

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    z = "%Y-%m-%dT%H:%M:%SZ"
    state = {
        "format": "breakglass-host-state/1", "phase": "ACTIVE", "pending": None,
        "active": {"request_id": "forged", "scope": "agent-backup", "files": [],
                   "activated_at": (now - dt.timedelta(hours=2)).strftime(z),
                   "expires_at": (now - dt.timedelta(hours=1)).strftime(z)},
        "burned": {},
    }  # fmt: skip
    path = host.root / "var/lib/breakglass/state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dumps(state))


def reset(fleet: TestFleet, host: FleetHost) -> None:
    """Put ``host``'s root back to the freshly built image (DORMANT, empty audit log)."""
    import shutil

    shutil.rmtree(host.root)
    shutil.copytree(fleet.image.root, host.root, symlinks=True)


def reseal(host: FleetHost) -> None:
    """Close ``host``'s window the way ``host reseal`` does (appends ``resealed``)."""
    import datetime as dt

    from builder.host.expire import reseal as do_reseal
    from builder.host.expire import session

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with session(host.root, now) as (layout, current):
        do_reseal(layout, current, now, "resealed", {"by": "reseal"})


def small_fleet(tmp: Path, count: int = 4) -> TestFleet:
    """A fleet for one test module; skips locally (fails under CI) without root or the tools."""
    from tests.conftest import require_root, require_tool
    from tests.hostkit import shared_image

    require_root("each host's sshd runs as root in bwrap")
    for tool in ("bwrap", "sshd", "ssh-keygen", "ssh"):
        require_tool(tool)
    return start_fleet(shared_image(), tmp, count)
