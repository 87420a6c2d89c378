"""Inspect: what a built image holds and who may open it, read from its manifest."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from builder.core import duration
from builder.release.build import SIGNATURE_NAME
from builder.release.verify import read_manifest


def summary(image_dir: Path, now: dt.datetime) -> dict[str, Any]:
    """A plain summary of the image at ``image_dir`` (no verification: run ``verify`` for that)."""
    import json

    manifest = read_manifest(image_dir)
    image_digest = None
    index = image_dir / "oci" / "index.json"
    if index.exists():
        manifests = json.loads(index.read_text()).get("manifests", [])
        image_digest = manifests[0].get("digest") if manifests else None
    sealed = manifest.doc["sealed_bundle"]
    rotate_by = dt.datetime.strptime(sealed["rotate_by"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.UTC
    )
    policy = manifest.policy
    return {
        "name": manifest.name,
        "version": manifest.version,
        "image_digest": image_digest,
        "artifacts": manifest.doc["provenance"].get("artifacts", []),
        "manifest_digest": manifest.digest,
        "signed": (image_dir / SIGNATURE_NAME).exists(),
        "approvers": [a["name"] for a in policy["approvers"]],
        "group_threshold": policy["group_threshold"],
        "groups": policy["groups"],
        "max_ttl_seconds": policy["max_ttl_seconds"],
        "scopes": [
            {
                "name": s["name"],
                "max_ttl_seconds": s["max_ttl_seconds"],
                "emergency_user": s["emergency_user"],
                "credentials": [c["name"] for c in s["credentials"]],
            }
            for s in manifest.scopes
        ],
        "sealed": sealed["created"],
        "rotate_by": sealed["rotate_by"],
        "rotation_overdue": now >= rotate_by,
    }


def render_text(info: dict[str, Any]) -> str:
    groups = ", ".join(
        f"{g['threshold']} of {len(g['members'])} ({', '.join(g['members'])})"
        for g in info["groups"]
    )
    quorum = (
        groups if len(info["groups"]) == 1 else f"{info['group_threshold']} groups of: {groups}"
    )
    lines = [
        f"image        {info['name']} {info['version']}",
        f"digest       {info['image_digest']}"
        if info["image_digest"]
        else f"artifacts    {', '.join(info['artifacts'])}",
        f"manifest     {info['manifest_digest']} ({'signed' if info['signed'] else 'UNSIGNED'})",
        f"approvers    {', '.join(info['approvers'])}",
        f"quorum       {quorum}",
        f"ttl cap      {duration.format_seconds(info['max_ttl_seconds'])}",
        "scopes",
    ]
    for s in info["scopes"]:
        user = f", login as {s['emergency_user']}" if s["emergency_user"] else ""
        lines.append(
            f"  {s['name']:<18} ttl <= {duration.format_seconds(s['max_ttl_seconds'])}{user}; "
            f"credentials: {', '.join(s['credentials'])}"
        )
    overdue = "  ROTATION OVERDUE" if info["rotation_overdue"] else ""
    lines.append(f"sealed       {info['sealed']}")
    lines.append(f"rotate by    {info['rotate_by']}{overdue}")
    return "\n".join(lines)
