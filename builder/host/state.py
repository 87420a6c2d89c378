"""The host state machine, its file and its lock.

States (``var/lib/breakglass/state.json``, canonical JSON)::

    DORMANT --request-->                      PENDING(request id, approvals 0/k)
    PENDING --request-->                      PENDING (the newer request supersedes)
    PENDING --unseal, below quorum-->         PENDING (approvals x/k)
    PENDING --unseal, quorum met-->           ACTIVE(scope, expires_at); scope BURNED
    PENDING --not_after passed-->             DORMANT (request-expired)
    PENDING --reseal-->                       DORMANT (request-cancelled)
    ACTIVE  --expires_at passed (any command
              or tick)-->                     DORMANT (expired)
    ACTIVE  --reseal-->                       DORMANT (resealed)
    any partial state after a crash --next command--> consistent state (recovered)

A request while ACTIVE is out of order (StateError). BURNED is a per-scope
flag that only grows: the scope's credentials have been exposed and must be
rotated before the next build.

Every transition runs under an exclusive ``fcntl.flock`` on
``var/lib/breakglass/lock``, is one atomic write of ``state.json``
(``builder.fsio.write_atomic``), and appends one audit event.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

DORMANT = "DORMANT"
PENDING = "PENDING"
ACTIVE = "ACTIVE"
STATE_FORMAT = "breakglass-host-state/1"


@dataclass(frozen=True)
class Pending:
    request_id: str
    scope: str
    ttl_seconds: int
    requester: str
    not_after: datetime
    needed: int
    approvals: tuple[str, ...] = ()


@dataclass(frozen=True)
class Active:
    request_id: str
    scope: str
    activated_at: datetime
    expires_at: datetime
    files: tuple[str, ...]  # plaintext paths relative to the root, all under run/breakglass/


@dataclass(frozen=True)
class HostState:
    """What ``state.json`` says; exactly one of pending/active is set unless DORMANT."""

    phase: str = DORMANT
    pending: Pending | None = None
    active: Active | None = None
    burned: dict[str, str] = field(default_factory=dict)  # scope -> request id that burned it

    def dormant(self) -> HostState:
        return replace(self, phase=DORMANT, pending=None, active=None)

    @classmethod
    def from_dict(cls, doc: Any) -> HostState:
        """Parse the state file; raises InputError when it is malformed."""
        from builder.errors import InputError
        from builder.request import parse_time

        try:
            if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
                raise ValueError
            if set(doc) != {"format", "phase", "pending", "active", "burned"}:
                raise ValueError
            phase = doc["phase"]
            p, a = doc["pending"], doc["active"]
            pending = None
            if p is not None:
                pending = Pending(
                    str(p["request_id"]), str(p["scope"]), int(p["ttl_seconds"]), str(p["requester"]),
                    parse_time(p["not_after"], "state"), int(p["needed"]), tuple(p["approvals"]),
                )  # fmt: skip
            active = None
            if a is not None:
                active = Active(
                    str(a["request_id"]), str(a["scope"]), parse_time(a["activated_at"], "state"),
                    parse_time(a["expires_at"], "state"), tuple(a["files"]),
                )  # fmt: skip
            burned = {str(k): str(v) for k, v in dict(doc["burned"]).items()}
            expect = {DORMANT: (False, False), PENDING: (True, False), ACTIVE: (False, True)}[phase]
            if (pending is not None, active is not None) != expect:
                raise ValueError
        except (ValueError, KeyError, TypeError, InputError):
            raise InputError("the host state file is malformed") from None
        return cls(phase, pending, active, burned)

    def to_dict(self) -> dict[str, Any]:
        from builder.request import format_time

        p, a = self.pending, self.active
        return {
            "format": STATE_FORMAT,
            "phase": self.phase,
            "pending": None
            if p is None
            else {
                "request_id": p.request_id,
                "scope": p.scope,
                "ttl_seconds": p.ttl_seconds,
                "requester": p.requester,
                "not_after": format_time(p.not_after),
                "needed": p.needed,
                "approvals": list(p.approvals),
            },
            "active": None
            if a is None
            else {
                "request_id": a.request_id,
                "scope": a.scope,
                "activated_at": format_time(a.activated_at),
                "expires_at": format_time(a.expires_at),
                "files": list(a.files),
            },
            "burned": dict(self.burned),
        }


def _state_path(root: Path) -> Path:
    return root / "var/lib/breakglass/state.json"


def load(root: Path) -> HostState:
    """The current state; DORMANT when no state file exists yet. Raises InputError if malformed."""
    from builder import bounded
    from builder.errors import InputError

    try:
        raw = bounded.read(_state_path(root), "host state")
    except FileNotFoundError:
        return HostState()
    except OSError as e:
        raise InputError(f"cannot read the host state file ({e.strerror})") from None
    except InputError:
        raise InputError("the host state file is malformed") from None
    try:
        doc = bounded.load_json(raw, "host state")
    except InputError:
        raise InputError("the host state file is malformed") from None
    return HostState.from_dict(doc)


def save(root: Path, state: HostState) -> None:
    """One atomic, fsynced replacement of the state file."""
    from builder.canonical import dumps
    from builder.fsio import write_atomic

    write_atomic(_state_path(root), dumps(state.to_dict()), mode=0o600)


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold the host's exclusive lock; every state change happens inside it."""
    directory = root / "var/lib/breakglass"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _parse_z(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def active_scope(root: Path, now: datetime) -> str | None:
    """The scope that is ACTIVE and unexpired at ``now``, else None.

    Cheap and side-effect free: one read of ``state.json``, no lock, no
    expiry handling (a command that can change state does that). A missing or
    malformed state file means no active scope.
    """
    from builder import bounded
    from builder.errors import InputError

    try:
        doc = bounded.load_json(bounded.read(_state_path(root), "host state"), "host state")
        active = doc["active"] if doc.get("phase") == ACTIVE else None
    except (OSError, InputError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(active, dict):
        return None
    expires = _parse_z(active.get("expires_at"))
    scope = active.get("scope")
    if expires is None or not isinstance(scope, str) or now >= expires:
        return None
    return scope
