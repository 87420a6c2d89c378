"""``fleet audit timeline``: every collected host's events in one time order, with tampering marked.

Reads only the store: the accepted logs of every host, and the pull records
that found a log diverged or broken (shown as ``tampering`` at the time of
the pull). HTML output escapes every field: event details come from hosts.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

from builder.fleet.audit_store import ACCEPTED, AuditStore

CATEGORY = {
    "activated": "activation", "activating": "activation", "activation-failed": "refusal",
    "activation-refused": "refusal", "approval-refused": "refusal", "expired": "expiry",
    "request-expired": "expiry", "resealed": "reseal", "request-created": "request",
    "approval-accepted": "approval", "recovered": "recovery",
}  # fmt: skip


@dataclass(frozen=True)
class Entry:
    time: str
    host: str
    seq: int | None
    event: str
    category: str
    scope: str | None
    request_id: str | None
    actor: str | None
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def line(self) -> str:
        seq = f"#{self.seq}" if self.seq is not None else "-"
        bits = [self.time, self.host, seq, self.event]
        if self.scope:
            bits.append(f"scope={self.scope}")
        if self.request_id:
            bits.append(f"request={self.request_id}")
        if self.details:
            bits.append(json.dumps(self.details, sort_keys=True, ensure_ascii=True))
        # a host controls these strings: keep control characters out of the terminal
        return " ".join(b.encode("unicode_escape").decode("ascii") for b in bits)


def build(store: AuditStore) -> list[Entry]:
    """Every event of every host in the store, oldest first; tampering findings included."""
    entries = []
    for host in store.hosts():
        for line in store.collected(host).data.splitlines():
            e = json.loads(line)
            entries.append(Entry(
                str(e["time"]), host, int(e["seq"]), str(e["event"]),
                CATEGORY.get(str(e["event"]), "other"), e.get("scope"), e.get("request_id"),
                e.get("actor"), dict(e.get("details") or {}),
            ))  # fmt: skip
        for rec in store.records(host):
            if rec.get("status") != ACCEPTED:
                details = {"finding": rec.get("status"), "evidence": rec.get("object")}
                if rec.get("first_difference"):
                    details["first_difference"] = rec["first_difference"]
                if rec.get("detail"):
                    details["detail"] = rec["detail"]
                entries.append(Entry(
                    str(rec["time"]), host, None, f"log-{rec.get('status')}", "tampering",
                    None, None, "fleet audit pull", details,
                ))  # fmt: skip
    return sorted(entries, key=lambda x: (x.time, x.host, x.seq or 0))


def to_html(entries: list[Entry]) -> str:
    rows = "".join(
        f'<tr class="{html.escape(e.category)}"><td>{html.escape(e.time)}</td>'
        f"<td>{html.escape(e.host)}</td><td>{'' if e.seq is None else e.seq}</td>"
        f"<td>{html.escape(e.event)}</td><td>{html.escape(e.scope or '')}</td>"
        f"<td>{html.escape(e.request_id or '')}</td><td>{html.escape(e.actor or '')}</td>"
        f"<td><code>{html.escape(json.dumps(e.details, sort_keys=True))}</code></td></tr>\n"
        for e in entries
    )
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>breakglass fleet audit timeline</title>\n'
        "<style>body{font-family:sans-serif}td{padding:2px 8px;vertical-align:top}"
        ".activation{background:#fde2e2}.refusal{background:#fff3cd}.expiry{background:#e2f0fd}"
        ".tampering{background:#f8b4b4;font-weight:bold}</style></head><body>\n"
        f"<h1>Fleet audit timeline</h1><p>{len(entries)} events</p>\n"
        "<table><tr><th>time</th><th>host</th><th>seq</th><th>event</th><th>scope</th>"
        f"<th>request</th><th>actor</th><th>details</th></tr>\n{rows}</table></body></html>\n"
    )
