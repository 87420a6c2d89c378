"""Expiry, reseal and crash recovery: bring the host back to a consistent, safe state.

``settle`` runs first in every host command (and in ``authorized-keys`` when
its fast path sees anything unusual), under the host lock. It resolves, in
order:

1. a partial state left by a crash (plaintext while not ACTIVE, ACTIVE with
   plaintext missing, a pending request without its identity, a reseal that
   was audited but not finished) -> plaintext wiped, ``recovered`` audited;
2. an ACTIVE window past ``expires_at`` -> resealed, ``expired`` audited;
3. a PENDING request past ``not_after`` -> dropped, ``request-expired`` audited.

Reseal order: audit, state DORMANT, wipe. Access is revoked by the state
write before any byte is wiped, and a reseal proceeds even when the audit
log cannot be written (the audit error is raised afterwards).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from builder import bounded
from builder.errors import InputError, StateError
from builder.host import audit, state, wipe
from builder.host.layout import Layout, crash_point
from builder.host.state import ACTIVE, PENDING, HostState


def reseal(
    layout: Layout, current: HostState, now: datetime, event: str, details: dict[str, Any]
) -> HostState:
    """Return to DORMANT: audit ``event``, write the state, wipe every plaintext file."""
    a, p = current.active, current.pending
    request_id = a.request_id if a else p.request_id if p else None
    scope = a.scope if a else p.scope if p else None
    audit_error: StateError | None = None
    try:
        audit.append(layout, now, event, request_id=request_id, scope=scope, details=details)
    except StateError as e:
        audit_error = e
    crash_point("reseal-after-audit")
    new = current.dormant()
    state.save(layout.root, new)
    crash_point("reseal-after-state")
    wipe.wipe_all(layout, crash_name="reseal-mid-wipe")
    crash_point("reseal-after-wipe")
    if audit_error is not None:
        raise audit_error
    return new


def _last_event(layout: Layout) -> dict[str, Any] | None:
    try:
        fd = os.open(layout.audit, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        line = audit._last_line(fd)
    finally:
        os.close(fd)
    try:
        event = bounded.load_json(line, "audit line") if line else None
    except InputError:
        return None
    return event if isinstance(event, dict) else None


def _recover(layout: Layout, current: HostState, now: datetime) -> HostState:
    files = wipe.runtime_files(layout)
    a, p = current.active, current.pending
    if current.phase == ACTIVE and a is not None:
        missing = [f for f in a.files if not (layout.root / f).is_file()]
        last = _last_event(layout)
        unfinished = (
            last is not None
            and last.get("event") in ("resealed", "expired")
            and last.get("request_id") == a.request_id
        )
        if missing or unfinished:
            why = "reseal interrupted" if unfinished else "active but plaintext missing"
            return reseal(layout, current, now, "recovered", {"found": why})
        stray = [f for f in files if str(f.relative_to(layout.root)) not in a.files]
        if stray:
            wiped = wipe.wipe(layout, stray)
            audit.append(layout, now, "recovered", request_id=a.request_id, scope=a.scope,
                         details={"found": "stray files while active", "wiped": wiped})  # fmt: skip
        if (
            last is not None
            and last.get("event") == "activating"
            and last.get("request_id") == a.request_id
        ):
            audit.append(layout, now, "recovered", request_id=a.request_id, scope=a.scope,
                         details={"found": "activation finished but not audited"})  # fmt: skip
        return current
    keep: set[Path] = set()
    if current.phase == PENDING and p is not None:
        keep.add(layout.ephemeral_identity(p.request_id))
    stray = [f for f in files if f not in keep]
    new = current
    details: dict[str, Any] = {}
    if stray:
        details["found"] = f"plaintext while {current.phase.lower()}"
        details["wiped"] = wipe.wipe(layout, stray)
        if p is not None and any(not f.name.startswith(".") for f in stray):
            # credentials touched the disk during an interrupted activation: treat them as exposed
            new = _burn(new, p.scope, p.request_id)
    if p is not None and not layout.ephemeral_identity(p.request_id).is_file():
        details.setdefault("found", "pending request without its identity")
        new = new.dormant()
    if not details:
        return current
    audit.append(layout, now, "recovered", request_id=p.request_id if p else None,
                 scope=p.scope if p else None, details=details)  # fmt: skip
    if new != current:
        state.save(layout.root, new)
    return new


def _burn(current: HostState, scope: str, request_id: str) -> HostState:
    from dataclasses import replace

    return replace(current, burned={**current.burned, scope: request_id})


def settle(layout: Layout, now: datetime) -> HostState:
    """Load the state, recover from any crash, apply expiry; call with the lock held."""
    current = state.load(layout.root)
    current = _recover(layout, current, now)
    a, p = current.active, current.pending
    if current.phase == ACTIVE and a is not None and now >= a.expires_at:
        current = reseal(
            layout,
            current,
            now,
            "expired",
            {"expires_at": a.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")},
        )
    elif current.phase == PENDING and p is not None and now > p.not_after:
        current = reseal(layout, current, now, "request-expired", {})
    return current


@contextlib.contextmanager
def session(root: Path, now: datetime) -> Iterator[tuple[Layout, HostState]]:
    """Lock the host and settle it; the body may then make one transition."""
    layout = Layout(root)
    with state.locked(root):
        yield layout, settle(layout, now)
