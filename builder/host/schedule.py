"""Reseal at the exact expiry instant: a transient systemd timer made at activation.

The periodic ``breakglass-expire.timer`` (every 5 s) and the expiry check in
every host command stay as backstops; this timer is what normally fires first,
because it is armed for ``expires_at`` itself (``AccuracySec=1ms``) while the
periodic tick can be up to 5 s late. It counts on the monotonic clock
(``--on-active``), so moving the wall clock does not move it.

Only on a host that runs systemd and only for the real root: under ``--root``
(tests, drills, an unpacked image) or without ``systemd-run`` there is nothing
to schedule, and activation goes on without it; the result says why.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

from builder.core.errors import StateError
from builder.core.toolpath import which
from builder.host import audit, sessions
from builder.host.layout import Layout

UNIT_PREFIX = "breakglass-reseal-"
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
TICK = ("/usr/local/bin/breakglass", "host", "tick")


def unit_name(request_id: str) -> str:
    """The transient unit of one window (request ids are hex: safe in a unit name)."""
    return f"{UNIT_PREFIX}{''.join(c for c in request_id if c.isalnum())[:16]}"


def reseal_at(
    root: Path, request_id: str, expires_at: datetime, user: str | None = None
) -> dict[str, str]:
    """Arm a one-shot timer that runs ``host tick`` at ``expires_at``; never raises.

    With ``user`` (the scope's emergency account) the timer's service first kills
    that user's processes (``pkill -KILL -u``, in C, before Python has started):
    access ends at ``expires_at`` whatever the reseal that follows still has to do,
    and the tick's own ``sessions-ended`` event then records what was left.
    Returns what was done, for the audit log: ``{"timer": UNIT, "in": "12.345s"}``
    or ``{"skipped": REASON}``.
    """
    if root.resolve() != Path("/"):
        return {"skipped": "not the running system (--root)"}
    if not Path("/run/systemd/system").is_dir():
        return {"skipped": "systemd is not running"}
    systemd_run = which("systemd-run")
    if systemd_run is None:
        return {"skipped": "systemd-run is not installed"}
    delay = max(0.0, expires_at.timestamp() - time.time())
    unit = unit_name(request_id)
    argv = [
        systemd_run, "--quiet", f"--unit={unit}", "--collect",
        f"--on-active={delay:.3f}s", "--timer-property=AccuracySec=1ms",
        "--property=Type=oneshot",
    ]  # fmt: skip
    pkill = which("pkill")
    if user is not None and pkill and _USER.fullmatch(user):
        argv.append(f"--property=ExecStartPre=-{pkill} -KILL -u {user}")
    argv += TICK
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=15, check=False, env=_env()
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"skipped": f"systemd-run failed ({type(e).__name__})"}
    if proc.returncode != 0:
        said = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"skipped": f"systemd-run failed: {said[:200]}"}
    done = {"timer": f"{unit}.timer", "in": f"{delay:.3f}s"}
    if any(a.startswith("--property=ExecStartPre=") for a in argv):
        done["ends_sessions_of"] = str(user)
    return done


def arm(layout: Layout, now: datetime, request_id: str, scope: str, expires_at: datetime) -> None:
    """Arm the exact-time reseal and audit ``expiry-scheduled`` (or why not); never fatal.

    Under ``--root`` nothing is armed and nothing audited: the image's clock is not
    this machine's, and its backstops (every command checks expiry) are what apply.
    """
    if layout.root.resolve() != Path("/"):
        return
    details = {"expires_at": expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
               **reseal_at(layout.root, request_id, expires_at,
                           sessions.emergency_user(layout, scope))}  # fmt: skip
    with contextlib.suppress(StateError):
        audit.append(layout, now, "expiry-scheduled", request_id=request_id, scope=scope,
                     details=details)  # fmt: skip


def _env() -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": os.environ.get("LANG", "C.UTF-8")}
