"""The activation grant and the window arithmetic, light enough for every login.

At activation, ``host unseal`` writes the active record it puts in the state
file also to ``run/breakglass/.grant.json``: the runtime directory is a tmpfs
that only the unseal (root) can write and that a reboot empties, so the grant
proves what the state file by itself cannot. ``authorized-keys`` running as
the unprivileged ``AuthorizedKeysCommandUser`` reads only this file (and the
public manifest); the settling commands also require the state file to
match it and the audit log to hold the matching ``activated`` event
(``builder.host.activation``).

A window is open while the wall clock is at or after ``activated_at`` and
before ``expires_at``, the boot id is the one recorded, and fewer than
``expires_at - activated_at`` seconds of ``CLOCK_BOOTTIME`` have passed
since ``boot_seconds``. Imports only ``os``, ``datetime`` and the bounded JSON reader.
"""

from __future__ import annotations

import os
import stat
from datetime import datetime

TYPE_CHECKING = False  # typing itself costs every login
if TYPE_CHECKING:
    from os import PathLike

    Root = str | PathLike[str]

GRANT = "run/breakglass/.grant.json"
KEYS = frozenset(
    ("request_id", "scope", "activated_at", "expires_at", "files", "boot_id", "boot_seconds")
)
MAX_BYTES = 64 * 1024


def parse_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text.endswith("Z"):
        return None
    try:
        return datetime.fromisoformat(text[:-1] + "+00:00")
    except ValueError:
        return None


def read(root: Root) -> dict[str, object] | None:
    """The grant as written by the unseal, or None when absent, a link, foreign or malformed.

    The file must be a regular file (``O_NOFOLLOW``) owned by root or by the
    running user, whoever else may read it.
    """
    try:
        fd = os.open(os.path.join(root, GRANT), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, os.geteuid()):
            return None
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or st.st_size > MAX_BYTES:
            return None
        raw = os.read(fd, MAX_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    from builder.core import bounded
    from builder.core.errors import InputError

    try:
        doc = bounded.load_json(raw, "activation grant")
    except InputError:
        return None
    if not isinstance(doc, dict) or set(doc) != KEYS:
        return None
    return doc


def span_seconds(record: dict[str, object]) -> int | None:
    """``expires_at - activated_at`` in seconds, or None when malformed."""
    start, end = parse_time(record.get("activated_at")), parse_time(record.get("expires_at"))
    if start is None or end is None:
        return None
    return int((end - start).total_seconds())


def window_problem(
    record: dict[str, object], now: datetime, boot: tuple[str, int]
) -> tuple[str, dict[str, str]] | None:
    """None while the window is open; else ``(audit event, details)`` saying why it is closed.

    ``expired`` when either clock passed the end; ``clock-anomaly`` when the
    wall clock is earlier than the activation, the boot id differs (another
    boot), or the boot clock runs backwards; ``tampered`` when malformed.
    """
    start, end = parse_time(record.get("activated_at")), parse_time(record.get("expires_at"))
    span = span_seconds(record)
    boot_id, boot_at = record.get("boot_id"), record.get("boot_seconds")
    if start is None or end is None or span is None or span <= 0:
        return "tampered", {"found": "the active record's window is malformed"}
    if not isinstance(boot_id, str) or not isinstance(boot_at, int) or isinstance(boot_at, bool):
        return "tampered", {"found": "the active record has no boot clock reading"}
    expires = str(record["expires_at"])
    if now < start:
        return "clock-anomaly", {"found": "the wall clock is earlier than the activation",
                                 "expires_at": expires}  # fmt: skip
    if boot[0] != boot_id:
        return "clock-anomaly", {"found": "the host booted since the activation",
                                 "expires_at": expires}  # fmt: skip
    elapsed = boot[1] - boot_at
    if elapsed < 0:
        return "clock-anomaly", {"found": "the boot clock runs backwards", "expires_at": expires}
    if elapsed >= span:
        return "expired", {"expires_at": expires, "by": "boot clock"}
    if now >= end:
        return "expired", {"expires_at": expires, "by": "wall clock"}
    return None


def seconds_left(record: dict[str, object], now: datetime, boot: tuple[str, int]) -> int:
    """Seconds until the earlier of the two ends (0 when closed or malformed)."""
    end, span, boot_at = (
        parse_time(record.get("expires_at")),
        span_seconds(record),
        record.get("boot_seconds"),
    )
    if end is None or span is None or not isinstance(boot_at, int):
        return 0
    wall = int((end - now).total_seconds())
    return max(0, min(wall, span - (boot[1] - boot_at)))


def scope_cap(manifest: object, scope: object) -> int | None:
    """The scope's ``max_ttl_seconds`` from a parsed manifest, or None when absent."""
    scopes = manifest.get("scopes") if isinstance(manifest, dict) else None
    for s in scopes if isinstance(scopes, list) else []:
        if isinstance(s, dict) and s.get("name") == scope:
            cap = s.get("max_ttl_seconds")
            return cap if isinstance(cap, int) and not isinstance(cap, bool) else None
    return None
