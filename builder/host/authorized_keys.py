"""``host authorized-keys USER``: the emergency account's key, only while its scope is open.

sshd runs this on every login attempt for the account (AuthorizedKeysCommand),
so it must be fast. ``fast_main`` answers the common cases with nothing but
``json`` and ``os``: it reads ``state.json`` and the manifest and prints the
key when the scope is ACTIVE and unexpired, nothing when the host is quiet.
Whenever anything needs a change (an expired window or request, plaintext
left by a crash) it returns None, and the full command settles the host
under the lock first. Nothing secret is ever printed: only public keys
from the manifest.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from builder import bounded
from builder.errors import InputError
from builder.host.clock import FROZEN_ENV

_RUNTIME = "run/breakglass"
_STATE = "var/lib/breakglass/state.json"


def keys_for(root: Path, scope: str | None, user: str) -> list[str]:
    """The public SSH keys the manifest lists for ``user`` in ``scope``; [] when none or unreadable."""
    if scope is None:
        return []
    try:
        raw = bounded.read(root / "etc/breakglass/manifest.json", "manifest")
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


def _quiet(root: Path, now: datetime) -> tuple[str | None] | None:
    """``(active scope or None,)`` when the host needs no settling now; None when it does or if unsure.

    Reads ``state.json`` itself rather than through ``builder.host.state`` to
    keep dataclasses and inspect out of the login path.
    """
    try:
        doc = bounded.load_json(bounded.read(root / _STATE, "host state"), "host state")
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
            expires = datetime.fromisoformat(active["expires_at"].replace("Z", "+00:00"))
            if now >= expires:
                return None
            allowed = {str(f) for f in active["files"]}
            scope = str(active["scope"])
            if not all(os.path.isfile(root / f) for f in allowed):
                return None
        elif phase == "PENDING":
            pending = doc["pending"]
            not_after = datetime.fromisoformat(pending["not_after"].replace("Z", "+00:00"))
            if now > not_after:
                return None
            allowed = {f"{_RUNTIME}/.request-{pending['request_id']}.key"}
        elif phase != "DORMANT":
            return None
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    runtime = root / _RUNTIME
    for base, _dirs, files in os.walk(runtime):
        for name in files:
            if os.path.relpath(os.path.join(base, name), root) not in allowed:
                return None
    return (scope,)


def fast_main(argv: list[str]) -> int | None:
    """Answer ``host authorized-keys [--root DIR] [--json] USER`` without click; None means "use the CLI".

    Returns the exit code when it answered. Any argument it does not
    recognise, and any host state that needs settling, returns None.
    """
    root, as_json, user = Path("/"), False, None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--root" and args:
            root = Path(args.pop(0))
        elif arg.startswith("--root="):
            root = Path(arg.split("=", 1)[1])
        elif arg == "--json":
            as_json = True
        elif arg.startswith("-") or user is not None:
            return None
        else:
            user = arg
    if user is None or os.environ.get(FROZEN_ENV):
        return None  # the full command reads (and warns about) a frozen clock
    now = datetime.now(UTC)
    quiet = _quiet(root, now)
    if quiet is None:
        return None
    emit(keys_for(root, quiet[0], user), user, as_json)
    return 0


def emit(keys: list[str], user: str, as_json: bool) -> None:
    import sys

    if as_json:
        sys.stdout.write(json.dumps({"user": user, "keys": keys}, sort_keys=True) + "\n")
    else:
        sys.stdout.write("".join(k + "\n" for k in keys))
    sys.stdout.flush()


def authorized_keys(root: Path, user: str, now: datetime) -> list[str]:
    """The full path: settle the host (expiry, recovery) under the lock, then answer."""
    from builder.host.expire import session
    from builder.host.state import active_scope

    with session(root, now):
        pass
    return keys_for(root, active_scope(root, now), user)
