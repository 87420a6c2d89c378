"""Durations as people write them in specs and on the command line: ``90s``, ``10m``, ``1h``, ``90d``."""

from __future__ import annotations

import re

from builder.core.errors import InputError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RE = re.compile(r"^([1-9][0-9]{0,6})([smhd])\Z")


def parse(text: object) -> int:
    """Return the duration in whole seconds; raises InputError for anything else."""
    if not isinstance(text, str):
        raise InputError(f"duration must be a string like '15m', got {type(text).__name__}")
    m = _RE.match(text.strip())
    if not m:
        raise InputError(f"bad duration {text!r} (want a number and s, m, h or d, e.g. '15m')")
    return int(m.group(1)) * _UNITS[m.group(2)]


def format_seconds(seconds: int) -> str:
    """The shortest exact spelling: 3600 -> '1h', 90 -> '90s'."""
    for unit in ("d", "h", "m"):
        if seconds % _UNITS[unit] == 0 and seconds >= _UNITS[unit]:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"
