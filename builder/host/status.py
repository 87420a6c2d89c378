"""``host status``: what state the host is in, after expiry and recovery have been applied."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from builder.approval.request import format_time
from builder.core.display import escape
from builder.core.errors import BreakglassError
from builder.host import clock, grant
from builder.host.expire import session
from builder.host.image import load_image


def describe(root: Path, now: datetime) -> dict[str, Any]:
    """The host state as a document; settles the host first (expiry, crash recovery)."""
    with session(root, now) as (layout, current):
        doc: dict[str, Any] = {
            "state": current.phase,
            "burned": dict(sorted(current.burned.items())),
        }
        p, a = current.pending, current.active
        if p is not None:
            doc["pending"] = {
                "request_id": p.request_id, "scope": p.scope, "ttl_seconds": p.ttl_seconds,
                "requester": p.requester, "approvals": list(p.approvals), "needed": p.needed,
                "not_after": format_time(p.not_after),
            }  # fmt: skip
        if a is not None:
            doc["active"] = {
                "request_id": a.request_id, "scope": a.scope,
                "expires_at": format_time(a.expires_at),
                # the earlier of the wall-clock and the boot-clock end
                "seconds_left": grant.seconds_left(a.to_dict(), now, clock.boot(root)),
            }  # fmt: skip
        try:
            image = load_image(layout)
            doc["image"] = {
                "name": image.name,
                "version": image.version,
                "manifest_digest": image.manifest_digest,
            }
        except BreakglassError as e:
            doc["image"] = {"error": e.message}
    return doc


def render(doc: dict[str, Any]) -> str:
    """The status document as text; names from the host's files are escaped (``builder.core.display``)."""
    lines = []
    if "pending" in doc:
        p = doc["pending"]
        lines.append(
            f"PENDING: request {p['request_id']} scope {p['scope']}, "
            f"{len(p['approvals'])} of {p['needed']} approvals, expires {p['not_after']}"
        )
    elif "active" in doc:
        a = doc["active"]
        lines.append(
            f"ACTIVE: scope {a['scope']} until {a['expires_at']} ({a['seconds_left']}s left)"
        )
    else:
        lines.append("DORMANT")
    if doc["burned"]:
        lines.append("burned: " + ", ".join(sorted(doc["burned"])))
    image = doc["image"]
    if "error" in image:
        lines.append(f"image: unreadable ({image['error']})")
    else:
        lines.append(f"image: {image['name']} {image['version']} ({image['manifest_digest']})")
    return "\n".join(escape(line) for line in lines)
