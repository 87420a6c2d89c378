"""``host authorized-keys USER``: the emergency account's key, only while its scope is open.

sshd runs this on every login attempt for the account (AuthorizedKeysCommand),
as the unprivileged ``AuthorizedKeysCommandUser`` ``breakglass-akc``, so it
must be fast and must not need root. ``fast_main`` answers with nothing but
``os``, ``datetime`` and json's C scanner (no ``pathlib``, ``typing`` or ``re``):

- run by a user who may not settle the host (the AKC user), it reads only
  the activation grant in the runtime directory and the public manifest, and
  prints the key while the grant's window is open on both clocks and within
  the scope's ttl cap (``open_scope``); it never hands off, and leaves
  settling to the timer and the other commands;
- run by the host's owner (root, or the test user under ``--root``), it also
  requires ``state.json`` to equal the grant and the audit log's last
  ``activated`` event to match, and whenever anything needs a change (a
  closed window, a forged record, plaintext left by a crash) it returns
  None, so that the full command settles the host under the lock first.

Nothing secret is ever printed: only public keys from the manifest.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from builder.core import bounded
from builder.core.errors import InputError
from builder.host import grant
from builder.host.clock import FROZEN_ENV, boot

TYPE_CHECKING = False  # typing itself costs every login
if TYPE_CHECKING:
    from os import PathLike
    from pathlib import Path

    Root = str | PathLike[str]

_RUNTIME = "run/breakglass"
_STATE_DIR = "var/lib/breakglass"
_STATE = f"{_STATE_DIR}/state.json"
_AUDIT = f"{_STATE_DIR}/audit.jsonl"
_MANIFEST = "etc/breakglass/manifest.json"
_TAIL_BYTES = 64 * 1024  # the activated event is among the last few lines while ACTIVE


def keys_for(root: Root, scope: str | None, user: str) -> list[str]:
    """The public SSH keys the manifest lists for ``user`` in ``scope``; [] when none or unreadable."""
    if scope is None:
        return []
    try:
        raw = bounded.read(os.path.join(root, _MANIFEST), "manifest")
        scopes = bounded.load_json(raw, "manifest")["scopes"]
    except (OSError, InputError, KeyError, TypeError):
        return []
    keys = []
    for s in scopes if isinstance(scopes, list) else []:
        if not isinstance(s, dict) or s.get("name") != scope or s.get("emergency_user") != user:
            continue
        credentials = s.get("credentials")
        for c in credentials if isinstance(credentials, list) else []:
            if not isinstance(c, dict):
                continue
            public, kind = c.get("public"), c.get("kind")
            if (
                isinstance(public, str)
                and isinstance(kind, str)
                and kind.startswith("ssh-")
                and "\n" not in public
            ):
                keys.append(public)
    return keys


def can_settle(root: Root) -> bool:
    """Whether this process may change the host: it owns the state directory (root, on a host).

    The unprivileged ``AuthorizedKeysCommandUser`` may not: it answers from
    the grant and leaves settling to the timer and the other commands.
    """
    try:
        return os.stat(os.path.join(root, _STATE_DIR)).st_uid == os.geteuid()
    except OSError:
        return os.geteuid() == 0 or os.access(root, os.W_OK)


def open_scope(root: Root, now: datetime, boot: tuple[str, int]) -> str | None:
    """The scope the activation grant opens at ``now``, or None.

    What the unprivileged login path can check: the grant (trusted by where
    it is: only the unseal writes the runtime directory), the scope's ttl cap
    in the manifest, and both clocks in the same boot.
    """
    record = grant.read(root)
    if record is None or grant.window_problem(record, now, boot) is not None:
        return None
    try:
        manifest = bounded.load_json(
            bounded.read(os.path.join(root, _MANIFEST), "manifest"), "manifest"
        )
    except (OSError, InputError):
        return None
    cap, span = grant.scope_cap(manifest, record["scope"]), grant.span_seconds(record)
    if cap is None or span is None or span > cap:
        return None
    scope = record["scope"]
    return scope if isinstance(scope, str) else None


def _last_activated(root: Root) -> dict[str, object] | None:
    """The log's last ``activated`` event, read backwards from the end (no chain check)."""
    try:
        with open(os.path.join(root, _AUDIT), "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        if b'"event":"activated"' not in line:
            continue
        try:
            event = bounded.load_json(line, "audit line")
        except InputError:
            return None
        return event if isinstance(event, dict) and event.get("event") == "activated" else None
    return None


def _quiet(root: Root, now: datetime, boot: tuple[str, int]) -> tuple[str | None] | None:
    """``(open scope or None,)`` when the host needs no settling now; None when it does or if unsure.

    For a process that may settle. Reads ``state.json`` itself rather than
    through ``builder.host.state`` to keep dataclasses and inspect out of the
    login path. ACTIVE also needs the grant to equal the state's record and
    the audit log's last ``activated`` event to match it; the full chain is
    verified by the settling commands.
    """
    try:
        doc = bounded.load_json(
            bounded.read(os.path.join(root, _STATE), "host state"), "host state"
        )
    except FileNotFoundError:
        doc = {"phase": "DORMANT", "pending": None, "active": None}
    except (OSError, InputError):
        return None
    if not isinstance(doc, dict):
        return None
    phase = doc.get("phase")
    allowed: set[str] = set()
    scope = None
    try:
        if phase == "ACTIVE":
            active = doc["active"]
            if grant.read(root) != active or open_scope(root, now, boot) != active["scope"]:
                return None
            event = _last_activated(root)
            details = event.get("details") if event else None
            if (
                event is None
                or event.get("request_id") != active["request_id"]
                or not isinstance(details, dict)
                or details.get("activated_at") != active["activated_at"]
                or details.get("expires_at") != active["expires_at"]
            ):
                return None
            allowed = {str(f) for f in active["files"]} | {grant.GRANT}
            scope = str(active["scope"])
            if not all(os.path.isfile(os.path.join(root, f)) for f in active["files"]):
                return None
        elif phase == "PENDING":
            pending = doc["pending"]
            not_after = grant.parse_time(pending["not_after"])
            if not_after is None or now > not_after:
                return None
            allowed = {f"{_RUNTIME}/.request-{pending['request_id']}.key"}
        elif phase != "DORMANT":
            return None
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    runtime = os.path.join(root, _RUNTIME)
    if os.path.islink(runtime):
        return None
    for base, dirs, files in os.walk(runtime):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(base, d))]:
            if os.path.relpath(os.path.join(base, name), root) not in allowed:
                return None
    return (scope,)


def fast_main(argv: list[str]) -> int | None:
    """Answer ``host authorized-keys [--root DIR] [--json] USER`` without click; None means "use the CLI".

    Returns the exit code when it answered. Any argument it does not
    recognise, and any host state that needs settling (when this process may
    settle), returns None. The unprivileged AKC user always answers here.
    """
    root, as_json, user = "/", False, None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--root" and args:
            root = args.pop(0)
        elif arg.startswith("--root="):
            root = arg.split("=", 1)[1]
        elif arg == "--json":
            as_json = True
        elif arg.startswith("-") or user is not None:
            return None
        else:
            user = arg
    if (
        user is None
        or os.environ.get(FROZEN_ENV)
        or not os.path.isfile(os.path.join(root, _MANIFEST))
    ):
        return None  # the full command reads a frozen clock, and says what is not a host
    now = datetime.now(UTC).replace(microsecond=0)
    boot_now = boot()
    if not can_settle(root):
        emit(keys_for(root, open_scope(root, now, boot_now), user), user, as_json)
        return 0
    quiet = _quiet(root, now, boot_now)
    if quiet is None:
        return None
    emit(keys_for(root, quiet[0], user), user, as_json)
    return 0


def emit(keys: list[str], user: str, as_json: bool) -> None:
    import sys

    if as_json:
        import json

        sys.stdout.write(json.dumps({"user": user, "keys": keys}, sort_keys=True) + "\n")
    else:
        sys.stdout.write("".join(k + "\n" for k in keys))
    sys.stdout.flush()


def authorized_keys(root: Path, user: str, now: datetime) -> list[str]:
    """The full path: settle the host (recovery, forgery, expiry) under the lock, then answer.

    A process that may not settle (the unprivileged AKC user) answers from the
    grant alone. Raises InputError when ``root`` is not a host.
    """
    from builder.host import clock
    from builder.host.expire import session
    from builder.host.layout import require_image
    from builder.host.state import active_scope

    require_image(root)
    if not can_settle(root):
        return keys_for(root, open_scope(root, now, clock.boot(root)), user)
    with session(root, now):
        pass
    return keys_for(root, active_scope(root, now), user)
