"""The Packer wrapper and backend: templates Packer accepts, offline builds, one-line failures."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from builder.core.errors import CheckFailed, InputError, ToolMissing
from builder.vm import packer
from builder.vm.deploy.stage import stage_payload
from builder.vm.packer_build import (
    MANIFEST_NAME,
    TEMPLATE_NAME,
    build_with_packer,
    check_section,
    render_template,
)
from tests.conftest import require_tool
from tests.deploy_fixtures import DIRS, passwd_entry, synthetic_payload

QEMU = {
    "type": "qemu",
    "name": "vm",
    "iso_url": "https://cdimage.example/debian-12.iso",
    "iso_checksum": "none",
    "ssh_username": "debian",
    "ssh_password": "{{user `ssh_password`}}",
    "shutdown_command": "sudo poweroff",
}


def _null(target: str) -> dict[str, object]:
    return {"builders": [{"type": "null", "communicator": "none"}], "provision_target": target}


def test_event_parse_unescapes_packer_data() -> None:
    e = packer.PackerEvent.parse("1795980822,,ui,message,    null: hi%!(PACKER_COMMA) there\\nnext")
    assert e is not None and e.type == "ui" and e.text == "    null: hi, there\nnext"
    assert packer.PackerEvent.parse("not machine readable") is None


def test_first_error_prefers_deploy_cause_over_packer_summary() -> None:
    lines = [
        "1,,ui,message,    null: breakglass: error: provisioning @local failed: operation 'x': boom",
        "2,,ui,error,Build 'null' errored: Script exited with non-zero exit status: 1",
    ]
    assert packer.first_error(lines) == "provisioning @local failed: operation 'x': boom"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"builder": []}, r"unknown key 'builder' \(did you mean 'builders'\?\)"),
        ({"builders": []}, "packer.builders must be a non-empty list"),
        ({"builders": [{"name": "x"}]}, r"packer.builders\[0\] must be a mapping with a 'type'"),
        ({"builders": [{"type": "null", "communicator": "none"}]}, "provision_target is required"),
        ({"builders": [{"type": "qemu"}, {"type": "qemu"}]}, "unique 'name'"),
    ],
)
def test_section_errors_are_one_line(section: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        check_section(section)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "section",
    [
        _null("@chroot//tmp/rootfs"),
        {"builders": [QEMU], "variables": {"ssh_password": "changeme"}},
        {
            "builders": [QEMU, {"type": "null", "communicator": "none"}],
            "provision_target": "@local",
        },
    ],
)
def test_generated_template_passes_packer_validate(
    section: dict[str, object], tmp_path: Path
) -> None:
    require_tool("packer")
    check_section(section)
    staged = stage_payload(synthetic_payload(), DIRS, tmp_path / "staged")
    template = render_template(section, staged, tmp_path / MANIFEST_NAME)
    path = tmp_path / TEMPLATE_NAME
    path.write_text(json.dumps(template))
    packer.validate(path)
    assert template["post-processors"] == [
        {"type": "manifest", "output": str(tmp_path / MANIFEST_NAME), "strip_path": True}
    ]


def test_ssh_builder_is_provisioned_over_ssh_with_build_data(tmp_path: Path) -> None:
    template = render_template({"builders": [QEMU]}, tmp_path, tmp_path / MANIFEST_NAME)
    prov, cleanup = template["provisioners"]
    assert prov["type"] == "shell-local" and prov["only"] == ["vm"]
    script = "\n".join(prov["inline"])
    assert "'@ssh/{{build `Host`}}'" in script and "--sudo" in script
    assert "--port '{{build `Port`}}'" in script and "--user '{{build `User`}}'" in script
    assert any("{{build `SSHPrivateKey`}}" in v for v in prov["environment_vars"])
    # then, inside the VM: the build's login key, host keys and machine id go
    assert cleanup["type"] == "shell" and cleanup["only"] == ["vm"]
    steps = "\n".join(cleanup["inline"])
    assert "rm -f /etc/ssh/ssh_host_*" in steps and ": > /etc/machine-id" in steps
    assert '.ssh/authorized_keys"' in steps


def test_builders_on_a_base_disk_are_provisioned_with_the_build_key_file(tmp_path: Path) -> None:
    key = tmp_path / "build-key"
    cloud = {**QEMU, "name": "other"}
    section = {"builders": [{"type": "qemu", "name": "vm"}, cloud]}
    template = render_template(section, tmp_path, tmp_path / MANIFEST_NAME, key, ("vm",))
    own, packer_key, cleanup = template["provisioners"]
    assert own["only"] == ["vm"] and own["inline"][0].endswith(f"--key {key}")
    assert "--sudo" not in own["inline"][0]  # breakglass's own builds log in as root
    assert packer_key["only"] == ["other"] and "--sudo" in "\n".join(packer_key["inline"])
    assert cleanup["only"] == ["vm", "other"]


def test_base_disk_must_be_the_path_of_a_disk(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"packer\.base_disk must be the path"):
        check_section({"builders": [QEMU], "base_disk": 3})
    section = {"builders": [{"type": "null", "communicator": "none"}], "base_disk": "d"}
    section["provision_target"] = "@local"
    with pytest.raises(InputError, match="not a breakglass disk"):
        build_with_packer(section, synthetic_payload(), DIRS, tmp_path / "work", spec_dir=tmp_path)
    assert list((tmp_path / "work").iterdir()) == []


CLOUD = [
    {
        "type": "amazon-ebs", "name": "aws", "region": "eu-west-1",
        "source_ami": "ami-0123456789abcdef0", "instance_type": "t3.micro",
        "ssh_username": "admin", "ami_name": "example-{{user `version`}}",
        "skip_region_validation": True,
    },
    {
        "type": "googlecompute", "name": "gce", "project_id": "example-project",
        "source_image_family": "debian-12", "zone": "europe-west1-b", "ssh_username": "packer",
        "image_name": "example-{{user `version` | clean_resource_name}}",
    },
]  # fmt: skip


def test_the_same_spec_targets_amazon_ebs_and_googlecompute(tmp_path: Path) -> None:
    """What docs/packer.md shows for the clouds: Packer accepts the template (it cannot be
    built here: no cloud credentials, no network)."""
    require_tool("packer")
    section = {"builders": CLOUD, "variables": {"version": "1.0.0"}}
    check_section(section)
    staged = stage_payload(synthetic_payload(), DIRS, tmp_path / "staged")
    template = render_template(section, staged, tmp_path / MANIFEST_NAME)
    path = tmp_path / TEMPLATE_NAME
    path.write_text(json.dumps(template))
    packer.validate(path)
    deploy, cleanup = template["provisioners"]
    assert deploy["only"] == cleanup["only"] == ["aws", "gce"]


def test_missing_packer_binary_is_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    work = tmp_path / "work"
    with pytest.raises(ToolMissing, match="packer is not installed") as info:
        build_with_packer(_null("@local"), synthetic_payload(), DIRS, work)
    assert "\n" not in str(info.value)
    assert not work.exists()


def test_invalid_builder_block_is_refused_by_packer_and_leaves_nothing(tmp_path: Path) -> None:
    require_tool("packer")
    section = {
        "builders": [{"type": "null", "communicator": "none", "bogus_key": 1}],
        "provision_target": "@local",
    }
    work = tmp_path / "work"
    with pytest.raises(InputError) as info:
        build_with_packer(section, synthetic_payload(), DIRS, work)
    message = str(info.value)
    assert message.startswith("packer rejected the template: ")
    assert "bogus_key" in message and "\n" not in message
    assert list(work.iterdir()) == []


def test_unknown_builder_type_is_refused(tmp_path: Path) -> None:
    require_tool("packer")
    section = {"builders": [{"type": "no-such-builder"}]}
    with pytest.raises(InputError, match=r"(?i)unknown builder no-such-builder"):
        build_with_packer(section, synthetic_payload(), DIRS, tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.e2e
def test_packer_null_build_provisions_chroot(rootfs: Path, tmp_path: Path) -> None:
    require_tool("packer")
    events: list[packer.PackerEvent] = []
    work = tmp_path / "work"
    result = build_with_packer(
        _null(f"@chroot/{rootfs}"), synthetic_payload(), DIRS, work, on_event=events.append
    )
    assert result.artifact_ids == ["Null"]
    assert sorted(p.name for p in work.iterdir()) == [MANIFEST_NAME, TEMPLATE_NAME]
    # the published template names the deleted scratch directory (and its build key) as <build>
    published = (work / TEMPLATE_NAME).read_text()
    assert "<build>/staged" in published and "/.packer-" not in published
    scratch = re.escape(str(work)) + r"/\.packer-[^/\"]+"
    assert json.loads(published) == json.loads(
        re.sub(scratch, "<build>", json.dumps(result.template))
    )
    assert any("breakglass: provisioned @chroot/" in e.text for e in events)
    for f in synthetic_payload():
        st = (rootfs / f.path).stat()
        assert (rootfs / f.path).read_bytes() == f.data
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (f.mode, 0, 0)
    shadow = passwd_entry(rootfs, "breakglass", "shadow")
    assert shadow is not None and shadow[1] == "!"

    # A second build finds nothing to change.
    events.clear()
    build_with_packer(
        _null(f"@chroot/{rootfs}"), synthetic_payload(), DIRS, work, on_event=events.append
    )
    assert any(", 0 changed" in e.text or ": 0 changed" in e.text for e in events)


@pytest.mark.e2e
def test_failed_provisioning_is_one_line_and_leaves_no_output(rootfs: Path, tmp_path: Path) -> None:
    require_tool("packer")
    work = tmp_path / "work"
    bad = synthetic_payload(b"breakglass ALL=(root NOPASSWD\n")
    with pytest.raises(CheckFailed) as info:
        build_with_packer(_null(f"@chroot/{rootfs}"), bad, DIRS, work)
    message = str(info.value)
    assert message.startswith("packer build failed: provisioning @chroot/")
    assert "validate /etc/sudoers.d/breakglass" in message and "\n" not in message
    assert list(work.iterdir()) == []
    assert not os.path.exists(rootfs / "etc/sudoers.d/breakglass")
