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
(``builder.host.safepath.write_file``), and appends one audit event.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from builder.core.record import field, record, replace

DORMANT = "DORMANT"
PENDING = "PENDING"
ACTIVE = "ACTIVE"
STATE_FORMAT = "breakglass-host-state/1"


@record
class Pending:
    """The pending request as the state file holds it."""  # (a docstring spares inspect.signature)

    request_id: str
    scope: str
    ttl_seconds: int
    requester: str
    not_after: datetime
    needed: int
    approvals: tuple[str, ...] = ()


@record
class Active:
    """The open window as the state file (and the activation grant) hold it."""

    request_id: str
    scope: str
    activated_at: datetime
    expires_at: datetime
    files: tuple[str, ...]  # plaintext paths relative to the root, all under run/breakglass/
    boot_id: str = ""  # the kernel's boot id at activation
    boot_seconds: int = -1  # CLOCK_BOOTTIME at activation, whole seconds (floored)

    def to_dict(self) -> dict[str, Any]:
        """The record as the state file and the activation grant hold it."""
        from builder.approval.request import format_time

        return {
            "request_id": self.request_id,
            "scope": self.scope,
            "activated_at": format_time(self.activated_at),
            "expires_at": format_time(self.expires_at),
            "files": list(self.files),
            "boot_id": self.boot_id,
            "boot_seconds": self.boot_seconds,
        }


@record
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
        from builder.approval.request import parse_time
        from builder.core.errors import InputError

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
                # a record without a boot reading still parses, so that settling can reseal it
                active = Active(
                    str(a["request_id"]), str(a["scope"]), parse_time(a["activated_at"], "state"),
                    parse_time(a["expires_at"], "state"), tuple(a["files"]),
                    str(a.get("boot_id", "")), int(a.get("boot_seconds", -1)),
                )  # fmt: skip
            burned = {str(k): str(v) for k, v in dict(doc["burned"]).items()}
            expect = {DORMANT: (False, False), PENDING: (True, False), ACTIVE: (False, True)}[phase]
            if (pending is not None, active is not None) != expect:
                raise ValueError
        except (ValueError, KeyError, TypeError, InputError):
            raise InputError("the host state file is malformed") from None
        return cls(phase, pending, active, burned)

    def to_dict(self) -> dict[str, Any]:
        from builder.approval.request import format_time

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
            "active": None if a is None else a.to_dict(),
            "burned": dict(self.burned),
        }


def _state_path(root: Path) -> Path:
    return root / "var/lib/breakglass/state.json"


def load(root: Path) -> HostState:
    """The current state; DORMANT when no state file exists yet. Raises InputError if malformed."""
    from builder.core import bounded
    from builder.core.errors import InputError
    from builder.host.safepath import read_file

    try:
        raw = read_file(_state_path(root), limit=bounded.cap("host state"))
    except FileNotFoundError:
        return HostState()
    except OSError:
        raise InputError("the host state file is unreadable (a link or not a file)") from None

    path = _state_path(root)
    # the state is not trusted by itself: moving it aside makes the host DORMANT, and the
    # next command wipes any plaintext it finds (crash recovery), so that is the safe way out
    hint = f"move it aside (mv {path} {path}.bad) and run `breakglass host tick`"
    try:
        doc = bounded.load_json(raw, "host state")
    except InputError:
        raise InputError("the host state file is malformed", where=str(path), hint=hint) from None
    try:
        return HostState.from_dict(doc)
    except InputError as e:
        raise InputError(e.message, where=str(path), hint=hint) from None


def save(root: Path, state: HostState) -> None:
    """One atomic, fsynced replacement of the state file."""
    from builder.core.canonical import dumps
    from builder.host.safepath import ensure_dir, write_file

    path = _state_path(root)
    ensure_dir(path.parent, 0o700, top=path.parent, root=root)
    write_file(path, dumps(state.to_dict()), 0o600)


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold the host's exclusive lock; every state change happens inside it.

    Raises InputError when ``root`` holds no image (nothing is written then),
    StateError when the state directory is unsafe (see ``builder.host.safepath``).
    """
    from builder.host.layout import require_image
    from builder.host.safepath import ensure_dir

    require_image(root)
    directory = root / "var/lib/breakglass"
    ensure_dir(directory, 0o700, top=directory, root=root)
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def active_scope(root: Path, now: datetime) -> str | None:
    """The scope that is ACTIVE, backed by its unseal and open at ``now``, else None.

    Side-effect free: no lock, no reseal (a settling command does that). The
    active record must pass every check of ``builder.host.activation``: its
    grant in the runtime directory, the scope's ttl cap, the matching
    ``activated`` event of a verifying audit log, and both clocks. A missing,
    malformed or failing record means no active scope.
    """
    from builder.core.errors import BreakglassError
    from builder.host import activation, clock
    from builder.host.layout import Layout

    try:
        current = load(root)
    except BreakglassError:
        return None
    a = current.active
    if current.phase != ACTIVE or a is None:
        return None
    if activation.problem(Layout(root), a, now, clock.boot(root)) is not None:
        return None
    return a.scope
