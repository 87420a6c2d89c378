"""``breakglass build --backend packer`` end to end: Debian's packer 1.6.6, offline, with the
``null`` builder and the pyinfra deploy provisioning a copy of the Debian base (``@chroot``).

The build installs the payload with the owners and modes the signed manifest lists, creates
the locked emergency account, and a second provisioning run changes nothing; ``verify``
checks the signature and Packer's artifact ids. A missing ``packer``, an invalid builder
block and a failed provisioning step each end in one error line, a non-zero exit and no
``dist/NAME/VERSION``.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from builder.core.canonical import digest
from builder.core.payload import MANIFEST_PATH, RUNTIME_DIR, STATE_DIR
from tests.conftest import require_root, require_tool, run_cli
from tests.deploy_fixtures import passwd_entry
from tests.e2e_helpers import (
    EMERGENCY_USER,
    copy_example,
    error_lines,
    in_image,
)

pytestmark = pytest.mark.e2e

OFFLINE = {"CHECKPOINT_DISABLE": "1"}
OUTPUTS = [
    "breakglass-manifest.json",
    "breakglass-manifest.json.sig",
    "packer-manifest.json",
    "packer-template.json",
]


def _packer_section(target: str, **builder: object) -> str:
    block = {"type": "null", "communicator": "none", **builder}
    section = {"builders": [block], "provision_target": target}
    return f"packer: {json.dumps(section)}\n"  # JSON is YAML: no quoting surprises with "null"


def _build(spec: Path, out: Path, keys: Path, env: dict[str, str] | None = None) -> Any:
    return run_cli(
        "build", spec, "--backend", "packer", "--out", out, "--sign-key", keys / "release",
        "--json", env={**OFFLINE, **(env or {})},
    )  # fmt: skip


def _assert_no_output(out: Path) -> None:
    assert not (out / "example" / "1.0.0").exists()
    # nothing half-written beside it either (a staging directory, a manifest)
    leftovers = list((out / "example").iterdir()) if (out / "example").exists() else []
    assert leftovers == []


def _assert_one_error(proc: Any, exit_code: int, *needles: str) -> str:
    assert proc.returncode == exit_code, proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _mode_owner(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_packer_build_provisions_a_debian_chroot_and_verifies(
    rootfs: Path, demo_keys: Path, tmp_path: Path
) -> None:
    require_root("the deploy chroots into the rootfs and sets owners")
    require_tool("packer")
    require_tool("bwrap")
    spec = copy_example(tmp_path / "project", _packer_section(f"@chroot/{rootfs}"))
    out = tmp_path / "dist"
    proc = _build(spec, out, demo_keys)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    image_dir = out / "example" / "1.0.0"
    assert result["image_dir"] == str(image_dir) and result["signed"] is True
    assert sorted(p.name for p in image_dir.iterdir()) == OUTPUTS
    # progress comes from Packer's machine-readable stream, on stderr
    assert "packer: " in proc.stderr and f"breakglass: provisioned @chroot/{rootfs}" in proc.stderr
    template = json.loads((image_dir / "packer-template.json").read_bytes())
    assert template["builders"] == [{"type": "null", "communicator": "none"}]
    assert [p["type"] for p in template["provisioners"]] == ["shell-local"]

    signed = json.loads((image_dir / "breakglass-manifest.json").read_bytes())
    assert signed["provenance"]["backend"] == "packer"
    assert signed["provenance"]["artifacts"] == ["Null"]
    # the image carries the manifest as planned; the signed copy adds Packer's artifact ids
    inside = json.loads((rootfs / MANIFEST_PATH).read_bytes())
    assert inside == {**signed, "provenance": {**signed["provenance"], "artifacts": []}}
    assert _mode_owner(rootfs / MANIFEST_PATH) == (0o644, 0, 0)

    files = signed["files"]
    assert "usr/local/bin/breakglass" in files and "etc/sudoers.d/breakglass" in files
    for path, want in sorted(files.items()):
        target = rootfs / path
        assert digest(target.read_bytes()) == want["digest"], path
        assert _mode_owner(target) == (want["mode"], want["uid"], want["gid"]), path
    for d in (RUNTIME_DIR, STATE_DIR):
        assert _mode_owner(rootfs / d) == (0o700, 0, 0), d
    timer = rootfs / "etc/systemd/system/timers.target.wants/breakglass-expire.timer"
    assert timer.is_symlink()

    pw = passwd_entry(rootfs, EMERGENCY_USER)
    shadow = passwd_entry(rootfs, EMERGENCY_USER, "shadow")
    assert pw is not None and shadow is not None
    assert shadow[1].startswith("!")
    # the same kind of account the OCI path writes: a system uid, not the first person's
    assert int(pw[2]) < 1000 and pw[4] == "breakglass emergency account"
    home = rootfs / pw[5].lstrip("/")
    assert _mode_owner(home) == (0o700, int(pw[2]), int(pw[3]))
    assert not (home / ".ssh/authorized_keys").exists()
    locked = in_image(rootfs, "passwd", "-S", EMERGENCY_USER)
    assert locked.stdout.split()[:2] == [EMERGENCY_USER, "L"], locked.stderr
    # sshd's AuthorizedKeysCommandUser, as the OCI path writes it: locked, no login shell
    akc = passwd_entry(rootfs, "breakglass-akc")
    assert akc is not None and akc[6] == "/usr/sbin/nologin" and int(akc[2]) < 1000
    assert passwd_entry(rootfs, "breakglass-akc", "group") is not None
    akc_locked = in_image(rootfs, "passwd", "-S", "breakglass-akc").stdout.split()[:2]
    assert akc_locked == ["breakglass-akc", "L"]
    # the provisioned rootfs runs its own host runtime
    status = in_image(rootfs, "/usr/local/bin/breakglass", "host", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "DORMANT"

    # a second provisioning run with the same plan finds nothing to change
    from builder.release.build import plan
    from builder.release.spec import load_spec
    from builder.vm.deploy import provision, stage_payload

    again = plan(load_spec(spec), backend="packer")
    staged = stage_payload(again.files, again.dirs, tmp_path / "staged")
    second = provision(f"@chroot/{rootfs}", staged)
    assert second.changed == 0 and second.unchanged > 0

    allowed = demo_keys / "allowed_signers"
    ok = run_cli("verify", image_dir, "--allowed-signers", allowed, "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["signer"] == "release"
    inspected = run_cli("inspect", image_dir, "--json")
    assert inspected.returncode == 0, inspected.stderr

    packer_manifest = image_dir / "packer-manifest.json"
    doc = json.loads(packer_manifest.read_bytes())
    doc["builds"][0]["artifact_id"] = "ami-0123456789abcdef0"
    packer_manifest.write_text(json.dumps(doc))
    bad = run_cli("verify", image_dir, "--allowed-signers", allowed)
    _assert_one_error(bad, 1, "packer-manifest.json", "artifact ids differ")


def test_missing_packer_binary_is_one_error_and_builds_nothing(
    demo_keys: Path, tmp_path: Path
) -> None:
    spec = copy_example(tmp_path / "project", _packer_section("@chroot//nonexistent"))
    out = tmp_path / "dist"
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = _build(spec, out, demo_keys, env={"PATH": str(empty)})
    _assert_one_error(proc, 2, "packer is not installed")
    _assert_no_output(out)


def test_invalid_builder_block_is_one_error_and_builds_nothing(
    demo_keys: Path, tmp_path: Path
) -> None:
    require_tool("packer")
    section = _packer_section(f"@chroot/{tmp_path / 'rootfs'}", bogus_key=1)
    spec = copy_example(tmp_path / "project", section)
    out = tmp_path / "dist"
    proc = _build(spec, out, demo_keys)
    _assert_one_error(proc, 2, "packer rejected the template", "bogus_key")
    _assert_no_output(out)


def test_failed_provisioning_is_one_error_and_builds_nothing(
    demo_keys: Path, tmp_path: Path
) -> None:
    require_tool("packer")
    missing = tmp_path / "no-such-rootfs"
    spec = copy_example(tmp_path / "project", _packer_section(f"@chroot/{missing}"))
    out = tmp_path / "dist"
    proc = _build(spec, out, demo_keys)
    _assert_one_error(proc, 1, "packer build failed", f"provisioning @chroot/{missing} failed")
    _assert_no_output(out)
    assert not missing.exists()
