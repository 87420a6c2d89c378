"""The Packer backend: write a template around the user's builders, validate, build, collect ids.

The template is the user's ``packer:`` section (``builders``, ``variables``)
plus what breakglass adds: a ``shell-local`` provisioner that runs the pyinfra
install deploy (``python -m builder.deploy``) against the build target, and
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
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import packer
from builder.deploy.stage import stage_payload
from builder.errors import CheckFailed, InputError
from builder.fsio import write_atomic
from builder.payload import PayloadFile

TEMPLATE_NAME = "packer-template.json"
MANIFEST_NAME = "packer-manifest.json"
SECTION_KEYS = ("builders", "variables", "provision_target")
# Packer puts the build VM's SSH private key in this variable for the provisioner script.
_KEY_ENV = "BREAKGLASS_SSH_KEY"


@dataclass(frozen=True)
class PackerResult:
    """The artifact ids Packer's manifest post-processor recorded, and the template that ran."""

    artifact_ids: list[str]
    template: dict[str, Any]


def build_with_packer(
    spec_packer: Mapping[str, Any],
    payload_files: tuple[PayloadFile, ...],
    dirs: Mapping[str, int],
    work_dir: Path,
    *,
    on_event: Callable[[packer.PackerEvent], None] | None = None,
) -> PackerResult:
    """Build the user's Packer builders with the payload installed; return the artifact ids.

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
        template = render_template(spec_packer, staged, manifest_path)
        template_path = scratch / TEMPLATE_NAME
        template_bytes = json.dumps(template, indent=2, sort_keys=True).encode() + b"\n"
        write_atomic(template_path, template_bytes)
        packer.validate(template_path)
        packer.build(template_path, on_event)
        artifact_ids = read_artifact_ids(manifest_path)
        manifest_bytes = manifest_path.read_bytes()
        write_atomic(work_dir / TEMPLATE_NAME, template_bytes)
        write_atomic(work_dir / MANIFEST_NAME, manifest_bytes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return PackerResult(artifact_ids=artifact_ids, template=template)


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
    section: Mapping[str, Any], staged: Path, manifest_path: Path
) -> dict[str, Any]:
    """The Packer JSON template: the user's builders and variables, our provisioners and manifest."""
    builders = [dict(b) for b in section["builders"]]
    target = section.get("provision_target")
    local = [builder_name(b) for b in builders if target is not None or is_local(b)]
    remote = [builder_name(b) for b in builders if builder_name(b) not in local]
    deploy = [sys.executable, "-m", "builder.deploy"]
    # The deploy imports breakglass from the same tree that runs this build.
    env = [f"PYTHONPATH={Path(__file__).resolve().parent.parent}"]
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
    if remote:
        argv = [*deploy, "@ssh/{{build `Host`}}", str(staged)]
        argv += ["--user", "{{build `User`}}", "--port", "{{build `Port`}}", "--sudo"]
        provisioners.append(
            {
                "type": "shell-local",
                "only": remote,
                "environment_vars": [*env, f"{_KEY_ENV}={{{{build `SSHPrivateKey`}}}}"],
                "inline": [
                    "umask 077",
                    "key=$(mktemp) && trap 'rm -f \"$key\"' EXIT",
                    f'printf "%s\\n" "${_KEY_ENV}" > "$key"',
                    shlex.join(argv) + ' --key "$key"',
                ],
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
