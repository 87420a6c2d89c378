"""Expiry, reseal and crash recovery: bring the host back to a consistent, safe state.

``settle`` runs first in every host command (and in ``authorized-keys`` when
its fast path sees anything unusual), under the host lock. It resolves, in
order:

1. a partial state left by a crash (plaintext while not ACTIVE, ACTIVE with
   plaintext missing, a pending request without its identity, a reseal that
   was audited but not finished) -> plaintext wiped, ``recovered`` audited;
2. an ACTIVE record that its unseal does not back (``builder.host.activation``:
   no matching grant in the runtime directory, a window past the scope's ttl
   cap, no matching audited activation) -> resealed, ``tampered`` audited;
3. an ACTIVE window closed on either clock -> resealed, ``expired`` audited;
   a wall clock earlier than the activation or another boot -> resealed,
   ``clock-anomaly`` audited;
4. a PENDING request past ``not_after`` -> dropped, ``request-expired`` audited.

An unsafe frozen clock on an image that is not a drill build is ignored, and
audited as ``unsafe-clock-ignored``.

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

from builder.approval.request import format_time
from builder.core import bounded
from builder.core.errors import InputError, StateError
from builder.host import activation, audit, clock, record, sessions, state, wipe
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
    wiped = wipe.wipe_all(layout, crash_name="reseal-mid-wipe")
    crash_point("reseal-after-wipe")
    links = [w for w in wiped if w.endswith(wipe.LINK_NOTE)]
    if links and audit_error is None:
        with contextlib.suppress(StateError):
            audit.append(layout, now, "recovered", request_id=request_id, scope=scope,
                         details={"found": "symbolic links in the runtime directory",
                                  "wiped": links})  # fmt: skip
    sessions.end_for(layout, now, current)
    if a is not None and audit_error is None:
        # recordings outlive the window; what no session sealed itself is hashed now
        with contextlib.suppress(StateError, OSError):
            record.seal_pending(layout, now, request_id, scope)
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
        stray = [
            f for f in files if str(f.relative_to(layout.root)) not in a.files and f != layout.grant
        ]
        if stray:
            wiped = wipe.wipe(layout, stray)
            audit.append(layout, now, "recovered", request_id=a.request_id, scope=a.scope,
                         details={"found": "stray files while active", "wiped": wiped})  # fmt: skip
        if (
            last is not None
            and last.get("event") == "activating"
            and last.get("request_id") == a.request_id
        ):
            # the grant and the state are the unseal's own; the audit gets the event it missed
            audit.append(layout, now, "activated", request_id=a.request_id, scope=a.scope,
                         details={"recovered": "activation finished but not audited",
                                  "activated_at": format_time(a.activated_at),
                                  "expires_at": format_time(a.expires_at),
                                  "approvers": last.get("details", {}).get("approvers", []),
                                  "files": list(a.files)})  # fmt: skip
        return current
    keep: set[Path] = set()
    if current.phase == PENDING and p is not None:
        keep.add(layout.ephemeral_identity(p.request_id))
    stray = [f for f in files if f not in keep]
    new = current
    details: dict[str, Any] = {}
    if stray:
        exposed = [f for f in stray if not f.name.startswith(".") and not f.is_symlink()]
        details["found"] = f"plaintext while {current.phase.lower()}"
        details["wiped"] = wipe.wipe(layout, stray)
        if p is not None and exposed:
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
    from builder.core.record import replace

    return replace(current, burned={**current.burned, scope: request_id})


def settle(layout: Layout, now: datetime) -> HostState:
    """Load the state, recover from any crash, reseal what is forged or closed; call with the lock held."""
    current = state.load(layout.root)
    if clock.frozen() and not clock.is_drill_image(layout.root):
        audit.append(layout, now, "unsafe-clock-ignored",
                     details={"variable": clock.FROZEN_ENV, "why": "not a drill build"})  # fmt: skip
    current = _recover(layout, current, now)
    a, p = current.active, current.pending
    found = None
    if current.phase == ACTIVE and a is not None:
        found = activation.problem(layout, a, now, clock.boot(layout.root))
    if found is not None:
        current = reseal(layout, current, now, found[0], found[1])
    elif current.phase == PENDING and p is not None and now > p.not_after:
        current = reseal(layout, current, now, "request-expired", {})
    return current


@contextlib.contextmanager
def session(root: Path, now: datetime) -> Iterator[tuple[Layout, HostState]]:
    """Lock the host and settle it; the body may then make one transition."""
    layout = Layout(root)
    with state.locked(root):
        yield layout, settle(layout, now)
