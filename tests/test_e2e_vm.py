"""A VM image built by Packer's ``qemu`` builder boots dormant, opens for a quorum and closes
on time: the whole flow against the running VM over SSH.

One build (``build --backend packer`` on the cached ``base debian --disk``), one VM booted
from a fresh copy of its qcow2 and reused by every check, one more short boot for the
host-key check. Software emulation (tcg) where kvm cannot run a guest: expect minutes.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from builder.vm.disk import BaseDisk, debian_disk, digest_file
from tests.conftest import require_root, require_tool, run_cli
from tests.e2e_helpers import EMERGENCY_USER, copy_demo_keys, copy_example
from tests.vm_helpers import SSH_OPTS, BootedVM, boot, operator_key

pytestmark = pytest.mark.e2e

OFFLINE = {"CHECKPOINT_DISABLE": "1"}
BG = "/usr/local/bin/breakglass"
KEY_IN_VM = "/run/breakglass/ssh-emergency/emergency-ssh-key"
RECORDINGS = "/var/lib/breakglass/recordings"
SUDO_CMD = "sudo journalctl --no-pager -n 1"  # the example's scope allows exactly this line


@dataclass(frozen=True)
class VmBuild:
    image_dir: Path
    qcow2: Path
    disk: BaseDisk
    keys: Path
    work: Path
    manifest: dict[str, Any]
    verify: dict[str, Any]


@pytest.fixture(scope="module")
def vm_build(tmp_path_factory: pytest.TempPathFactory) -> VmBuild:
    """``breakglass build --backend packer`` with a qemu builder on the base disk, verified."""
    require_root("the base disk keeps owners; debugfs writes the build key")
    for tool in ("qemu-system-x86_64", "qemu-img", "debugfs", "mkfs.ext4", "packer", "umoci"):
        require_tool(tool)
    require_tool("debootstrap")
    work = tmp_path_factory.mktemp("e2e-vm")
    disk = debian_disk(work / "base-disk")
    keys = copy_demo_keys(work / "keys")
    section = {"base_disk": str(disk.directory), "builders": [{"type": "qemu", "name": "vm"}]}
    spec = copy_example(work / "project", f"packer: {json.dumps(section)}\n")
    dist = work / "dist"
    proc = run_cli(
        "build", spec, "--backend", "packer", "--out", dist, "--sign-key", keys / "release",
        "--json", env=OFFLINE,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    image_dir = dist / "example" / "1.0.0"
    ok = run_cli("verify", image_dir, "--allowed-signers", keys / "allowed_signers", "--json")
    assert ok.returncode == 0, ok.stderr
    manifest = json.loads((image_dir / "breakglass-manifest.json").read_bytes())
    return VmBuild(
        image_dir, image_dir / "vm.qcow2", disk, keys, work, manifest, json.loads(ok.stdout)
    )


@pytest.fixture(scope="module")
def vm(vm_build: VmBuild) -> Iterator[BootedVM]:
    """The built image, booted once from a fresh copy, sshd up; reused by the checks below."""
    work = vm_build.work / "vm"
    work.mkdir()
    with boot(vm_build.qcow2, vm_build.disk, work, operator_key(work)) as booted:
        booted.wait_for_sshd()
        yield booted


def _root(vm: BootedVM, *command: str) -> str:
    proc = vm.ssh(*command)
    assert proc.returncode == 0, f"{command}: {proc.stderr}\n{vm.tail()}"
    return proc.stdout


def _host(vm: BootedVM, *args: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_root(vm, BG, "host", *args, "--json"))
    return doc


def _debugfs(raw: Path, command: str) -> str:
    proc = subprocess.run(
        ["debugfs", "-R", command, str(raw)], capture_output=True, text=True, check=False
    )
    return proc.stdout


def test_qemu_build_names_its_qcow2_and_base_disk_and_verifies(vm_build: VmBuild) -> None:
    names = sorted(p.name for p in vm_build.image_dir.iterdir())
    assert names == [
        "breakglass-manifest.json", "breakglass-manifest.json.sig", "packer-manifest.json",
        "packer-template.json", "vm.qcow2",
    ]  # fmt: skip
    prov = vm_build.manifest["provenance"]
    (disk,) = prov["disks"]
    assert disk["file"] == "vm.qcow2" and disk["digest"] == digest_file(vm_build.qcow2)
    assert vm_build.verify["image_digest"] == disk["digest"]
    # the recipe of the base disk the image was built on
    assert prov["base"]["disk"]["cache_key"] == vm_build.disk.cache_key
    assert prov["base"]["disk"]["files"] == vm_build.disk.recipe["files"]
    template = json.loads((vm_build.image_dir / "packer-template.json").read_bytes())
    (block,) = template["builders"]
    assert block["type"] == "qemu" and block["accelerator"] in ("kvm", "tcg")
    assert ["-kernel", str(vm_build.disk.kernel)] in block["qemuargs"]
    assert [p["type"] for p in template["provisioners"]] == ["shell-local", "shell"]
    assert "@ssh/" in template["provisioners"][0]["inline"][0]

    # the image carries no login key, no host key and no machine id of the build boot
    raw = vm_build.work / "inspect.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(vm_build.qcow2), str(raw)], check=True)
    try:
        assert "authorized_keys" not in _debugfs(raw, "ls /root/.ssh")
        assert "ssh_host_" not in _debugfs(raw, "ls /etc/ssh")
        assert _debugfs(raw, "cat /etc/machine-id").strip() == ""
        assert "breakglass-expire.timer" in _debugfs(
            raw, "ls /etc/systemd/system/timers.target.wants"
        )
    finally:
        raw.unlink()

    # a changed qcow2 no longer verifies
    with vm_build.qcow2.open("r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    try:
        bad = run_cli(
            "verify", vm_build.image_dir, "--allowed-signers", vm_build.keys / "allowed_signers"
        )
        assert bad.returncode == 1
        assert "vm.qcow2: disk differs from the digest in the signed manifest" in bad.stderr
    finally:
        with vm_build.qcow2.open("r+b") as f:
            f.seek(-1, os.SEEK_END)
            f.write(last)


def test_vm_boots_dormant_with_its_expiry_units(vm: BootedVM) -> None:
    status = _host(vm, "status")
    assert status["state"] == "DORMANT" and status["image"]["version"] == "1.0.0"
    assert _root(vm, "findmnt", "-n", "-o", "FSTYPE", "/run").strip() == "tmpfs"
    assert _root(vm, "find", "/run/breakglass", "-type", "f").strip() == ""
    assert _root(vm, "stat", "-c", "%a %U", "/run/breakglass").strip() == "700 root"
    assert _root(vm, "systemctl", "is-active", "breakglass-expire.timer").strip() == "active"
    units = _root(
        vm, "systemctl", "show", "-p", "LoadState", "--value",
        "breakglass-expire.service", "breakglass-expire.timer", "ssh.service",
    )  # fmt: skip
    assert units.split() == ["loaded", "loaded", "loaded"]
    assert _root(vm, "systemctl", "is-active", "ssh.service").strip() == "active"
    # host keys were made by this boot (the image has none)
    assert _root(vm, "sh", "-c", "ls /etc/ssh/ssh_host_*_key | wc -l").strip() != "0"
    keys = vm.ssh(BG, "host", "authorized-keys", EMERGENCY_USER)
    assert keys.returncode == 0 and keys.stdout == ""


def _host_key(port: int) -> str:
    proc = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if "ssh-ed25519" in line]
    assert lines, proc.stderr
    return lines[0].split()[-1]


def test_two_fresh_boots_make_different_host_keys(vm_build: VmBuild, vm: BootedVM) -> None:
    first = _host_key(vm.port)
    work = vm_build.work / "second"
    work.mkdir()
    with boot(vm_build.qcow2, vm_build.disk, work, operator_key(work), name="second") as other:
        other.wait_for_sshd()
        second = _host_key(other.port)
    assert first != second


def _guest_offset(vm: BootedVM) -> float:
    """Guest clock minus host clock, in seconds (the guest reads the host's RTC at boot)."""
    before = time.time()
    guest = float(_root(vm, "date", "+%s.%N"))
    after = time.time()
    return guest - (before + after) / 2


def _request(vm: BootedVM, work: Path, ttl: str) -> tuple[str, Path]:
    doc = _host(
        vm, "request", "--scope", "ssh-emergency", "--ttl", ttl, "--reason", "e2e vm drill",
        "--requester", "dave", "--out", "/root/request.json",
    )  # fmt: skip
    outside = work / f"request-{doc['request_id'][:12]}.json"
    outside.write_text(_root(vm, "cat", "/root/request.json"))
    return str(doc["request_id"]), outside


def _approve(vm: BootedVM, request: Path, keys: Path, names: tuple[str, ...]) -> list[str]:
    """Approvals made outside the VM with the real ``breakglass approve``, copied in."""
    inside = []
    for name in names:
        out = request.with_name(f"{request.stem}.{name}.approval")
        proc = run_cli(
            "approve", request, "--identity", keys / f"{name}.age", "--signing-key", keys / name,
            "--approver", name, "--yes", "--out", out,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        path = f"/root/{out.name}"
        copied = vm.ssh("sh", "-c", f"cat > {path}", stdin=out.read_bytes())
        assert copied.returncode == 0, copied.stderr
        inside.append(path)
    return inside


def _login(vm: BootedVM, key: Path) -> subprocess.CompletedProcess[str]:
    return vm.ssh("id", "-un", user=EMERGENCY_USER, key=key, timeout=120)


def _denied(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode != 0 and "Permission denied" in proc.stderr


def test_quorum_opens_login_expiry_closes_it_and_a_reboot_comes_back_dormant(
    vm_build: VmBuild, vm: BootedVM, tmp_path: Path
) -> None:
    key = tmp_path / "id_emergency"
    # window 1: request inside, two approvals outside, unseal inside
    rid, request = _request(vm, tmp_path, "90s")
    approvals = _approve(vm, request, vm_build.keys, ("alice", "bob"))
    opened = _host(vm, "unseal", rid, *approvals)
    assert opened["state"] == "ACTIVE" and opened["approvals"] == ["alice", "bob"]
    key.write_text(_root(vm, "cat", KEY_IN_VM))
    key.chmod(0o600)
    login = _login(vm, key)
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == EMERGENCY_USER
    # a recorded session: one command, and one through sudo that only the scope's rule allows
    worked = vm.ssh("sh", "-c", f"echo hello && {SUDO_CMD}", user=EMERGENCY_USER, key=key)
    assert worked.returncode == 0, worked.stderr
    said = [line.strip() for line in worked.stdout.splitlines()]  # hello, the journal's last line
    assert said[0] == "hello" and len(said) == 2 and said[1], worked.stdout
    refused_sudo = vm.ssh("sudo", "-n", "journalctl", "-n", "1", user=EMERGENCY_USER, key=key)
    assert refused_sudo.returncode != 0 and "password is required" in refused_sudo.stdout

    # nothing is run by hand from here: sshd's AuthorizedKeysCommand and the timer close it
    expires = dt.datetime.strptime(opened["expires_at"], "%Y-%m-%dT%H:%M:%SZ")
    expires_host = expires.replace(tzinfo=dt.UTC).timestamp() - _guest_offset(vm)
    time.sleep(max(0.0, expires_host + 1.0 - time.time()))
    attempt_at = time.time()
    refused = _login(vm, key)
    assert _denied(refused), refused.stderr
    assert attempt_at - expires_host < 2.0 + 0.5  # attempted 1 s after expires_at
    # sshd's AuthorizedKeysCommand or the timer reseals, with no command from us: plaintext goes
    deadline = time.monotonic() + 60
    while _root(vm, "find", "/run/breakglass", "-type", "f").strip():
        assert time.monotonic() < deadline, "the expiry timer did not reseal within 60 s"
        time.sleep(2)
    kinds = [e["event"] for e in json.loads(_root(vm, BG, "host", "audit", "show", "--json"))]
    assert kinds[kinds.index("activated") :].count("expired") == 1, kinds
    _review_the_recorded_session(vm, rid, said[1])

    # window 2, left open across a reboot: /run is emptied, the host comes back DORMANT
    rid, request = _request(vm, tmp_path, "10m")
    approvals = _approve(vm, request, vm_build.keys, ("bob", "carol"))
    assert _host(vm, "unseal", rid, *approvals)["state"] == "ACTIVE"
    head_before = _host(vm, "audit", "verify")["head"]
    vm.ssh("systemctl", "reboot", timeout=60)
    vm.wait_for_shutdown()
    vm.wait_for_sshd()
    status = _host(vm, "status")
    assert status["state"] == "DORMANT" and "ssh-emergency" in status["burned"]
    assert _root(vm, "find", "/run/breakglass", "-type", "f").strip() == ""
    assert _denied(_login(vm, key))
    verified = _host(vm, "audit", "verify", "--expect-head", head_before)
    assert verified["ok"] is True
    kinds = [e["event"] for e in json.loads(_root(vm, BG, "host", "audit", "show", "--json"))]
    last_activated = len(kinds) - 1 - kinds[::-1].index("activated")
    # the first command after the reboot found ACTIVE without its plaintext and resealed
    assert "recovered" in kinds[last_activated + 1 :], kinds


def _review_the_recorded_session(vm: BootedVM, rid: str, journal_line: str) -> None:
    """``host report`` shows the session's recording with the digest the audit chain holds (the
    file's own sha256; what the session printed in it) and the command run through sudo;
    ``audit verify`` passes, and fails naming the recording once a byte of it changes."""
    doc = _host(vm, "report", rid)
    logins = [t["details"] for t in doc["timeline"] if t["what"] == "login"]
    assert [d["user"] for d in logins] == [EMERGENCY_USER] * 3, logins
    io_name = logins[1]["recording"][0]  # the second login ran `echo hello` and sudo
    [entry] = [r for r in doc["recordings"] if r["name"] == io_name]
    path = f"{RECORDINGS}/{io_name}"
    data = base64.b64decode(_root(vm, "base64", "-w0", path))
    assert b"hello\r\n" in data and journal_line.encode() in data, data
    assert entry["sha256"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert entry["size"] == len(data)
    assert entry["replay"].startswith("scriptreplay --log-timing ")
    chained = [
        f
        for e in json.loads(_root(vm, BG, "host", "audit", "show", "--json"))
        if e["event"] == "session-recorded"
        for f in e["details"]["files"]
    ]
    assert [f["sha256"] for f in chained if f["name"] == io_name] == [entry["sha256"]]
    # sudo's own I/O log of that command, hashed at the reseal
    commands = [(c["command"], c["user"], c["runas"]) for c in doc["sudo"]]
    assert commands == [(SUDO_CMD.removeprefix("sudo "), EMERGENCY_USER, "root")], doc["sudo"]
    assert any(r["name"].startswith("sudo/") for r in doc["recordings"]), doc["recordings"]
    text = _root(vm, BG, "host", "report", rid)
    assert entry["sha256"] in text and SUDO_CMD.removeprefix("sudo ") in text, text
    assert _host(vm, "audit", "verify")["ok"] is True

    # one byte of the recording changed: verify names it; put back, it passes again
    flip = "b = bytearray(open(p, 'rb').read()); b[0] ^= 0xFF; open(p, 'wb').write(b)"
    _root(vm, "python3", "-c", f"import sys; p = sys.argv[1]; {flip}", path)
    bad = vm.ssh(BG, "host", "audit", "verify")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"recording {io_name} (audit log line" in bad.stderr and "edited" in bad.stderr
    restored = vm.ssh("sh", "-c", f"base64 -d > {path}", stdin=base64.b64encode(data))
    assert restored.returncode == 0, restored.stderr
    assert _host(vm, "audit", "verify")["ok"] is True


def test_exact_expiry_without_the_tick_refuses_and_closes_an_open_session(
    vm_build: VmBuild, vm: BootedVM, tmp_path: Path
) -> None:
    """The transient timer armed at activation reseals at expires_at: with the periodic tick
    stopped, a login 1 s after expires_at is refused and a session left open is closed."""
    _root(vm, "systemctl", "stop", "breakglass-expire.timer")
    session: subprocess.Popen[bytes] | None = None
    try:
        rid, request = _request(vm, tmp_path, "75s")
        approvals = _approve(vm, request, vm_build.keys, ("alice", "carol"))
        opened = _host(vm, "unseal", rid, *approvals)
        assert opened["state"] == "ACTIVE"
        events = json.loads(_root(vm, BG, "host", "audit", "show", "--json"))
        scheduled = [e for e in events if e["event"] == "expiry-scheduled"][-1]
        assert scheduled["request_id"] == rid and "timer" in scheduled["details"], scheduled
        assert scheduled["details"]["ends_sessions_of"] == EMERGENCY_USER
        key = tmp_path / "id_emergency"
        key.write_text(_root(vm, "cat", KEY_IN_VM))
        key.chmod(0o600)
        session = subprocess.Popen(
            ["ssh", *SSH_OPTS, "-i", str(key), "-p", str(vm.port),
             f"{EMERGENCY_USER}@127.0.0.1", "sleep 600"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while vm.ssh("pgrep", "-u", EMERGENCY_USER, "-x", "sleep").returncode != 0:
            assert session.poll() is None and time.monotonic() < deadline, "no session opened"
            time.sleep(1)
        expires = dt.datetime.strptime(opened["expires_at"], "%Y-%m-%dT%H:%M:%SZ")
        expires_host = expires.replace(tzinfo=dt.UTC).timestamp() - _guest_offset(vm)
        assert time.time() < expires_host, "the window closed before the session was up"
        session.wait(timeout=max(0.0, expires_host - time.time()) + 60)
        closed_after = time.time() - expires_host
        refused = _login(vm, key)
        assert _denied(refused), refused.stderr
        print(f"open session closed {closed_after:.2f} s after expires_at")
        assert closed_after < 2.0, f"session closed {closed_after:.2f} s after expires_at"
        events = json.loads(_root(vm, BG, "host", "audit", "show", "--json"))
        ended = [e for e in events if e["event"] == "sessions-ended"][-1]
        assert ended["request_id"] == rid and ended["details"]["user"] == EMERGENCY_USER
        assert "expired" in [e["event"] for e in events if e["request_id"] == rid]
    finally:
        if session is not None and session.poll() is None:
            session.kill()
        vm.ssh("systemctl", "start", "breakglass-expire.timer")
