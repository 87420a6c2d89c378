"""``fleet audit pull``: fetch only what each host appended since the last pull, and check it extends it.

For each host the probe sends the length and digest of what the store
already holds. The host answers with the bytes after that length when its
log still starts with exactly those bytes, else with its whole log. On the
control machine each new line must be a canonical audit event whose ``seq``
and ``prev`` continue the chain. Anything else is reported with the first
event that differs, and the earlier copy stays the accepted one.
"""

from __future__ import annotations

import base64
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyinfra.api.facts import FactBase

from builder.core.canonical import digest, dumps
from builder.fleet.audit_store import ACCEPTED, BROKEN, DIVERGED, AuditStore, Collected
from builder.fleet.inventory import HostResult
from builder.fleet.probe import host_root

AUDIT_LOG = "var/lib/breakglass/audit.jsonl"


@dataclass(frozen=True)
class Answer:
    """A host's answer: ``extends`` with the new bytes, or its whole log; ``absent`` when no log."""

    extends: bool
    data: bytes
    absent: bool = False


def pull_script(root: str, length: int, prefix_hex: str) -> str:
    f = shlex.quote(AUDIT_LOG)
    return (
        f"cd {shlex.quote(root)} 2>/dev/null || {{ echo noroot; exit 0; }}; "
        f"if [ ! -f {f} ] || [ -L {f} ]; then echo absent; exit 0; fi; "
        f'if [ "$(head -c {length} {f} | sha256sum | cut -d" " -f1)" = {prefix_hex} ] '
        f'&& [ "$(wc -c < {f})" -ge {length} ]; '
        f'then echo "extends $(tail -c +{length + 1} {f} | base64 -w0)."; '
        f'else echo "whole $(base64 -w0 {f})."; fi'
    )


def parse_answer(lines: list[str]) -> Answer | None:
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        if word == "absent":
            return Answer(True, b"", absent=True)
        if word in ("extends", "whole"):
            return Answer(word == "extends", base64.b64decode(rest.rstrip(".")))
    return None


def make_fact(known: Mapping[str, Collected]) -> type[FactBase[Answer | None]]:
    """A pyinfra fact that asks each host for what follows the store's copy of its log."""

    class AuditTail(FactBase[Answer | None]):
        def command(self) -> str:
            from pyinfra.context import host

            have = known.get(host.name) or Collected(b"", 0, digest(b""))
            return pull_script(host_root(), len(have.data), have.log_digest.removeprefix("sha256:"))

        def process(self, output: list[str]) -> Answer | None:
            return parse_answer(output)

    return AuditTail


@dataclass
class PullResult:
    host: str
    status: str  # accepted, diverged, broken, unreachable, no-log
    new_events: int = 0
    events: int = 0
    head: str | None = None
    detail: str | None = None
    first_difference: dict[str, Any] | None = None
    evidence: str | None = None

    @property
    def ok(self) -> bool:
        return self.status not in (DIVERGED, BROKEN)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _summary(line: bytes | None) -> dict[str, Any] | None:
    if line is None:
        return None
    try:
        e = json.loads(line)
        return {k: e.get(k) for k in ("seq", "time", "event", "scope", "request_id")} | {
            "line_hash": digest(line)
        }
    except (ValueError, AttributeError):
        return {"line_hash": digest(line), "unparsable": True}


def _same_but_chain(x: bytes, y: bytes) -> bool:
    try:
        ex, ey = json.loads(x), json.loads(y)
        ex.pop("prev", None)
        ey.pop("prev", None)
    except (ValueError, AttributeError):
        return x == y
    return bool(ex == ey)


def first_difference(kept: bytes, theirs: bytes) -> dict[str, Any]:
    """The first line (1-based) where the host's log differs from the kept copy, both sides summarised."""
    a, b = kept.splitlines(keepends=True), theirs.splitlines(keepends=True)
    n = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    mine = a[n] if n < len(a) else None
    other = b[n] if n < len(b) else None
    if other is None:
        kind = "truncated"
    elif mine is None:
        kind = "extended"
    elif len(a) == len(b) and all(
        _same_but_chain(x, y) for x, y in zip(a[n + 1 :], b[n + 1 :], strict=True)
    ):
        kind = "edited"  # the later events are the same, only re-chained over the edit
    else:
        kind = "rewritten"
    return {"line": n + 1, "kind": kind, "kept": _summary(mine), "host": _summary(other)}


def check_chain(have: Collected, new: bytes) -> tuple[int, str, str | None]:
    """Check that ``new`` continues the chain after ``have``; returns (events, head, problem)."""
    seq, prev = have.events, have.head
    for line in new.splitlines(keepends=True):
        where = f"event {seq + 1}"
        try:
            event = json.loads(line)
        except ValueError:
            return seq, prev, f"{where}: not json"
        if not isinstance(event, dict) or dumps(event) != line:
            return seq, prev, f"{where}: not a canonical audit event"
        if event.get("seq") != seq + 1:
            return seq, prev, f"{where}: sequence number {event.get('seq')}"
        if event.get("prev") != prev:
            return seq, prev, f"{where}: does not chain to event {seq}"
        seq, prev = seq + 1, digest(line)
    return seq, prev, None


def settle(store: AuditStore, result: HostResult, have: Collected, now: datetime) -> PullResult:
    """Record one host's answer in the store and say what it was. Appends only."""
    name = result.name
    if not result.reachable:
        return PullResult(name, "unreachable", events=have.events, detail=result.error)
    answer = result.value
    if not isinstance(answer, Answer):
        return PullResult(
            name, "unreachable", events=have.events, detail=result.error or "no answer"
        )
    when = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    if answer.absent and not have.data:
        return PullResult(name, "no-log")
    if answer.extends and not answer.absent:
        # only whole lines: an append racing the read finishes by the next pull
        cut = answer.data.rfind(b"\n") + 1
        new = answer.data[:cut]
        events, head, problem = check_chain(have, new)
        if problem is None:
            obj = store.put(new)
            store.append_record(name, {
                "time": when, "status": ACCEPTED, "object": obj, "from_seq": have.events + 1,
                "to_seq": events, "head": head, "log_digest": digest(have.data + new),
            })  # fmt: skip
            return PullResult(name, ACCEPTED, events - have.events, events, head)
        evidence = store.put(have.data + answer.data)
        store.append_record(
            name, {"time": when, "status": BROKEN, "object": evidence, "detail": problem}
        )
        return PullResult(
            name, BROKEN, events=have.events, head=have.head, detail=problem, evidence=evidence
        )
    theirs = b"" if answer.absent else answer.data
    diff = first_difference(have.data, theirs)
    evidence = store.put(theirs)
    store.append_record(name, {
        "time": when, "status": DIVERGED, "object": evidence, "first_difference": diff,
    })  # fmt: skip
    detail = f"log {diff['kind']} at event {diff['line']}"
    return PullResult(
        name, DIVERGED, events=have.events, head=have.head, detail=detail,
        first_difference=diff, evidence=evidence,
    )  # fmt: skip
