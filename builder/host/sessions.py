"""End what an emergency account still runs when its window closes.

Refusing new logins is not enough: a shell opened during the window would
outlive it. At expiry or reseal every process of the scope's emergency user is
killed (``loginctl terminate-user`` for its logind sessions, then ``pkill
-KILL -u`` for anything outside them) and the result is audited as
``sessions-ended``. Only on the running system: under ``--root`` (tests,
drills) this machine's processes are not the image's, so nothing is killed
and nothing audited.
"""

from __future__ import annotations

import contextlib
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from builder.core.errors import StateError
from builder.core.toolpath import which
from builder.host import audit
from builder.host.layout import Layout
from builder.host.state import HostState


def emergency_user(layout: Layout, scope: str | None) -> str | None:
    """The scope's ``emergency_user`` from the image manifest, or None."""
    if scope is None:
        return None
    import json  # here, not at import: unseal loads this module and never calls it

    try:
        doc = json.loads(layout.manifest.read_bytes())
        for s in doc.get("scopes", []):
            if s.get("name") == scope and isinstance(s.get("emergency_user"), str):
                return str(s["emergency_user"])
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    return None


def end_sessions(
    layout: Layout, now: datetime, request_id: str | None, scope: str | None
) -> dict[str, Any] | None:
    """Kill the scope's emergency user's sessions and processes; audit it; never raises.

    Returns the audited details, or None when the scope has no emergency user or
    ``layout`` is not the running system.
    """
    user = emergency_user(layout, scope)
    if user is None or layout.root.resolve() != Path("/"):
        return None
    details: dict[str, Any] = {"user": user, "killed": _kill(user)}
    # the reseal that called us reports an audit failure itself
    with contextlib.suppress(StateError):
        audit.append(layout, now, "sessions-ended", request_id=request_id, scope=scope,
                     details=details)  # fmt: skip
    return details


def end_for(layout: Layout, now: datetime, closed: HostState) -> None:
    """After a reseal of ``closed`` (the state before it): end its window's sessions."""
    if closed.active is not None:
        end_sessions(layout, now, closed.active.request_id, closed.active.scope)


def _kill(user: str) -> list[str]:
    done = []
    loginctl = which("loginctl")
    if loginctl and Path("/run/systemd/system").is_dir():
        proc = subprocess.run(
            [loginctl, "terminate-user", user], capture_output=True, timeout=10, check=False
        )
        if proc.returncode == 0:
            done.append("loginctl terminate-user")
    pkill = which("pkill")
    if pkill:
        proc = subprocess.run(
            [pkill, "-KILL", "-u", user], capture_output=True, timeout=10, check=False
        )
        # pkill: 0 killed something, 1 nothing left to kill
        done.append("pkill -KILL" if proc.returncode == 0 else "no processes left")
    return done
