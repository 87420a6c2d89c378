"""The host's clocks: the wall clock, read once per command in whole seconds, and the boot clock.

Whole seconds because the state file records seconds, so a window can only
end early, never late.

The wall clock can be set by anyone with the right to set it, so a window is
also measured on ``CLOCK_BOOTTIME`` (seconds since boot, suspend included,
which ``settimeofday`` does not move) together with the kernel's boot id:
``boot()`` reads both. A window ends at the earlier of its wall-clock and
boot-clock ends (``builder.host.activation``).

``BREAKGLASS_UNSAFE_FROZEN_NOW`` (RFC 3339, UTC) stops both clocks at that
instant. It exists so that drills can prove that a host whose clock never
advances is caught, so it is honoured only on an image whose signed manifest
says it was built for a drill (``image.drill``); any other image ignores it,
warns, and the next settling command audits that it was set. Kept free of
heavy imports: ``authorized-keys`` uses it on every login.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime

TYPE_CHECKING = False  # typing itself costs every login
if TYPE_CHECKING:
    from os import PathLike

    Root = str | PathLike[str]

FROZEN_ENV = "BREAKGLASS_UNSAFE_FROZEN_NOW"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
MANIFEST = "etc/breakglass/manifest.json"


def frozen() -> bool:
    """Whether the frozen-clock switch is set (honoured or not)."""
    return bool(os.environ.get(FROZEN_ENV))


def is_drill_image(root: Root) -> bool:
    """True only when the image's manifest says ``image.drill: true``; unreadable means no."""
    from builder.core import bounded
    from builder.core.errors import InputError

    try:
        doc = bounded.load_json(bounded.read(os.path.join(root, MANIFEST), "manifest"), "manifest")
        # a document that is not an object fails the subscript or ``get``: TypeError, AttributeError
        return doc["image"].get("drill") is True
    except (OSError, InputError, KeyError, TypeError, AttributeError):
        return False


def _frozen_at(root: Root | None, *, warn: bool) -> datetime | None:
    """The frozen instant when the switch is set, well formed and the image is a drill build."""
    value = os.environ.get(FROZEN_ENV)
    if not value:
        return None
    try:
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        if warn:
            print(f"breakglass: warning: ignoring malformed {FROZEN_ENV}", file=sys.stderr)
        return None
    if root is None or not is_drill_image(root):
        if warn:
            print(
                f"breakglass: warning: ignoring {FROZEN_ENV}: this image is not a drill build",
                file=sys.stderr,
            )
        return None
    if warn:
        print(f"breakglass: warning: unsafe frozen clock at {value}", file=sys.stderr)
    return moment


def now(root: Root | None = None) -> datetime:
    """The current wall-clock time, or the frozen one on a drill image (with a warning)."""
    moment = _frozen_at(root, warn=True)
    if moment is not None:
        return moment
    return datetime.now(UTC).replace(microsecond=0)


def boot(root: Root | None = None) -> tuple[str, int]:
    """``(boot id, whole seconds of CLOCK_BOOTTIME)``; frozen with the wall clock on a drill image.

    The seconds are floored, so a window measured on them can end up to a
    second early, never late. An unreadable boot id reads as ``unknown``,
    which matches no recorded boot; so does one that is not ASCII.
    """
    try:
        with open(BOOT_ID, encoding="ascii") as f:
            boot_id = f.read().strip() or "unknown"
    except (OSError, UnicodeDecodeError):
        boot_id = "unknown"
    moment = _frozen_at(root, warn=False)
    if moment is not None:
        # a frozen drill clock stops the boot clock too, or the drill could not show a stuck host
        return boot_id, int(moment.timestamp())
    return boot_id, int(time.clock_gettime(time.CLOCK_BOOTTIME))
