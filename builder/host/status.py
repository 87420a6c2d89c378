"""``host status``: what state the host is in, after expiry and recovery have been applied.

``describe`` settles the host under its lock (``builder.host.expire.session``)
and reads the result. ``fast_describe`` answers the common case, a host that
needs no settling, with ``os``, ``datetime``, ``fcntl`` and json's C parts only
(no ``pathlib``, ``dataclasses`` or ``typing``): under the same lock it makes
every check settling would make (state file, plaintext in the runtime
directory, the activation check of "Host trust": grant equal to the state, the
scope's ttl cap, a verifying audit log whose last ``activated`` event matches,
both clocks) and gives up (None) at the first thing settling would change or
report, so that ``describe`` does it. It never writes.
"""

from __future__ import annotations

import os

from builder.core.display import escape

TYPE_CHECKING = False  # typing itself costs the start of every host command
if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path
    from typing import Any

    from builder.host.image import HostImage

_STATE_DIR = "var/lib/breakglass"
_RUNTIME = "run/breakglass"
_MANIFEST = "etc/breakglass/manifest.json"
_STATE_KEYS = frozenset(("format", "phase", "pending", "active", "burned"))


def describe(root: Path, now: datetime) -> dict[str, Any]:
    """The host state as a document; settles the host first (expiry, crash recovery)."""
    from builder.core.errors import BreakglassError
    from builder.core.utctime import format_time
    from builder.host import clock, grant
    from builder.host.expire import session
    from builder.host.image import load_image

    with session(root, now) as (layout, current):
        doc: dict[str, Any] = {
            "state": current.phase,
            "burned": dict(sorted(current.burned.items())),
        }
        p, a = current.pending, current.active
        if p is not None:
            doc["pending"] = {
                "request_id": p.request_id, "scope": p.scope, "ttl_seconds": p.ttl_seconds,
                "requester": p.requester, "approvals": list(p.approvals), "needed": p.needed,
                "not_after": format_time(p.not_after),
            }  # fmt: skip
        if a is not None:
            doc["active"] = {
                "request_id": a.request_id, "scope": a.scope,
                "expires_at": format_time(a.expires_at),
                # the earlier of the wall-clock and the boot-clock end
                "seconds_left": grant.seconds_left(a.to_dict(), now, clock.boot(root)),
            }  # fmt: skip
        try:
            image = load_image(layout)
            doc["image"] = {
                "name": image.name,
                "version": image.version,
                "manifest_digest": image.manifest_digest,
            }
        except BreakglassError as e:
            doc["image"] = {"error": e.message}
    return doc


def _is(value: object, kind: type) -> bool:
    """``type(value) is kind``: a bool is no int here, so the document is what the full path gives."""
    return type(value) is kind


def _listing(runtime: str) -> dict[str, bool] | None:
    """Every non-directory under ``runtime`` (``wipe.runtime_files``): path -> is a regular file.

    None when ``runtime`` itself is not a directory (settling wipes that).
    """
    import stat

    try:
        st = os.lstat(runtime)
    except FileNotFoundError:
        return {}
    if not stat.S_ISDIR(st.st_mode):
        return None
    found: dict[str, bool] = {}
    stack = [runtime]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    found[entry.path] = entry.is_file(follow_symlinks=False)
    return found


def fast_describe(root: str) -> dict[str, Any] | None:
    """``describe(root, now)`` for a host that needs no settling; None when it may (or if unsure).

    Never writes: it takes the host lock only if the state directory and the lock file
    are already as settling would leave them.
    """
    import fcntl
    import stat
    from datetime import UTC, datetime

    from builder.host import clock

    if clock.frozen() or not os.path.isfile(os.path.join(root, _MANIFEST)):
        return None  # the full command reads a frozen clock, and says what is not a host
    now = datetime.now(UTC).replace(microsecond=0)
    state_dir = os.path.join(root, _STATE_DIR)
    try:
        st = os.lstat(state_dir)
        # builder.host.safepath.ensure_dir's checks, without its chmod
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            return None
        if stat.S_IMODE(st.st_mode) != 0o700:
            return None
        fd = os.open(os.path.join(state_dir, "lock"), os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
            return None
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _settled(root, now)
    finally:
        os.close(fd)


def _settled(root: str, now: datetime) -> dict[str, Any] | None:
    """The status document when settling would change nothing; call with the lock held."""
    from builder.core import bounded
    from builder.core.errors import BreakglassError
    from builder.core.utctime import canonical_time
    from builder.host.safepath import read_file

    try:
        raw = read_file(
            os.path.join(root, _STATE_DIR, "state.json"), limit=bounded.cap("host state")
        )
    except FileNotFoundError:
        raw = None
    except OSError:
        return None
    try:
        doc = (
            bounded.load_json(raw, "host state")
            if raw is not None
            else {"format": "breakglass-host-state/1", "phase": "DORMANT", "pending": None,
                  "active": None, "burned": {}}
        )  # fmt: skip
    except BreakglassError:
        return None
    # builder.host.state.HostState.from_dict, strictly: every value already in the form it writes
    if not isinstance(doc, dict) or doc.keys() != _STATE_KEYS:
        return None
    phase, p, a, burned = doc["phase"], doc["pending"], doc["active"], doc["burned"]
    if doc["format"] != "breakglass-host-state/1" or not _is(burned, dict):
        return None
    if not all(_is(k, str) and _is(v, str) for k, v in burned.items()):
        return None
    listing = _listing(os.path.join(root, _RUNTIME))
    if listing is None:
        return None
    from builder.host.image import read_image

    try:
        image = read_image(os.path.join(root, _MANIFEST))
    except BreakglassError:
        return None  # the full command words it
    found = {os.path.relpath(path, root): regular for path, regular in listing.items()}
    out: dict[str, Any] = {"state": phase, "burned": dict(sorted(burned.items()))}
    if phase == "DORMANT" and p is None and a is None:
        if found:
            return None  # plaintext while dormant: settling wipes it
    elif phase == "PENDING" and _is(p, dict) and a is None:
        fields = ("request_id", "scope", "ttl_seconds", "requester", "not_after", "needed")
        kinds = (str, str, int, str, str, int)
        if not all(k in p and _is(p[k], kind) for k, kind in zip(fields, kinds, strict=True)):
            return None
        approvals, not_after = p.get("approvals"), canonical_time(p["not_after"])
        if not _is(approvals, list) or not all(_is(x, str) for x in approvals):
            return None
        if not_after is None or now > not_after:
            return None  # expired: settling drops it
        identity = f"{_RUNTIME}/.request-{p['request_id']}.key"
        if found != {identity: True}:
            return None  # stray plaintext, or the identity missing: settling recovers
        out["pending"] = {
            "request_id": p["request_id"], "scope": p["scope"], "ttl_seconds": p["ttl_seconds"],
            "requester": p["requester"], "approvals": list(approvals), "needed": p["needed"],
            "not_after": p["not_after"],
        }  # fmt: skip
    elif phase == "ACTIVE" and p is None and _is(a, dict):
        seconds_left = _active_left(root, a, found, now, image)
        if seconds_left is None:
            return None
        out["active"] = {
            "request_id": a["request_id"], "scope": a["scope"], "expires_at": a["expires_at"],
            "seconds_left": seconds_left,
        }  # fmt: skip
    else:
        return None
    out["image"] = {
        "name": image.name,
        "version": image.version,
        "manifest_digest": image.manifest_digest,
    }
    return out


def _active_left(
    root: str, a: dict[str, Any], found: dict[str, bool], now: datetime, image: HostImage
) -> int | None:
    """Seconds left of an ACTIVE record that every check of "Host trust" honours, else None."""
    from builder.core.errors import BreakglassError
    from builder.core.utctime import canonical_time
    from builder.host import audit, clock, grant

    kinds = {"request_id": str, "scope": str, "activated_at": str, "expires_at": str,
             "files": list, "boot_id": str, "boot_seconds": int}  # fmt: skip
    if a.keys() != grant.KEYS or not all(_is(a[k], kind) for k, kind in kinds.items()):
        return None
    files = a["files"]
    if not all(_is(f, str) for f in files):
        return None
    if canonical_time(a["activated_at"]) is None or canonical_time(a["expires_at"]) is None:
        return None
    # crash recovery: exactly the record's plaintext and the grant, all regular files
    if found != {**dict.fromkeys(files, True), grant.GRANT: True}:
        return None
    # 1. the grant equals the state's record
    if grant.read(root) != a:
        return None
    # 2. the scope's ttl cap
    scope = image.scopes.get(a["scope"])
    span = grant.span_seconds(a)
    if scope is None or span is None or span > scope.max_ttl_seconds:
        return None
    # 3. the log verifies, its last activated event matches, and no reseal or activation is
    # half done (the last event)
    state_dir = os.path.join(root, _STATE_DIR)
    try:
        _, _, _, activated, last = audit.verify_chain(
            os.path.join(state_dir, "audit.jsonl"),
            os.path.join(state_dir, "audit.head"),
            strict=True,
        )
    except BreakglassError:
        return None
    if activated is None or last is None:
        return None
    details = activated["details"]
    if (
        activated.get("request_id") != a["request_id"]
        or activated.get("scope") != a["scope"]
        or details.get("activated_at") != a["activated_at"]
        or details.get("expires_at") != a["expires_at"]
    ):
        return None
    if last.get("request_id") == a["request_id"] and last.get("event") in (
        "resealed", "expired", "activating"
    ):  # fmt: skip
        return None
    # 4. both clocks
    boot = clock.boot(root)
    if grant.window_problem(a, now, boot) is not None:
        return None
    return grant.seconds_left(a, now, boot)


def render(doc: dict[str, Any]) -> str:
    """The status document as text; names from the host's files are escaped (``builder.core.display``)."""
    lines = []
    if "pending" in doc:
        p = doc["pending"]
        lines.append(
            f"PENDING: request {p['request_id']} scope {p['scope']}, "
            f"{len(p['approvals'])} of {p['needed']} approvals, expires {p['not_after']}"
        )
    elif "active" in doc:
        a = doc["active"]
        lines.append(
            f"ACTIVE: scope {a['scope']} until {a['expires_at']} ({a['seconds_left']}s left)"
        )
    else:
        lines.append("DORMANT")
    if doc["burned"]:
        lines.append("burned: " + ", ".join(sorted(doc["burned"])))
    image = doc["image"]
    if "error" in image:
        lines.append(f"image: unreadable ({image['error']})")
    else:
        lines.append(f"image: {image['name']} {image['version']} ({image['manifest_digest']})")
    return "\n".join(escape(line) for line in lines)
