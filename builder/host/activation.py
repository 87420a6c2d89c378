"""The activation check: ACTIVE counts only when the unseal that made it can be proven.

The state file under ``var/lib/breakglass`` is not trusted by itself. An
active record is honoured only when all of these hold:

1. the runtime directory holds the activation grant (``builder.host.grant``)
   and it equals the state's active record: only the unseal writes there;
2. ``expires_at - activated_at`` does not exceed the scope's ttl cap in the
   image's manifest;
3. the audit log verifies and its last ``activated`` event names this
   request, scope, activation time and expiry;
4. the window is open on both clocks, in the same boot
   (``builder.host.grant.window_problem``).

A failure of 1-3 is ``tampered``; of 4, ``expired`` or ``clock-anomaly``.
Settling reseals on any of them and audits the event with what was found.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from builder.core.errors import BreakglassError
from builder.host import audit, grant
from builder.host.layout import Layout
from builder.host.state import Active


def _matches(event: dict[str, Any], record: dict[str, Any]) -> bool:
    details = event.get("details")
    return (
        event.get("request_id") == record["request_id"]
        and event.get("scope") == record["scope"]
        and isinstance(details, dict)
        and details.get("activated_at") == record["activated_at"]
        and details.get("expires_at") == record["expires_at"]
    )


def forged(layout: Layout, active: Active) -> str | None:
    """Why ``active`` is not backed by its unseal (checks 1-3), or None when it is."""
    from builder.host.image import load_image

    record = active.to_dict()
    found = grant.read(layout.root)
    if found is None:
        return "no activation grant in the runtime directory"
    if found != record:
        return "the active record differs from its activation grant"
    try:
        image = load_image(layout)
    except BreakglassError as e:
        return f"the image manifest is unreadable ({e.message})"
    scope = image.scopes.get(active.scope)
    span = grant.span_seconds(record)
    if scope is None or span is None:
        return f"the image has no scope {active.scope!r}"
    if span > scope.max_ttl_seconds:
        return f"a window of {span}s exceeds the ttl cap of scope {active.scope} ({scope.max_ttl_seconds}s)"
    try:
        audit.verify(layout)
        events = audit.read_events(layout)
    except BreakglassError as e:
        return f"the audit log does not verify ({e.message})"
    last = next((e for e in reversed(events) if e.get("event") == "activated"), None)
    if last is None or not _matches(last, record):
        return "no audited activation matches the active record"
    return None


def problem(
    layout: Layout, active: Active, now: datetime, boot: tuple[str, int]
) -> tuple[str, dict[str, Any]] | None:
    """None when ``active`` is honoured at ``now``; else ``(audit event, details)`` for the reseal."""
    why = forged(layout, active)
    if why is not None:
        return "tampered", {"found": why}
    return grant.window_problem(active.to_dict(), now, boot)
