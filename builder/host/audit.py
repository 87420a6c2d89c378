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

    # a checked part of the log: (lines, hash of the last, hash of the head's line, anchored,
    # recorded, last activated, last event)
    _Part = tuple[
        int, str, str | None, bool, list[Any], dict[str, Any] | None, dict[str, Any] | None
    ]

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
    try:
        with open(log_path, "rb") as log:
            size = os.fstat(log.fileno()).st_size
            bounds = _split(log, size)
    except FileNotFoundError:
        size, bounds = 0, []
    except OSError as e:
        raise CheckFailed(f"cannot read the audit log ({e.strerror})") from None
    check = _Check(log_path, head_seq, expect_head, recordings, strict, _line_hasher(size))
    part = check.parts(bounds) if bounds else check.part(0, None, 1, GENESIS)
    count, prev, at_head, anchored, recorded, activated, event = part
    if count == 0 and on_empty is not None:
        on_empty()
    _check_head(head, count, at_head)
    if expect_head is not None and not anchored:
        raise CheckFailed("the anchored head hash is not in the audit log")
    return count, prev, recorded, activated, event


_SPLIT_BYTES = 32 << 20  # below this, one process verifies the whole log
_BLOCK = 1 << 20  # bytes read at a time; with the carried partial line, what a part holds
_MAX_PARTS = 4


def _split(log: Any, size: int) -> list[int]:
    """Where to cut a long log for one process per core: offsets just after a newline.

    [] for a short log or one core. Each part then starts with a whole line.
    """
    if size < _SPLIT_BYTES:
        return []
    parts = min(len(os.sched_getaffinity(0)), _MAX_PARTS)  # the cores this process may use (Linux)
    bounds: list[int] = []
    for i in range(1, parts):
        # a later part starts by counting the lines before it: give it a little less to check
        target = size * i // parts + size // (parts * 16)
        chunk = os.pread(log.fileno(), MAX_LINE + 1, target - 1)
        cut = chunk.find(b"\n")
        if cut < 0:
            break  # no newline for longer than a line may be: the sequential check words it
        at = target + cut
        if at >= size or (bounds and at <= bounds[-1]):
            break
        bounds.append(at)
    return bounds


class _Check:
    """The chain check of ``verify_chain``, over the whole log or parts of it (one per core).

    A part knows where it starts (a byte offset just after a newline); a process that
    checks a later part counts the lines before it and hashes the line before it, so it
    numbers and chains its lines exactly as one pass from the start would, and its first
    error is the error one pass would report if no earlier part has one.
    """

    # what ``part`` has found so far in its part (``part`` resets them, ``_lines`` adds to them)
    at_head: str | None
    anchored: bool
    recorded: list[Any]
    activated: dict[str, Any] | None
    event: dict[str, Any] | None

    def __init__(
        self,
        log_path: str | PathLike[str],
        head_seq: int | None,
        expect_head: str | None,
        recordings: bool,
        strict: bool,
        sha256: Any,
    ) -> None:
        self.log_path, self.head_seq, self.expect_head = log_path, head_seq, expect_head
        self.recordings, self.strict, self.sha256 = recordings, strict, sha256

    def part(self, start: int, end: int | None, n0: int, prev: str) -> _Part:
        """Lines from byte ``start`` (line ``n0``, chained to ``prev``) to ``end`` (None: the end).

        Reads blocks of whole lines (``_lines`` checks them); the partial line at a block's end
        is carried into the next, and can never grow past ``MAX_LINE`` + 1 bytes.
        """
        self.at_head, self.anchored = None, False
        self.recorded = []  # session-recorded events: their files are checked after the chain
        self.activated = self.event = None
        n = n0 - 1
        left = -1 if end is None else end - start
        tail = b""
        try:
            with open(self.log_path, "rb", buffering=0) as log:
                log.seek(start)
                while True:
                    if left == 0 and tail:
                        # the part ends just after a newline that ``_split`` saw: the log was
                        # rewritten under the check (appends never touch what was written)
                        raise CheckFailed("the audit log changed while it was being verified")
                    data = log.read(_BLOCK if left < 0 else min(_BLOCK, left)) if left else b""
                    if not data:
                        if tail:  # a last line without its newline: checked (and refused) too
                            n, prev = self._lines(tail, len(tail), n, prev)
                        break
                    left -= len(data) if left > 0 else 0
                    block = tail + data if tail else data
                    cut = block.rfind(b"\n") + 1
                    n, prev = self._lines(block, cut, n, prev)
                    tail = block[cut:]
                    if len(tail) > MAX_LINE:
                        raise CheckFailed(
                            f"audit log line {n + 1}: longer than any event ({MAX_LINE} bytes)"
                        )
        except FileNotFoundError:
            pass  # no log: no lines
        except OSError as e:
            raise CheckFailed(f"cannot read the audit log ({e.strerror})") from None
        return (
            n - n0 + 1,
            prev,
            self.at_head,
            self.anchored,
            self.recorded,
            self.activated,
            self.event,
        )

    def _lines(self, block: bytes, cut: int, n: int, prev: str) -> tuple[int, str]:
        """The lines of ``block[:cut]`` (whole lines, but for a log's unterminated last one),
        the first numbered ``n + 1`` and chained to ``prev``; the number and hash of the last.

        An ASCII block is decoded once, and each line whose JSON value is followed by its
        newline is checked in place: exactly ``_check_line``'s conditions, with a slice of
        that text for the canonical comparison. Any other line (or any condition that fails)
        goes through ``_check_line`` itself, which words the error, so both paths report the
        same first error.
        """
        sha256, head_seq, expect_head = self.sha256, self.head_seq, self.expect_head
        recordings, strict = self.recordings, self.strict
        scan, encode, fields = _SCAN, _ENCODE, _FIELD_SET
        text = block.decode("ascii") if block.isascii() else None
        event: Any = None
        pos = 0
        while pos < cut:
            n += 1
            stop = -1
            if text is not None:
                try:
                    event, stop = scan(text, pos)
                    if not (
                        text[stop] == "\n"
                        and stop - pos < MAX_LINE
                        and event.keys() == fields
                        # CPython's encoder gives one chunk; were there more, the first
                        # would differ and _check_line would judge the line
                        and text[pos:stop] == encode(event, 0)[0]
                        and event["seq"] == n
                        and event["prev"] == prev
                    ):
                        stop = -1
                except Exception:  # any failure is judged, and worded, by _check_line below
                    stop = -1
            if stop < 0:
                stop = block.find(b"\n", pos, cut)
                stop = cut - 1 if stop < 0 else stop
                line = block[pos : stop + 1]
                if len(line) > MAX_LINE:
                    raise CheckFailed(
                        f"audit log line {n}: longer than any event ({MAX_LINE} bytes)"
                    )
                event = _check_line(n, line, prev)
            else:
                line = block[pos : stop + 1]
            if strict:
                _check_event(n, line)
            prev = "sha256:" + sha256(line).hexdigest()
            if n == head_seq:
                self.at_head = prev
            if prev == expect_head:
                self.anchored = True
            # find, not `in`: bytes' `in` tries its operand as an int first, formatting and
            # dropping a TypeError on every line
            if recordings and line.find(_RECORDED) >= 0:
                self.recorded.append(event)
            if event["event"] == "activated":
                self.activated = event if isinstance(event["details"], dict) else None
            pos = stop + 1
        if event is not None:
            self.event = event
        return n, prev

    def parts(self, bounds: list[int]) -> _Part:
        """The whole log, the first part here and each later part in a child process."""
        children = [
            self._fork(at, end) for at, end in zip(bounds, [*bounds[1:], None], strict=True)
        ]
        try:
            result = self.part(0, bounds[0], 1, GENESIS)
            for (pid, fd), at, end in zip(children, bounds, [*bounds[1:], None], strict=True):
                children = children[1:]
                later = self._collect(pid, fd, result[0] + 1)
                if later is None:  # the child died, or the log changed under it: check it here
                    later = self.part(at, end, result[0] + 1, result[1])
                result = _join(result, later)
            return result
        finally:
            for pid, fd in children:  # an error came first: the later parts are moot
                os.close(fd)
                _reap(pid, kill=True)

    def _fork(self, start: int, end: int | None) -> tuple[int, int]:
        import marshal

        read, write = os.pipe()
        pid = os.fork()
        if pid:
            os.close(write)
            return pid, read
        try:  # the child: never returns
            os.close(read)
            n0 = 0
            try:
                n0, prev = _position(self.log_path, start)
                reply: tuple[Any, ...] = ("ok", n0, self.part(start, end, n0, prev))
            except CheckFailed as e:
                reply = ("failed", n0, e.message)
            data = marshal.dumps(reply)
            view = memoryview(data)
            while view:
                view = view[os.write(write, view) :]
        finally:
            os._exit(0)

    def _collect(self, pid: int, fd: int, n0: int) -> _Part | None:
        """The child's part, which must start at line ``n0``, or None when it died or did not;
        raises the CheckFailed it found."""
        import marshal

        chunks = []
        try:
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
        finally:
            os.close(fd)
            _reap(pid, kill=False)
        try:
            # our own child's reply over a private pipe: no one else can write there
            reply = marshal.loads(b"".join(chunks))  # noqa: S302
        except (EOFError, ValueError, TypeError):
            return None
        if reply[1] != n0:
            return None  # numbered from elsewhere: the log changed under the child
        if reply[0] == "failed":
            raise CheckFailed(reply[2])
        if reply[2][0] < 1:
            return None
        return tuple(reply[2])


def _reap(pid: int, *, kill: bool) -> None:
    if kill:
        import signal

        os.kill(pid, signal.SIGKILL)  # not reaped yet, so it exists (if only as a zombie)
    os.waitpid(pid, 0)


def _position(log_path: str | PathLike[str], start: int) -> tuple[int, str]:
    """The number of the line at byte ``start`` (just after a newline) and the hash of the one before."""
    lines = 0
    with open(log_path, "rb", buffering=0) as log:
        buf = bytearray(4 << 20)
        done = 0
        while done < start:
            got = log.readinto(memoryview(buf)[: min(len(buf), start - done)])
            if not got:
                raise CheckFailed("cannot read the audit log (it shrank while being read)")
            lines += buf.count(b"\n", 0, got)
            done += got
        back = min(start, MAX_LINE + 1)
        tail = os.pread(log.fileno(), back, start - back)
    before = tail[tail.rfind(b"\n", 0, len(tail) - 1) + 1 :]
    from _hashlib import openssl_sha256

    return lines + 1, "sha256:" + openssl_sha256(before).hexdigest()


def _join(first: _Part, later: _Part) -> _Part:
    """Two consecutive parts as one."""
    return (
        first[0] + later[0],
        later[1],
        later[2] if later[2] is not None else first[2],
        first[3] or later[3],
        [*first[4], *later[4]],
        later[5] if later[5] is not None else first[5],
        later[6] if later[6] is not None else first[6],
    )


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


def _make_encoder() -> Callable[[Any, int], Any]:
    """json's C encoder with ``canonical.dumps``'s settings, built once: its chunks, joined,
    are the canonical line without its newline.

    ``JSONEncoder.encode`` builds a new C encoder on every call, a third of the
    cost of a line; this one is built with the same settings (sorted keys, the
    canonical separators, UTF-8 strings, NaN and infinity refused) and no cycle check, which parsed JSON
    cannot need. ``test_host_audit_stream`` holds it equal to ``dumps``.
    """
    from _json import encode_basestring, make_encoder  # CPython's, as json itself uses

    def refuse(value: object) -> object:
        raise TypeError(f"not json: {type(value).__name__}")

    encoder: Callable[[Any, int], Any] = make_encoder(
        None, refuse, encode_basestring, None, ":", ",", True, False, False
    )
    return encoder


_ENCODE = _make_encoder()


def _make_canonical() -> Callable[[Any], bytes]:
    """``canonical.dumps`` for parsed JSON, through ``_ENCODE``."""
    encode = _make_encoder()

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
