"""Approval receipts: the approver's own record of a ceremony, checked against hosts' audit logs.

Root on a host that holds k approvals can combine the shares without ``host
unseal``: no ``activated`` event, no burned scope, nothing to rotate. The
approver's side cannot be rewritten from the host, so ``approve`` keeps a
receipt there (``breakglass-receipt/1``, canonical JSON, one file per
approval, no secret: ids, digests, names, times), and ``drift --receipts DIR
--audit FILE`` flags every approved request whose window has closed without
an ``activated`` event in any of the audit logs given, and marks the scope
of every approved request since the last seal for rotation (activated or
not). What remains is in ``docs/threat-model.md``.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from builder.approval.request import Approval, UnsealRequest, format_time, parse_time
from builder.core import bounded
from builder.core.canonical import dumps
from builder.core.errors import InputError
from builder.core.record import record

FORMAT = "breakglass-receipt/1"
FIELDS = {
    "format", "request_id", "request_digest", "approval_digest", "scope", "image", "requester",
    "approver", "approved_at", "not_after",
}  # fmt: skip


def default_dir() -> Path:
    """``$XDG_STATE_HOME/breakglass/receipts``, else ``~/.local/state/breakglass/receipts``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local/state")
    return Path(base) / "breakglass" / "receipts"


@record
class Receipt:
    """One approval as its approver recorded it; parsed means valid."""

    request_id: str
    request_digest: str
    approval_digest: str
    scope: str
    image: dict[str, str]
    requester: str
    approver: str
    approved_at: datetime
    not_after: datetime

    @classmethod
    def of(cls, request: UnsealRequest, approval: Approval) -> Receipt:
        return cls(
            request.id, request.digest, approval.digest, request.scope, request.image.to_dict(),
            request.requester, approval.approver, approval.approved_at, request.not_after,
        )  # fmt: skip

    @classmethod
    def from_dict(cls, doc: object, where: str) -> Receipt:
        """Parse a receipt document; raises InputError located at ``where``."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or set(doc) != FIELDS:
            raise InputError(f"not a {FORMAT} document", where=where)
        image = doc["image"]
        texts = [doc[k] for k in FIELDS - {"image"}]
        if not all(isinstance(v, str) and v for v in texts) or not (
            isinstance(image, dict) and all(isinstance(v, str) for v in image.values())
        ):
            raise InputError("receipt fields must be non-empty strings", where=where)
        try:
            approved_at = parse_time(doc["approved_at"], "receipt approved_at")
            not_after = parse_time(doc["not_after"], "receipt not_after")
        except InputError as e:
            raise InputError(e.message, where=where) from None
        return cls(
            doc["request_id"], doc["request_digest"], doc["approval_digest"], doc["scope"],
            dict(image), doc["requester"], doc["approver"], approved_at, not_after,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "request_id": self.request_id,
            "request_digest": self.request_digest, "approval_digest": self.approval_digest,
            "scope": self.scope, "image": dict(self.image), "requester": self.requester,
            "approver": self.approver, "approved_at": format_time(self.approved_at),
            "not_after": format_time(self.not_after),
        }  # fmt: skip


def keep(receipt: Receipt, directory: Path) -> Path:
    """Write the receipt as ``DIR/REQUEST_ID.APPROVER.json`` (0600, directory 0700); return its path.

    Raises InputError when it cannot be written: an approval without a receipt
    would be a ceremony nobody can check later.
    """
    from builder.core.fsio import write_atomic

    path = directory / f"{receipt.request_id}.{receipt.approver}.json"
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, dumps(receipt.to_dict()), mode=0o600)
    except OSError as e:
        raise InputError(
            f"cannot keep the approval receipt ({e.strerror})", where=str(path)
        ) from None
    return path


def load_all(directory: Path) -> list[Receipt]:
    """Every ``*.json`` receipt in ``directory``; raises InputError on an unreadable or bad one."""
    try:
        paths = sorted(p for p in directory.iterdir() if p.suffix == ".json")
    except OSError as e:
        raise InputError(f"cannot read receipts ({e.strerror})", where=str(directory)) from None
    out = []
    for path in paths:
        try:
            raw = bounded.read(path, "receipt")
        except OSError as e:
            raise InputError(f"cannot read receipt ({e.strerror})", where=str(path)) from None
        out.append(Receipt.from_dict(bounded.load_json(raw, "receipt", str(path)), str(path)))
    return out


def activated_requests(log: Path) -> set[str]:
    """The request ids of every ``activated`` event in a collected audit log (JSON Lines).

    Lines are read with the audit line bounds; the chain itself is checked by
    ``host audit verify`` where the log is collected. Raises InputError on a
    line that is not an audit event.
    """
    try:
        data = log.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read the audit log ({e.strerror})", where=str(log)) from None
    found: set[str] = set()
    for n, line in enumerate(data.splitlines(), start=1):
        where = f"{log}:{n}"
        event = bounded.load_json(line, "audit line", where)
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            raise InputError("not an audit event", where=where)
        if event["event"] == "activated" and isinstance(event.get("request_id"), str):
            found.add(event["request_id"])
    return found


@record
class Ceremony:
    """An approved request, as receipts and audit logs tell it.

    ``activated`` when some log has its ``activated`` event. Either way its
    scope's credentials must be rotated: an activation burns them, and an
    approval never activated may have been combined outside ``host unseal``.
    """

    request_id: str
    scope: str
    image: str
    approvers: tuple[str, ...]
    not_after: datetime
    activated: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "scope": self.scope, "image": self.image,
            "approvers": list(self.approvers), "not_after": format_time(self.not_after),
            "activated": self.activated, "rotate": True,
        }  # fmt: skip

    def line(self) -> str:
        from builder.core.display import escape

        what = (
            "activated; rotate"
            if self.activated
            else "never activated in the audit logs given; rotate"
        )
        return escape(
            f"request {self.request_id} scope {self.scope}: approved by "
            f"{', '.join(self.approvers)}, {what} {self.scope}"
        )


def ceremonies(
    receipts: list[Receipt],
    activated: set[str],
    now: datetime,
    *,
    image: str,
    sealed_at: datetime | None,
) -> list[Ceremony]:
    """The approved requests for ``image`` since its bundle was sealed, activated or closed.

    Receipts from before ``sealed_at`` are for credentials rotated since and
    are left out. A request neither activated nor past its ``not_after`` may
    still be activated and is left out too. Never raises.
    """
    by_request: dict[str, list[Receipt]] = {}
    for r in receipts:
        if r.image.get("name") != image or (sealed_at is not None and r.approved_at < sealed_at):
            continue
        by_request.setdefault(r.request_id, []).append(r)
    out = []
    for rid, group in sorted(by_request.items()):
        first = group[0]
        done = rid in activated
        if not done and now <= first.not_after:
            continue
        approvers = tuple(sorted({r.approver for r in group}))
        out.append(Ceremony(rid, first.scope, image, approvers, first.not_after, done))
    return out
