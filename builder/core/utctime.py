"""The one time form in our documents: RFC 3339 UTC with whole seconds, ``2026-11-29T19:00:00Z``.

Kept free of ``re`` and ``_strptime``: the host's status path formats times.
"""

from __future__ import annotations

from datetime import UTC, datetime


def format_time(t: datetime) -> str:
    """RFC 3339 UTC with seconds, the one time form in our documents."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_time(text: object) -> datetime | None:
    """``text`` as an aware UTC time when it is exactly ``format_time``'s form, else None.

    Stricter than ``builder.approval.request.parse_time`` (which ``strptime`` makes
    lenient about digit counts): whatever this accepts, that accepts and formats back
    to the same text.
    """
    if not isinstance(text, str) or len(text) != 20 or text[-1] != "Z" or not text.isascii():
        return None
    try:
        moment = datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    except ValueError:
        return None
    return moment if format_time(moment) == text else None
