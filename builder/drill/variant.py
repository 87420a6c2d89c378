"""The drill variant of an image: same shape, throwaway keys and credentials, loopback endpoints.

``prepare_variant`` copies the spec into a work directory with freshly
generated approver keys (same names, same policy), every credential generated
(or, for opaque ones, read from a random throwaway file), the agents' ``vars``
pointing at the loopback stand-ins, then seals it with ``builder.release.seal``,
builds it with ``builder.release.build`` into an OCI layout and unpacks the payload
layer into a root directory. The real sealed bundle is never opened.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.core.errors import InputError

REQUESTER = "drill-requester"


@dataclass(frozen=True)
class DrillKeys:
    name: str
    identity: Path
    signing_key: Path


@dataclass(frozen=True)
class Variant:
    spec_path: Path
    root: Path
    image_dir: Path
    enrolment_path: Path
    keys: dict[str, DrillKeys]


def _drill_keys(directory: Path, names: list[str], now: dt.datetime) -> dict[str, DrillKeys]:
    from builder.release.keygen import keygen

    out = {}
    for name in names:
        k = keygen(name, directory, now)
        out[name] = DrillKeys(name, k.identity_path, k.signing_key_path)
    return out


def _variant_document(
    spec_path: Path, workdir: Path, keys_dir: Path, vars_for: Mapping[str, str], now: dt.datetime
) -> tuple[Any, dict[str, DrillKeys]]:
    from builder.core.yamlfile import round_trip_yaml
    from builder.release.spec import load_spec

    spec = load_spec(spec_path)  # the real spec must be valid before we copy it
    doc = round_trip_yaml().load(spec_path.read_text(encoding="utf-8"))
    keys = _drill_keys(keys_dir, [a.name for a in spec.approvers], now)

    for entry in doc["approvers"]:
        k = keys[entry["name"]]
        entry["recipient"] = _recipient_of(k.identity)
        entry["signing_key"] = " ".join(k.signing_key.with_suffix(".pub").read_text().split()[:2])
    doc["templates"] = str(spec.templates_dir)
    if spec.base is not None:
        doc["base"] = str((spec_path.parent / spec.base.split(":")[0]).resolve()) + (
            ":" + spec.base.split(":", 1)[1] if ":" in spec.base else ""
        )
    doc.pop("packer", None)
    for cred in doc.get("credentials") or []:
        kind = _kind_of(spec, cred["name"])
        for key in ("from_file", "from_env", "generate"):
            cred.pop(key, None)
        if kind in ("ssh-ed25519", "token", "password"):
            cred["generate"] = kind
        else:
            path = workdir / f"opaque-{cred['name']}"
            path.write_bytes(secrets.token_bytes(32))
            os.chmod(path, 0o600)
            cred["from_file"] = str(path)
            cred["kind"] = kind
    for agent in doc.get("agents") or []:
        agent.setdefault("vars", {})
        for key, value in vars_for.items():
            agent["vars"][key] = value
    return doc, keys


def _kind_of(spec: Any, name: str) -> str:
    for c in spec.credentials:
        if c.name == name:
            return str(c.kind)
    raise InputError(f"unknown credential '{name}'")


def _recipient_of(identity: Path) -> str:
    from builder.core import agecrypt

    return str(agecrypt.public_of(agecrypt.load_identities(identity)[0]))


def prepare_variant(
    spec_path: Path, workdir: Path, vars_for: Mapping[str, str], now: dt.datetime
) -> Variant:
    """Seal, build and unpack the drill variant of ``spec_path`` under ``workdir``.

    Raises InputError for a bad spec and whatever seal and build raise.
    """
    from builder.core.yamlfile import round_trip_yaml
    from builder.release import build, layer, oci
    from builder.release.seal import seal
    from builder.release.spec import load_spec

    src = workdir / "spec"
    src.mkdir(parents=True, mode=0o700)
    doc, keys = _variant_document(spec_path, src, workdir / "keys", vars_for, now)
    variant_spec = src / spec_path.name
    with variant_spec.open("w", encoding="utf-8") as f:
        round_trip_yaml().dump(doc, f)
    spec = load_spec(variant_spec)
    seal(spec, now, rotate=False)
    result = build.build_oci(build.plan(spec, drill=True), workdir / "dist", None)
    image = oci.open_layout(result.image_dir / "oci", spec.version)
    root = workdir / "root"
    root.mkdir(mode=0o755)
    entries = layer.read_layer(image.layers[-1], name="payload layer")
    for path, entry in sorted(entries.items()):
        target = root / path
        if entry.type == "dir":
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, entry.mode)
        elif entry.type == "file":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(entry.data)
            os.chmod(target, entry.mode)
    return Variant(variant_spec, root, result.image_dir, spec.enrolment_path, keys)
