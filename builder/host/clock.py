"""The host's clock: read once per command, in whole seconds.

Whole seconds because the state file records seconds, so a window can only
end early, never late. ``BREAKGLASS_UNSAFE_FROZEN_NOW`` (RFC 3339, UTC) stops
the clock at that instant; it exists so that drills can prove a host whose
clock never advances is caught, and it warns on stderr whenever it is used.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

FROZEN_ENV = "BREAKGLASS_UNSAFE_FROZEN_NOW"


def frozen() -> bool:
    return bool(os.environ.get(FROZEN_ENV))


def now() -> datetime:
    """The current time, or the frozen one (with a warning). A bad frozen value is ignored loudly."""
    value = os.environ.get(FROZEN_ENV)
    if value:
        try:
            moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            print(f"breakglass: warning: ignoring malformed {FROZEN_ENV}", file=sys.stderr)
        else:
            print(f"breakglass: warning: unsafe frozen clock at {value}", file=sys.stderr)
            return moment
    return datetime.now(UTC).replace(microsecond=0)
