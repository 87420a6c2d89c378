"""The Packer backend: write a template around the user's builders, validate, build, collect ids.

The template is the user's ``packer:`` section (``builders``, ``variables``)
plus what breakglass adds: a ``shell-local`` provisioner that runs the pyinfra
install deploy (``python -m builder.vm.deploy``) against the build target, and
the ``manifest`` post-processor whose artifact ids go into the break-glass
manifest's provenance. Builders without a communicator (``null`` with
``communicator: none``, ``file``) are provisioned at ``packer.provision_target``
(``@chroot/DIR`` or ``@local``); the others over SSH with the connection data
Packer hands to each build (host, port, user, private key), with sudo.

Everything is written under a temporary directory inside ``work_dir`` and only
``packer-template.json`` and ``packer-manifest.json`` are put in place once
the build succeeded, so a failure leaves no output behind.
"""

from __future__ import annotations

import difflib
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.core.errors import CheckFailed, InputError
from builder.core.fsio import write_atomic
from builder.core.payload import PayloadFile
from builder.vm import packer, packer_qemu
from builder.vm.deploy.stage import stage_payload

TEMPLATE_NAME = "packer-template.json"
MANIFEST_NAME = "packer-manifest.json"
SECTION_KEYS = ("builders", "variables", "provision_target", "base_disk")
# Packer puts the build VM's SSH private key in this variable for the provisioner script.
_KEY_ENV = "BREAKGLASS_SSH_KEY"


@dataclass(frozen=True)
class PackerResult:
    """The artifact ids Packer's manifest post-processor recorded, the template that ran, and
    the disk files (qemu builds on a base disk) put beside them: name, file, format, digest."""

    artifact_ids: list[str]
    template: dict[str, Any]
    disks: list[dict[str, str]] = field(default_factory=list)


def build_with_packer(
    spec_packer: Mapping[str, Any],
    payload_files: tuple[PayloadFile, ...],
    dirs: Mapping[str, int],
    work_dir: Path,
    *,
    on_event: Callable[[packer.PackerEvent], None] | None = None,
    spec_dir: Path | None = None,
) -> PackerResult:
    """Build the user's Packer builders with the payload installed; return the artifact ids.

    With ``base_disk`` (a path relative to ``spec_dir``), every ``qemu`` builder
    boots that disk (see ``builder.vm.packer_qemu``) and its qcow2 is put in
    ``work_dir`` as ``NAME.qcow2``.

    Raises InputError for a bad ``packer:`` section or a template Packer
    rejects, ToolMissing without packer, CheckFailed when the build or its
    provisioning fails. On any error nothing is left in ``work_dir``.
    """
    check_section(spec_packer)
    packer.packer_path()
    work_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=work_dir, prefix=".packer-"))
    try:
        staged = stage_payload(payload_files, dirs, scratch / "staged")
        manifest_path = scratch / MANIFEST_NAME
        section, qemu_builds = _with_base_disk(spec_packer, spec_dir, scratch)
        key = qemu_builds[0].key if qemu_builds else None
        names = tuple(q.name for q in qemu_builds)
        template = render_template(section, staged, manifest_path, key, names)
        template_path = scratch / TEMPLATE_NAME
        template_bytes = json.dumps(template, indent=2, sort_keys=True).encode() + b"\n"
        write_atomic(template_path, template_bytes)
        packer.validate(template_path)
        try:
            packer.build(template_path, on_event)
        except CheckFailed as e:
            said = [f"{q.name} console: {packer_qemu.console_tail(q)}" for q in qemu_builds]
            raise CheckFailed(e.message, hint="; ".join(said)[:400] or None) from None
        artifact_ids = read_artifact_ids(manifest_path)
        disks = [_collect_disk(q, work_dir) for q in qemu_builds]
        manifest_bytes = manifest_path.read_bytes()
        write_atomic(work_dir / TEMPLATE_NAME, _public_template(template_bytes, scratch))
        write_atomic(work_dir / MANIFEST_NAME, manifest_bytes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return PackerResult(artifact_ids=artifact_ids, template=template, disks=disks)


def _with_base_disk(
    section: Mapping[str, Any], spec_dir: Path | None, scratch: Path
) -> tuple[dict[str, Any], list[packer_qemu.QemuBuild]]:
    """The section with each qemu block completed for the base disk, and those builds."""
    out = dict(section)
    out.pop("base_disk", None)
    if section.get("base_disk") is None:
        return out, []
    from builder.vm.disk import load_disk

    disk = load_disk((spec_dir or Path.cwd()) / str(section["base_disk"]))
    builds: list[packer_qemu.QemuBuild] = []
    key: Path | None = None
    blocks = []
    for block in section["builders"]:
        if block["type"] != "qemu":
            blocks.append(dict(block))
            continue
        key = key or packer_qemu.make_build_key(scratch)
        prepared = packer_qemu.prepare(block, builder_name(block), disk, scratch, key)
        builds.append(prepared)
        blocks.append(prepared.block)
    if not builds:
        raise InputError("packer.base_disk is set but no builder has type 'qemu'")
    out["builders"] = blocks
    return out, builds


def _collect_disk(build: packer_qemu.QemuBuild, work_dir: Path) -> dict[str, str]:
    """Move the qcow2 Packer made into ``work_dir``; return its name, file, format and digest."""
    from builder.vm.disk import digest_file

    if not build.output.is_file():
        raise CheckFailed(f"packer finished but left no disk for builder {build.name!r}")
    dest = work_dir / build.output.name
    os.replace(build.output, dest)
    os.chmod(dest, 0o644)
    return {
        "builder": build.name,
        "file": dest.name,
        "format": "qcow2",
        "digest": digest_file(dest),
    }


def _public_template(template_bytes: bytes, scratch: Path) -> bytes:
    """The template as published: scratch paths (the deleted build key among them) made relative."""
    return template_bytes.replace(str(scratch).encode(), b"<build>")


def check_section(section: Mapping[str, Any]) -> None:
    """Return if the ``packer:`` section has the shape the template needs; else raise InputError."""
    for key in section:
        if key not in SECTION_KEYS:
            near = difflib.get_close_matches(str(key), SECTION_KEYS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise InputError(f"packer: unknown key {key!r}{hint}")
    builders = section.get("builders")
    if not isinstance(builders, list) or not builders:
        raise InputError("packer.builders must be a non-empty list of builder blocks")
    names = []
    for i, b in enumerate(builders):
        if not isinstance(b, Mapping) or not isinstance(b.get("type"), str) or not b["type"]:
            raise InputError(f"packer.builders[{i}] must be a mapping with a 'type'")
        if b.get("communicator") == "winrm":
            raise InputError(f"packer.builders[{i}]: winrm builders are not supported")
        names.append(builder_name(b))
    if len(set(names)) != len(names):
        raise InputError("packer.builders: give each builder a unique 'name'")
    variables = section.get("variables", {})
    if not isinstance(variables, Mapping) or not all(isinstance(k, str) for k in variables):
        raise InputError("packer.variables must be a mapping of names to values")
    base_disk = section.get("base_disk")
    if base_disk is not None and (not isinstance(base_disk, str) or not base_disk):
        raise InputError("packer.base_disk must be the path of a `base debian --disk` directory")
    target = section.get("provision_target")
    if target is not None and not isinstance(target, str):
        raise InputError("packer.provision_target must be a string such as @chroot/DIR or @local")
    if target is None and any(is_local(b) for b in builders):
        raise InputError(
            "packer.provision_target is required for a builder without a communicator",
            hint="set it to @chroot/DIR (the tree the builder makes) or @local",
        )


def builder_name(block: Mapping[str, Any]) -> str:
    return str(block.get("name") or block["type"])


def is_local(block: Mapping[str, Any]) -> bool:
    """A builder Packer cannot reach over SSH: provisioned through ``provision_target``."""
    return block.get("communicator") == "none" or block["type"] == "file"


def render_template(
    section: Mapping[str, Any],
    staged: Path,
    manifest_path: Path,
    key_file: Path | None = None,
    key_file_builders: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The Packer JSON template: the user's builders and variables, our provisioners and manifest.

    The deploy reaches ``key_file_builders`` with ``key_file`` (breakglass's own build
    key); other SSH builders with the key Packer hands to the build.
    """
    builders = [dict(b) for b in section["builders"]]
    target = section.get("provision_target")
    local = [builder_name(b) for b in builders if target is not None or is_local(b)]
    remote = [builder_name(b) for b in builders if builder_name(b) not in local]
    deploy = [sys.executable, "-m", "builder.vm.deploy"]
    # The deploy imports breakglass from the same tree that runs this build.
    env = [f"PYTHONPATH={Path(__file__).resolve().parents[2]}"]
    provisioners: list[dict[str, Any]] = []
    if local:
        argv = [*deploy, str(target), str(staged)]
        provisioners.append(
            {
                "type": "shell-local",
                "only": local,
                "environment_vars": env,
                "inline": [shlex.join(argv)],
            }
        )
    argv = [*deploy, "@ssh/{{build `Host`}}", str(staged)]
    argv += ["--user", "{{build `User`}}", "--port", "{{build `Port`}}", "--sudo"]
    with_file = [b for b in remote if b in key_file_builders]
    if with_file and key_file is not None:
        provisioners.append(
            {
                "type": "shell-local",
                "only": with_file,
                "environment_vars": env,
                # breakglass's own builds log in as root: no sudo round trip per command
                "inline": [shlex.join([*argv[:-1], "--key", str(key_file)])],
            }
        )
    with_build_key = [b for b in remote if b not in with_file]
    if with_build_key:
        provisioners.append(
            {
                "type": "shell-local",
                "only": with_build_key,
                "environment_vars": [*env, f"{_KEY_ENV}={{{{build `SSHPrivateKey`}}}}"],
                "inline": [
                    "umask 077",
                    "key=$(mktemp) && trap 'rm -f \"$key\"' EXIT",
                    f'printf "%s\\n" "${_KEY_ENV}" > "$key"',
                    shlex.join(argv) + ' --key "$key"',
                ],
            }
        )
    if remote:
        provisioners.append(
            {
                "type": "shell",
                "only": remote,
                "execute_command": "chmod +x {{ .Path }}; sudo -n sh -c '{{ .Vars }} {{ .Path }}'",
                "inline": CLEANUP,
            }
        )
    template: dict[str, Any] = {
        "builders": builders,
        "provisioners": provisioners,
        "post-processors": [{"type": "manifest", "output": str(manifest_path), "strip_path": True}],
    }
    if section.get("variables"):
        template["variables"] = dict(section["variables"])
    return template


# Last step inside a VM reached over SSH: what the build boot made that must not be shared
# by every host started from the image, and the build's login key. Packer's SSH connection
# is already open, so removing the key does not cut it off before the shutdown command.
CLEANUP = [
    "set -e",
    "rm -f /etc/ssh/ssh_host_*",
    ": > /etc/machine-id",
    "rm -f /var/lib/dbus/machine-id /var/lib/systemd/random-seed",
    'home=$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)',
    'rm -f "$home/.ssh/authorized_keys"',
    'rmdir "$home/.ssh" 2>/dev/null || true',
    "echo 'breakglass: build key, host keys and machine id removed'",
]


def read_artifact_ids(manifest_path: Path) -> list[str]:
    """Artifact ids of the last run recorded by Packer's manifest post-processor.

    Raises CheckFailed when the manifest is missing or holds no build of this run.
    """
    try:
        doc = json.loads(manifest_path.read_bytes())
        run = doc["last_run_uuid"]
        builds = [b for b in doc["builds"] if b.get("packer_run_uuid") == run]
        ids = [str(b["artifact_id"]) for b in sorted(builds, key=lambda b: str(b["name"]))]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckFailed(f"packer left no usable manifest: {e}") from e
    if not ids:
        raise CheckFailed("packer manifest records no artifact for this run")
    return ids
