"""The fleet's audit store: append-only and content-addressed, one accepted chain per host.

Layout under the store directory::

    objects/<sha256 hex>        bytes of a log segment (or a whole diverged log), never rewritten
    hosts/<quoted host>/pulls.jsonl   one canonical JSON line per pull, only ever appended
    lock                        flock held while a pull writes

A host's accepted log is the concatenation, in order, of the objects of its
``accepted`` pull records. A pull that does not extend it (``diverged``:
the host's log no longer starts with what was collected; ``broken``: the new
lines do not continue the hash chain) records the host's copy as evidence and
leaves the accepted log as it was: the earlier copy is kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from builder.core.canonical import digest, dumps
from builder.core.errors import InputError
from builder.core.fsio import write_atomic
from builder.core.hasher import sha256_hex

ACCEPTED = "accepted"
DIVERGED = "diverged"
BROKEN = "broken"


@dataclass(frozen=True)
class Collected:
    """What the store holds for one host: its accepted log and the position a pull resumes from."""

    data: bytes
    events: int
    head: str  # hash of the last accepted line (sha256("") when none)

    @property
    def log_digest(self) -> str:
        return digest(self.data)


class AuditStore:
    """One store directory; every write appends, nothing is overwritten or deleted."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Create the store if needed and hold its lock. Raises InputError when it cannot."""
        try:
            (self.root / "objects").mkdir(parents=True, exist_ok=True)
            (self.root / "hosts").mkdir(exist_ok=True)
            fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise InputError(f"cannot use audit store {self.root} ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _host_dir(self, host: str) -> Path:
        return self.root / "hosts" / quote(host, safe="")

    def hosts(self) -> list[str]:
        d = self.root / "hosts"
        return sorted(unquote(p.name) for p in d.iterdir()) if d.is_dir() else []

    def put(self, data: bytes) -> str:
        """Store ``data`` under its own digest (a no-op when present); returns ``sha256:<hex>``."""
        hexd = sha256_hex(data)
        path = self.root / "objects" / hexd
        if not path.exists():
            write_atomic(path, data, mode=0o444)
        return "sha256:" + hexd

    def get(self, object_id: str) -> bytes:
        """An object's bytes, checked against its name. Raises InputError when missing or altered."""
        hexd = object_id.removeprefix("sha256:")
        try:
            data = (self.root / "objects" / hexd).read_bytes()
        except OSError:
            raise InputError(f"audit store object {object_id} is missing") from None
        if sha256_hex(data) != hexd:
            raise InputError(f"audit store object {object_id} does not match its digest (altered)")
        return data

    def records(self, host: str) -> list[dict[str, Any]]:
        """Every pull record of ``host``, oldest first."""
        path = self._host_dir(host) / "pulls.jsonl"
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        try:
            return [json.loads(line) for line in lines]
        except ValueError:
            raise InputError(f"audit store: {path} has a line that is not json") from None

    def append_record(self, host: str, record: dict[str, Any]) -> None:
        d = self._host_dir(host)
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / "pulls.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, dumps(record))
            os.fsync(fd)
        finally:
            os.close(fd)

    def collected(self, host: str) -> Collected:
        """The host's accepted log, rebuilt from its objects and checked against the records."""
        parts = []
        events, head, expect = 0, digest(b""), digest(b"")
        for rec in self.records(host):
            if rec.get("status") != ACCEPTED:
                continue
            parts.append(self.get(str(rec["object"])))  # each object is checked against its name
            events, head, expect = int(rec["to_seq"]), str(rec["head"]), str(rec["log_digest"])
        data = b"".join(parts)
        # one check of the whole, against the last record: cost stays linear in the log's size
        if digest(data) != expect:
            raise InputError(f"audit store: the collected log of {host} does not match its records")
        return Collected(data, events, head)
