"""The host's audit log: JSON Lines, each event chained to the hash of the line before it.

Each line is the canonical JSON of ``{seq, time, event, actor, request_id,
scope, details, prev}``; ``prev`` is ``sha256:<hex>`` of the previous line's
bytes (newline included), and of ``b""`` for the first line. ``audit.head``
beside the log records the last appended ``seq`` and line hash, so that an
edit or removal of the final lines is found too; for anchoring outside the
host, ``verify`` returns the head hash to copy into an incident ticket.

No secret is ever passed to ``append``: details carry names, digests and
reasons only. Appends hold the host lock (``builder.host.state``).
"""

from __future__ import annotations

import os

from builder.core import bounded
from builder.core.canonical import digest, dumps
from builder.core.errors import CheckFailed, InputError, StateError
from builder.core.utctime import format_time
from builder.host.safepath import ensure_dir, write_file

TYPE_CHECKING = False  # typing and dataclasses cost the start of every host command
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from datetime import datetime
    from os import PathLike
    from typing import Any

    from builder.host.layout import Layout

GENESIS = digest(b"")
# No event comes near this; a longer line is damage, and verify's memory stays bounded by it.
MAX_LINE = 1 << 20
FIELDS = ("seq", "time", "event", "actor", "request_id", "scope", "details", "prev")
_FIELD_SET = frozenset(FIELDS)
_RECORDED = b'"event":"session-recorded"'  # builder.host.record.EVENT_MARK, without importing it


def actor() -> str:
    """Who runs this command: the sudo user if any, else the effective user."""
    import pwd

    sudo = os.environ.get("SUDO_USER")
    try:
        name = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        name = f"uid:{os.geteuid()}"
    return f"{sudo} (via {name})" if sudo else name


def _last_line(path_fd: int) -> bytes | None:
    """The log's final line, read backwards from the end so appends stay O(1)."""
    size = os.lseek(path_fd, 0, os.SEEK_END)
    if size == 0:
        return None
    chunk = 4096
    buf = b""
    pos = size
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        buf = os.pread(path_fd, step, pos) + buf
        if buf.count(b"\n") >= 2 or pos == 0:
            break
        chunk *= 2
    body = buf[:-1] if buf.endswith(b"\n") else buf
    return body[body.rfind(b"\n") + 1 :] + (b"\n" if buf.endswith(b"\n") else b"")


def append(
    layout: Layout,
    now: datetime,
    event: str,
    *,
    request_id: str | None = None,
    scope: str | None = None,
    details: Mapping[str, Any] | None = None,
    who: str | None = None,
) -> str:
    """Append one event, fsynced, and return its line hash.

    Raises StateError when the log cannot be written or its tail is unreadable:
    callers that must not proceed unaudited (activation) stop there.
    """
    try:
        ensure_dir(layout.state_dir, 0o700, top=layout.state_dir, root=layout.root)
        fd = os.open(layout.audit, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o640)
        os.fchmod(fd, 0o640)  # the umask cuts O_CREAT's mode
    except OSError as e:
        raise StateError(f"cannot write the audit log ({e.strerror})") from None
    try:
        last = _last_line(fd)
        if last is None:
            seq, prev = 1, GENESIS
        else:
            try:
                seq = int(bounded.load_json(last, "audit line")["seq"]) + 1
            except (InputError, ValueError, KeyError, TypeError):
                raise StateError(
                    "the audit log's last line is unreadable; run `host audit verify`"
                ) from None
            prev = digest(last)
        line = dumps(
            {
                "seq": seq,
                "time": format_time(now),
                "event": event,
                "actor": who if who is not None else actor(),
                "request_id": request_id,
                "scope": scope,
                "details": dict(details or {}),
                "prev": prev,
            }
        )
        os.write(fd, line)
        os.fsync(fd)
    except OSError as e:
        raise StateError(f"cannot write the audit log ({e.strerror})") from None
    finally:
        os.close(fd)
    head = digest(line)
    try:
        write_file(layout.audit_head, dumps({"seq": seq, "head": head}), 0o640)
    except OSError as e:
        raise StateError(f"cannot write the audit head ({e.strerror})") from None
    return head


class Verified:
    """A log that verified: how many events, and the hash of the last line."""

    __slots__ = ("events", "head")

    def __init__(self, events: int, head: str) -> None:
        self.events, self.head = events, head

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Verified) and (other.events, other.head) == (
            self.events,
            self.head,
        )

    def __hash__(self) -> int:
        return hash((self.events, self.head))

    def __repr__(self) -> str:
        return f"Verified(events={self.events!r}, head={self.head!r})"


def _line_hasher(size: int) -> Any:
    """sha256 for the lines of a log of ``size`` bytes: OpenSSL's for a long log, else the built-in
    one (loading OpenSSL costs more than hashing a short log)."""
    if size < 256 * 1024:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found]
        except ImportError:  # pragma: no cover
            from hashlib import sha256
        return sha256
    try:
        from _hashlib import openssl_sha256  # hashlib's own constructor, without the wrapper

        return openssl_sha256
    except ImportError:  # pragma: no cover
        from hashlib import sha256

        return sha256


def verify(layout: Layout, *, expect_head: str | None = None, recordings: bool = False) -> Verified:
    """Check every line's encoding, sequence and chain; raises CheckFailed at the first bad line.

    With ``recordings`` (``host audit verify``), also every session recording a
    ``session-recorded`` event names against its digest (``builder.host.record.check``);
    the activation check leaves it off, so no host command hashes recordings.

    With ``expect_head`` (a hash anchored elsewhere), that hash must be some line of the log.
    Reads the log one line at a time and keeps only what the head check needs, so memory
    stays constant however long the log grows.
    """
    count, head, recorded, _, _ = verify_chain(
        layout.audit,
        layout.audit_head,
        expect_head=expect_head,
        recordings=recordings,
        on_empty=lambda: _check_not_emptied(layout),
    )
    if recorded:
        from builder.host import record

        record.check(layout, recorded)
    return Verified(count, head)


def verify_chain(
    log_path: str | PathLike[str],
    head_path: str | PathLike[str],
    *,
    expect_head: str | None = None,
    recordings: bool = False,
    on_empty: Callable[[], None] | None = None,
    strict: bool = False,
) -> tuple[int, str, list[Any], dict[str, Any] | None, dict[str, Any] | None]:
    """``verify`` given the paths of the log and its head record, up to the recordings.

    Returns the number of events, the head hash, the ``session-recorded`` events (with
    ``recordings``), the last ``activated`` event and the last event (parsed, or None).
    ``on_empty`` runs when the log has no line, before the head is judged. With
    ``strict``, every line must also pass ``read_events`` (the bounded reader's limits on
    numbers and depth, ``details`` an object), as the activation check requires.
    """
    head = _read_head(head_path)
    head_seq = _head_seq(head)
    prev = GENESIS
    count, at_head, anchored = 0, None, False
    recorded: list[Any] = []  # session-recorded events: their files are checked after the chain
    activated: dict[str, Any] | None = None
    event: dict[str, Any] | None = None
    try:
        log = open(log_path, "rb")  # noqa: SIM115 - closed below, also on errors
    except FileNotFoundError:
        log = None
    except OSError as e:
        raise CheckFailed(f"cannot read the audit log ({e.strerror})") from None
    try:
        sha256 = _line_hasher(os.fstat(log.fileno()).st_size if log is not None else 0)
        n = 0
        while log is not None and (line := log.readline(MAX_LINE + 1)):
            n += 1
            if len(line) > MAX_LINE:
                raise CheckFailed(f"audit log line {n}: longer than any event ({MAX_LINE} bytes)")
            event = _check_line(n, line, prev)
            if strict:
                _check_event(n, line)
            prev = "sha256:" + sha256(line).hexdigest()
            count = n
            if n == head_seq:
                at_head = prev
            anchored = anchored or prev == expect_head
            if recordings and _RECORDED in line:
                recorded.append(event)
            if event["event"] == "activated":
                activated = event if isinstance(event["details"], dict) else None
    except OSError as e:
        raise CheckFailed(f"cannot read the audit log ({e.strerror})") from None
    finally:
        if log is not None:
            log.close()
    if count == 0 and on_empty is not None:
        on_empty()
    _check_head(head, count, at_head)
    if expect_head is not None and not anchored:
        raise CheckFailed("the anchored head hash is not in the audit log")
    return count, prev, recorded, activated, event


def _check_event(n: int, line: bytes) -> None:
    """What ``read_events`` requires of line ``n`` beyond ``_check_line``; raises CheckFailed."""
    try:
        event = bounded.load_json(line, "audit line")
    except InputError as e:
        raise CheckFailed(f"audit log line {n}: {e.message}") from None
    if not isinstance(event["details"], dict):
        raise CheckFailed(f"audit log line {n}: not an audit event")


def _check_not_emptied(layout: Layout) -> None:
    """An empty log is fine on a fresh host, not beside a state file or requests it should record."""
    has_state = layout.state.exists() or layout.state.is_symlink()
    has_requests = layout.requests.is_dir() and any(layout.requests.iterdir())
    if has_state or has_requests:
        what = "missing" if not layout.audit.exists() else "empty"
        raise CheckFailed(
            f"the audit log is {what} but the host has "
            + ("a state file" if has_state else "requests")
            + " (the log was removed or truncated)"
        )


def _check_line(n: int, line: bytes, prev: str) -> dict[str, Any]:
    """One line of the log: an audit event in canonical form, numbered ``n``, chained to ``prev``.

    Returns the parsed event."""
    where = f"audit log line {n}"  # ~0.1 µs; clearer than building it in each branch
    if not line.endswith(b"\n"):
        raise CheckFailed(f"{where}: truncated (no newline)")
    parsed, event = _parse_line(line)
    if not parsed:
        raise CheckFailed(f"{where}: not json")
    if not isinstance(event, dict) or event.keys() != _FIELD_SET:
        raise CheckFailed(f"{where}: not an audit event")
    try:
        canonical = _canonical(event)
    except (UnicodeEncodeError, TypeError, ValueError):  # a lone surrogate ("\ud800"), NaN
        raise CheckFailed(f"{where}: not an audit event (invalid unicode or number)") from None
    if canonical != line:
        raise CheckFailed(f"{where}: not in canonical form (edited)")
    if event["seq"] != n:
        raise CheckFailed(f"{where}: sequence number {event['seq']} where {n} was expected")
    if event["prev"] != prev:
        if n == 1:
            raise CheckFailed(f"{where}: does not start the chain (lines removed before it)")
        raise CheckFailed(
            f"audit log line {n - 1}: edited, or lines removed or moved after it "
            f"(line {n} does not chain to it)"
        )
    return event


class _Plain:
    """What json's C scanner reads from a default ``json.JSONDecoder()``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(
        {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__
    )


def _plain_scanner() -> Callable[[str, int], tuple[Any, int]]:
    """``json.JSONDecoder().scan_once`` without importing json (and with it ``re``)."""
    try:
        from _json import make_scanner
    except ImportError:  # pragma: no cover - CPython always has it
        import json

        return json.JSONDecoder().scan_once  # type: ignore[attr-defined,no-any-return]
    return make_scanner(_Plain())  # type: ignore[arg-type]


_SCAN = _plain_scanner()


def _make_canonical() -> Callable[[Any], bytes]:
    """``canonical.dumps`` for parsed JSON, with json's C encoder built once.

    ``JSONEncoder.encode`` builds a new C encoder on every call, a third of the
    cost of a line; this one is built with the same settings (sorted keys, the
    canonical separators, UTF-8 strings) and no cycle check, which parsed JSON
    cannot need. ``test_host_audit_stream`` holds it equal to ``dumps``.
    """
    try:
        from _json import encode_basestring, make_encoder
    except ImportError:  # pragma: no cover - CPython always has it
        return dumps

    def refuse(value: object) -> object:
        raise TypeError(f"not json: {type(value).__name__}")

    encode = make_encoder(None, refuse, encode_basestring, None, ":", ",", True, False, True)

    def canonical(document: Any) -> bytes:
        return "".join(encode(document, 0)).encode("utf-8") + b"\n"

    return canonical


_canonical = _make_canonical()


def _parse_line(line: bytes) -> tuple[bool, Any]:
    """``(True, json.loads(line))``, or ``(False, None)`` when it is not json.

    A canonical line takes the C scanner alone; anything else (whitespace,
    trailing data, another encoding) is judged by ``json.loads``.
    """
    try:
        text = line.decode("utf-8")
        value, end = _SCAN(text, 0)
        if end == len(text) - 1:
            return True, value
    except (UnicodeDecodeError, StopIteration, ValueError, RecursionError, SystemError):
        pass  # SystemError: the C scanner words errors with json.decoder, not imported here
    try:
        # the slow path is the bounded reader: depth, numbers, unicode and duplicate keys
        return True, bounded.load_json(line, "audit line")
    except InputError:
        return False, None


def _read_head(path: str | PathLike[str]) -> bytes | None:
    """The head record's bytes, None when there is none; read before the log, once."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return b""  # unreadable: judged malformed by _check_head


def _head_seq(raw: bytes | None) -> int | None:
    """The line number the head record names, if it can be read (``_check_head`` judges it)."""
    try:
        return int(bounded.load_json(raw or b"", "audit head")["seq"])
    except (InputError, ValueError, KeyError, TypeError):
        return None


def _check_head(raw: bytes | None, count: int, at_head: str | None) -> None:
    """The head record against the log: ``count`` lines, ``at_head`` the hash of the line it names."""
    if raw is None:
        if count:
            raise CheckFailed("audit head record is missing")
        return
    try:
        head = bounded.load_json(raw, "audit head")
        seq, value = int(head["seq"]), str(head["head"])
    except (InputError, ValueError, KeyError, TypeError):
        raise CheckFailed("audit head record is malformed") from None
    # A crash between the append and the head update leaves the head one line behind: accepted.
    if seq < 1:
        raise CheckFailed("audit head record is malformed")
    if seq > count:
        raise CheckFailed(
            f"audit log ends at line {count} but the head records line {seq} (lines removed)"
        )
    if at_head != value or seq < count - 1:
        raise CheckFailed(f"audit log line {seq}: does not match the recorded head (edited)")


def read_events(layout: Layout) -> list[dict[str, Any]]:
    """Every event as parsed JSON, for ``audit show``.

    Each is an object with exactly the audit fields and an object for
    ``details``; any other line is CheckFailed.
    """
    try:
        data = layout.audit.read_bytes()
    except FileNotFoundError:
        return []
    events = []
    for n, line in enumerate(data.splitlines(), start=1):
        try:
            event = bounded.load_json(line, "audit line")
        except bounded.NotJson:
            raise CheckFailed(f"audit log line {n}: not json") from None
        except InputError as e:
            raise CheckFailed(f"audit log line {n}: {e.message}") from None
        if (
            not isinstance(event, dict)
            or set(event) != set(FIELDS)
            or not isinstance(event["details"], dict)
        ):
            raise CheckFailed(f"audit log line {n}: not an audit event")
        events.append(event)
    return events
