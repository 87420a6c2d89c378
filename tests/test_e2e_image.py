"""An image built on the Debian base runs its own break-glass host: built and verified through
the CLI, unpacked with umoci, entered with bwrap.

Inside the rootfs the image's own python3 runs ``breakglass host``; its own sshd accepts the
rendered drop-in; the emergency account is locked. The whole flow runs there: request inside,
two approvals made outside with the demo approvers' keys, unseal inside, and the image's sshd
on a loopback port admits the emergency key only while the window is open (not before, not
after ``reseal``, not after expiry).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from builder.release.runtime_payload import LAUNCHER_PATH, LIB_DIR
from builder.vm.base import BaseImage
from tests.conftest import require_root, require_tool, run_cli
from tests.deploy_fixtures import passwd_entry
from tests.e2e_helpers import (
    EMERGENCY_USER,
    copy_demo_keys,
    copy_example,
    image_sshd,
    in_image,
    ssh_login,
)

pytestmark = pytest.mark.e2e

BREAKGLASS = "/usr/local/bin/breakglass"
KEY_IN_IMAGE = "run/breakglass/ssh-emergency/emergency-ssh-key"


@dataclass(frozen=True)
class Built:
    spec: Path
    image_dir: Path
    rootfs: Path  # pristine: tests change copies of it
    keys: Path
    build: dict[str, Any]
    verify: dict[str, Any]


@pytest.fixture(scope="module")
def built(debian_base_image: BaseImage, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The example spec on the Debian base: ``breakglass build``, ``verify``, ``umoci unpack``."""
    require_root("umoci keeps owners, sshd and bwrap run as root")
    for tool in ("umoci", "bwrap", "ssh-keygen"):
        require_tool(tool)
    work = tmp_path_factory.mktemp("e2e-image")
    keys = copy_demo_keys(work / "keys")
    spec = copy_example(work / "project", f"base: {debian_base_image.reference}\n")
    dist = work / "dist"
    proc = run_cli("build", spec, "--out", dist, "--sign-key", keys / "release", "--json")
    assert proc.returncode == 0, proc.stderr
    build = json.loads(proc.stdout)
    image_dir = dist / "example" / "1.0.0"
    assert build["image_dir"] == str(image_dir) and build["signed"] is True
    proc = run_cli("verify", image_dir, "--allowed-signers", keys / "allowed_signers", "--json")
    assert proc.returncode == 0, proc.stderr
    verify = json.loads(proc.stdout)
    bundle = work / "bundle"
    unpacked = subprocess.run(
        ["umoci", "unpack", "--image", f"{image_dir / 'oci'}:1.0.0", str(bundle)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert unpacked.returncode == 0, unpacked.stderr
    return Built(spec, image_dir, bundle / "rootfs", keys, build, verify)


@pytest.fixture
def root(built: Built, tmp_path: Path) -> Iterator[Path]:
    """A fresh copy of the unpacked rootfs: each test starts DORMANT with no state."""
    dest = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", str(built.rootfs), str(dest)], check=True)
    yield dest
    # ~200 MB a copy; nothing is mounted in it (bwrap mounts only inside its own namespace)
    shutil.rmtree(dest, ignore_errors=True)


def _host(root: Path, *args: str) -> dict[str, Any]:
    """``breakglass host ARGS --json`` inside the image, with the image's python3."""
    proc = in_image(root, BREAKGLASS, "host", *args, "--json")
    assert proc.returncode == 0, f"host {args[0]}: {proc.stderr}"
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_build_on_the_base_verifies_and_names_its_base(built: Built) -> None:
    assert built.verify["ok"] is True and built.verify["signer"] == "release"
    assert built.verify["image_digest"] == built.build["image_digest"]
    manifest = json.loads((built.image_dir / "breakglass-manifest.json").read_bytes())
    assert manifest["provenance"]["backend"] == "oci"
    assert manifest["provenance"]["base"]["tag"] == "bookworm"
    # the runtime and the account files are payload, listed and signed like any other file
    for path in (LAUNCHER_PATH, f"{LIB_DIR}/builder/host/unseal.py", "etc/shadow"):
        assert path in manifest["files"], path
    assert manifest["files"]["etc/shadow"]["mode"] == 0o640
    inside = built.rootfs / "etc/breakglass/manifest.json"
    assert inside.read_bytes() == (built.image_dir / "breakglass-manifest.json").read_bytes()


def test_image_runs_breakglass_with_its_own_python_and_is_dormant(root: Path) -> None:
    launcher = (root / LAUNCHER_PATH).read_text()
    assert launcher.startswith("#!/usr/bin/python3 -IS\n")
    assert (root / "usr/bin/python3").exists()
    # bwrap shows the rootfs alone: whatever runs comes from the image, never from this machine
    probe = in_image(
        root, "/usr/bin/python3", "-I", "-c",
        f"import sys; sys.path.insert(0, '/{LIB_DIR}'); import builder, click, pyrage; "
        "print(sys.executable, builder.__file__, pyrage.__file__)",
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    python, builder_file, pyrage_file = probe.stdout.split()
    assert python == "/usr/bin/python3"
    assert builder_file.startswith(f"/{LIB_DIR}/") and pyrage_file.startswith(f"/{LIB_DIR}/")
    status = _host(root, "status")
    assert status["state"] == "DORMANT"
    assert status["image"]["name"] == "example" and status["image"]["version"] == "1.0.0"
    assert status["burned"] == {}
    # DORMANT: sshd's AuthorizedKeysCommand gets no key for the emergency account
    keys = in_image(root, BREAKGLASS, "host", "authorized-keys", EMERGENCY_USER)
    assert keys.returncode == 0 and keys.stdout == ""


def test_image_sshd_accepts_the_rendered_dropin(root: Path) -> None:
    dropin = root / "etc/ssh/sshd_config.d/50-breakglass.conf"
    assert stat.S_IMODE(dropin.stat().st_mode) == 0o644
    (root / "run/sshd").mkdir(mode=0o755, exist_ok=True)
    # the base ships no host keys (each host makes its own at first boot, as its ssh unit does)
    assert not list((root / "etc/ssh").glob("ssh_host_*"))
    assert (
        "ssh-keygen -A"
        in (root / "etc/systemd/system/ssh.service.d/breakglass-host-keys.conf").read_text()
    )
    assert in_image(root, "/usr/bin/ssh-keygen", "-A").returncode == 0
    checked = in_image(root, "/usr/sbin/sshd", "-t")
    assert checked.returncode == 0, checked.stderr
    # the Match block applies to the emergency account and to nobody else
    conn = "host=localhost,addr=127.0.0.1"
    emergency = in_image(root, "/usr/sbin/sshd", "-T", "-C", f"user={EMERGENCY_USER},{conn}")
    assert emergency.returncode == 0, emergency.stderr
    settings = emergency.stdout.splitlines()
    assert f"authorizedkeyscommand {BREAKGLASS} host authorized-keys %u" in settings
    assert "authorizedkeyscommanduser breakglass-akc" in settings
    assert "authorizedkeysfile none" in settings and "passwordauthentication no" in settings
    other = in_image(root, "/usr/sbin/sshd", "-T", "-C", f"user=root,{conn}")
    assert "authorizedkeyscommand none" in other.stdout.splitlines()
    # a broken drop-in is caught by the same check
    dropin.write_text(dropin.read_text() + "NoSuchDirective yes\n")
    assert in_image(root, "/usr/sbin/sshd", "-t").returncode != 0


def test_emergency_account_exists_and_is_locked(root: Path) -> None:
    pw = passwd_entry(root, EMERGENCY_USER)
    shadow = passwd_entry(root, EMERGENCY_USER, "shadow")
    group = passwd_entry(root, EMERGENCY_USER, "group")
    assert pw is not None and shadow is not None and group is not None
    assert pw[5] == f"/home/{EMERGENCY_USER}" and pw[3] == group[2]
    assert shadow[1].startswith("!")
    home = (root / pw[5].lstrip("/")).stat()
    assert (stat.S_IMODE(home.st_mode), home.st_uid, home.st_gid) == (0o700, int(pw[2]), int(pw[3]))
    assert not (root / pw[5].lstrip("/") / ".ssh").exists()
    shadow_file = (root / "etc/shadow").stat()
    assert stat.S_IMODE(shadow_file.st_mode) == 0o640 and shadow_file.st_uid == 0
    # the image's own tools agree: the account resolves and its password is locked
    assert in_image(root, "getent", "passwd", EMERGENCY_USER).stdout.startswith(EMERGENCY_USER)
    locked = in_image(root, "passwd", "-S", EMERGENCY_USER)
    assert locked.returncode == 0, locked.stderr
    assert locked.stdout.split()[:2] == [EMERGENCY_USER, "L"]
    # sshd's AuthorizedKeysCommandUser: its own group, locked, no login shell, no home
    akc = passwd_entry(root, "breakglass-akc")
    assert akc is not None and akc[6] == "/usr/sbin/nologin" and akc[5] == "/nonexistent"
    assert passwd_entry(root, "breakglass-akc", "group") is not None
    assert in_image(root, "passwd", "-S", "breakglass-akc").stdout.split()[:2] == [
        "breakglass-akc",
        "L",
    ]


def _request(root: Path, work: Path, ttl: str) -> tuple[str, Path]:
    """``host request`` inside the image; return its id and a copy of it outside the image."""
    doc = _host(
        root, "request", "--scope", "ssh-emergency", "--ttl", ttl, "--reason", "e2e drill",
        "--requester", "dave", "--out", "/tmp/request.json",
    )  # fmt: skip
    outside = work / f"request-{doc['request_id']}.json"
    shutil.copy(root / "tmp/request.json", outside)
    return str(doc["request_id"]), outside


def _approve_outside(request: Path, keys: Path, names: tuple[str, ...], root: Path) -> list[str]:
    """Each approver runs the project's ``breakglass approve`` on their own machine (here: outside
    the image); the approvals are handed to the host as files. Returns their paths in the image."""
    inside = []
    for name in names:
        out = request.with_name(f"{request.stem}.{name}.approval")
        proc = run_cli(
            "approve", request, "--identity", keys / f"{name}.age", "--signing-key", keys / name,
            "--approver", name, "--yes", "--out", out,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        shutil.copy(out, root / "tmp" / out.name)
        inside.append(f"/tmp/{out.name}")
    return inside


def _plaintext(root: Path) -> list[str]:
    runtime = root / "run/breakglass"
    return sorted(
        str(p.relative_to(root))
        for p in runtime.rglob("*")
        if p.is_file() and not p.name.startswith(".request-") and p.name != ".grant.json"
    )


def _denied(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode != 0 and "Permission denied" in proc.stderr


def test_request_approve_unseal_reseal_expire_with_the_image_sshd(
    root: Path, built: Built, tmp_path: Path
) -> None:
    require_tool("ssh")
    keys = built.keys
    work = tmp_path / "outside"
    work.mkdir()
    log = tmp_path / "sshd.log"
    with image_sshd(root, log) as port:
        # window 1: request inside, approve outside, unseal inside
        rid, request = _request(root, work, "10m")
        assert _host(root, "status")["state"] == "PENDING"
        approvals = _approve_outside(request, keys, ("alice", "bob"), root)
        opened = _host(root, "unseal", rid, *approvals)
        assert opened["state"] == "ACTIVE" and opened["scope"] == "ssh-emergency"
        assert opened["approvals"] == ["alice", "bob"] and opened["refused"] == []
        assert _host(root, "status")["state"] == "ACTIVE"
        in_root = root / KEY_IN_IMAGE
        assert stat.S_IMODE(in_root.stat().st_mode) == 0o600 and in_root.stat().st_uid == 0
        # sshd's breakglass-akc may open the grant by name, nothing else under run/breakglass
        akc_group = passwd_entry(root, "breakglass-akc", "group")
        assert akc_group is not None
        runtime = (root / "run/breakglass").stat()
        assert (stat.S_IMODE(runtime.st_mode), runtime.st_gid) == (0o710, int(akc_group[2]))
        grant = (root / "run/breakglass/.grant.json").stat()
        assert (stat.S_IMODE(grant.st_mode), grant.st_gid) == (0o640, int(akc_group[2]))
        key = tmp_path / "id_emergency"
        shutil.copy(in_root, key)
        key.chmod(0o600)

        login = ssh_login(port, key)
        assert login.returncode == 0, f"{login.stderr}\n{log.read_text()}"
        assert login.stdout.strip() == EMERGENCY_USER

        resealed = _host(root, "reseal")
        assert resealed == {"state": "DORMANT", "was": "ACTIVE"}
        assert _plaintext(root) == []
        assert _denied(ssh_login(port, key))  # DORMANT after reseal

        # window 2: the responder still holds the key; it is useless until a new quorum
        rid, request = _request(root, work, "8s")
        assert _denied(ssh_login(port, key))  # PENDING, before unseal
        approvals = _approve_outside(request, keys, ("bob", "carol"), root)
        opened = _host(root, "unseal", rid, *approvals)
        assert opened["state"] == "ACTIVE"
        login = ssh_login(port, key)
        assert login.returncode == 0, f"{login.stderr}\n{log.read_text()}"

        # no timer runs here: sshd's own AuthorizedKeysCommand enforces the expiry
        expires = dt.datetime.strptime(opened["expires_at"], "%Y-%m-%dT%H:%M:%SZ")
        left = (expires.replace(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC)).total_seconds()
        time.sleep(max(0.0, left) + 1.5)
        assert _denied(ssh_login(port, key))  # expired

    # sshd's command runs as the unprivileged breakglass-akc and only refuses; wiping is the
    # timer's job (and any host command's)
    assert _host(root, "tick")["state"] == "DORMANT"
    assert _plaintext(root) == []
    status = _host(root, "status")
    assert status["state"] == "DORMANT" and "ssh-emergency" in status["burned"]
    audit = _host(root, "audit", "verify")
    assert audit["ok"] is True
    shown = in_image(root, BREAKGLASS, "host", "audit", "show", "--json")
    events = [e["event"] for e in json.loads(shown.stdout)]
    assert "resealed" in events and "expired" in events
    assert events.count("activated") == 2
