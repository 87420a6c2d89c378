"""Unseal requests and approvals: their canonical JSON, digests and armored lines.

Shared by the host (which creates requests and checks approvals) and the
approver's machine (which reads a request and writes an approval). Both
documents are canonical JSON (``builder.core.canonical``); each also travels as one
copy-pastable line, ``BREAKGLASS-REQUEST-1:`` or ``BREAKGLASS-APPROVAL-1:``
followed by the base64url (unpadded) canonical bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from builder.approval.quorum import Group
from builder.core import bounded
from builder.core.canonical import digest, dumps
from builder.core.errors import InputError
from builder.core.record import record
from builder.core.utctime import canonical_time
from builder.core.utctime import format_time as format_time  # re-exported: host and approver use it

REQUEST_FORMAT = "breakglass-request/1"
APPROVAL_FORMAT = "breakglass-approval/1"
REQUEST_ARMOR = "BREAKGLASS-REQUEST-1:"
APPROVAL_ARMOR = "BREAKGLASS-APPROVAL-1:"

# \Z, not $: "$" also matches before a final newline, which would let "dave\n" pass as a name
_ID = re.compile(r"^[0-9a-f]{32}\Z")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# a reason is audited on one line, and an audit line has a cap (builder.core.bounded)
MAX_REASON = 2000


def parse_time(text: object, what: str) -> datetime:
    """Parse ``YYYY-MM-DDTHH:MM:SSZ``; raises InputError naming ``what`` otherwise."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be a time string")
    exact = canonical_time(text)  # the form we write, without loading _strptime
    if exact is not None:
        return exact
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise InputError(f"{what} is not an rfc 3339 utc time") from None


def _check_keys(doc: dict[str, Any], required: set[str], what: str) -> None:
    keys = set(doc)
    unknown = sorted(keys - required)
    if unknown:
        raise InputError(f"{what}: unknown field {unknown[0]!r}")
    missing = sorted(required - keys)
    if missing:
        raise InputError(f"{what}: missing field {missing[0]!r}")


def _str(doc: dict[str, Any], key: str, what: str) -> str:
    value = doc[key]
    if not isinstance(value, str) or not value:
        raise InputError(f"{what}: {key} must be a non-empty string")
    return value


def _int(doc: dict[str, Any], key: str, what: str) -> int:
    value = doc[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{what}: {key} must be a positive integer")
    return value


def _name(doc: dict[str, Any], key: str, what: str) -> str:
    value = _str(doc, key, what)
    if not _NAME.match(value):
        raise InputError(f"{what}: {key} is not a valid name")
    return value


@record
class ImageRef:
    """Which image a request is for: name, version and the digest of its manifest."""

    name: str
    version: str
    manifest_digest: str

    @classmethod
    def from_dict(cls, doc: object) -> ImageRef:
        if not isinstance(doc, dict):
            raise InputError("request: image must be an object")
        _check_keys(doc, {"name", "version", "manifest_digest"}, "request image")
        return cls(
            _str(doc, "name", "request image"),
            _str(doc, "version", "request image"),
            _str(doc, "manifest_digest", "request image"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "manifest_digest": self.manifest_digest}


def group_from_dict(doc: object, what: str) -> Group:
    """Parse one approver group of a request; raises InputError."""
    if not isinstance(doc, dict):
        raise InputError(f"{what}: a group must be an object")
    _check_keys(doc, {"name", "threshold", "members"}, what)
    members = doc["members"]
    if (
        not isinstance(members, list)
        or not members
        or not all(isinstance(m, str) and _NAME.match(m) for m in members)
    ):
        raise InputError(f"{what}: group members must be a non-empty list of names")
    group = Group(_str(doc, "name", what), _int(doc, "threshold", what), tuple(members))
    if group.threshold > len(group.members):
        raise InputError(f"{what}: group {group.name} threshold exceeds its members")
    return group


@record
class UnsealRequest:
    """A host's request to unseal one scope for ``ttl_seconds``; parsed means valid."""

    id: str
    image: ImageRef
    scope: str
    ttl_seconds: int
    reason: str
    requester: str
    created_at: datetime
    not_after: datetime
    ephemeral_recipient: str
    group_threshold: int
    groups: tuple[Group, ...]
    shares: dict[str, str]

    @classmethod
    def from_dict(cls, doc: object) -> UnsealRequest:
        """Parse a request document; raises InputError naming the first problem."""
        what = "request"
        if not isinstance(doc, dict):
            raise InputError("request must be a json object")
        if doc.get("format") != REQUEST_FORMAT:
            raise InputError(f"not a {REQUEST_FORMAT} document")
        _check_keys(
            doc,
            {
                "format", "id", "image", "scope", "ttl_seconds", "reason", "requester",
                "created_at", "not_after", "ephemeral_recipient", "group_threshold",
                "groups", "shares",
            },
            what,
        )  # fmt: skip
        rid = _str(doc, "id", what)
        if not _ID.match(rid):
            raise InputError("request: id must be 32 lowercase hex digits")
        groups = doc["groups"]
        if not isinstance(groups, list) or not groups:
            raise InputError("request: groups must be a non-empty list")
        shares = doc["shares"]
        if (
            not isinstance(shares, dict)
            or not shares
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in shares.items())
        ):
            raise InputError("request: shares must map approver names to ciphertext")
        request = cls(
            id=rid,
            image=ImageRef.from_dict(doc["image"]),
            scope=_name(doc, "scope", what),
            ttl_seconds=_int(doc, "ttl_seconds", what),
            reason=_str(doc, "reason", what),
            requester=_name(doc, "requester", what),
            created_at=parse_time(doc["created_at"], "request created_at"),
            not_after=parse_time(doc["not_after"], "request not_after"),
            ephemeral_recipient=_str(doc, "ephemeral_recipient", what),
            group_threshold=_int(doc, "group_threshold", what),
            groups=tuple(group_from_dict(g, what) for g in groups),
            shares=dict(shares),
        )
        if len(request.reason) > MAX_REASON:
            raise InputError(f"request: reason is longer than {MAX_REASON} characters")
        if request.group_threshold > len(request.groups):
            raise InputError("request: group_threshold exceeds the number of groups")
        return request

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REQUEST_FORMAT,
            "id": self.id,
            "image": self.image.to_dict(),
            "scope": self.scope,
            "ttl_seconds": self.ttl_seconds,
            "reason": self.reason,
            "requester": self.requester,
            "created_at": format_time(self.created_at),
            "not_after": format_time(self.not_after),
            "ephemeral_recipient": self.ephemeral_recipient,
            "group_threshold": self.group_threshold,
            "groups": [g.to_dict() for g in self.groups],
            "shares": dict(self.shares),
        }

    def canonical(self) -> bytes:
        return dumps(self.to_dict())

    @property
    def digest(self) -> str:
        return digest(self.canonical())

    def armored(self) -> str:
        return REQUEST_ARMOR + _b64(self.canonical())


@record
class Approval:
    """One approver's signed consent to one request, carrying their re-encrypted share."""

    request_id: str
    request_digest: str
    approver: str
    approved_at: datetime
    not_after: datetime
    share: str
    signature: str

    @classmethod
    def from_dict(cls, doc: object) -> Approval:
        """Parse an approval document; raises InputError naming the first problem."""
        what = "approval"
        if not isinstance(doc, dict):
            raise InputError("approval must be a json object")
        if doc.get("format") != APPROVAL_FORMAT:
            raise InputError(f"not a {APPROVAL_FORMAT} document")
        _check_keys(
            doc,
            {"format", "request_id", "request_digest", "approver", "approved_at", "not_after",
             "share", "signature"},
            what,
        )  # fmt: skip
        return cls(
            request_id=_str(doc, "request_id", what),
            request_digest=_str(doc, "request_digest", what),
            approver=_name(doc, "approver", what),
            approved_at=parse_time(doc["approved_at"], "approval approved_at"),
            not_after=parse_time(doc["not_after"], "approval not_after"),
            share=_str(doc, "share", what),
            signature=_str(doc, "signature", what),
        )

    def unsigned_dict(self) -> dict[str, Any]:
        return {
            "format": APPROVAL_FORMAT,
            "request_id": self.request_id,
            "request_digest": self.request_digest,
            "approver": self.approver,
            "approved_at": format_time(self.approved_at),
            "not_after": format_time(self.not_after),
            "share": self.share,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.unsigned_dict(), "signature": self.signature}

    def signed_bytes(self) -> bytes:
        """The exact bytes the signature covers: the canonical approval without ``signature``."""
        return dumps(self.unsigned_dict())

    def canonical(self) -> bytes:
        return dumps(self.to_dict())

    @property
    def digest(self) -> str:
        return digest(self.canonical())

    def armored(self) -> str:
        return APPROVAL_ARMOR + _b64(self.canonical())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _document(text: str, armor: str, what: str) -> object:
    """Decode an armored line or JSON text into a JSON value within ``what``'s bounds.

    Raises InputError when it is too large, malformed, or breaks a bound of
    ``builder.core.bounded``.
    """
    # base64 is 4/3 of the bytes it carries; anything longer cannot be under the cap
    bounded.check_size(len(text) * 3 // 4 - len(armor), what)
    text = text.strip()
    if text.startswith(armor):
        body = "".join(text[len(armor) :].split())
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise InputError(f"malformed armored {what}") from None
    else:
        raw = text.encode("utf-8", "surrogatepass")
    try:
        return bounded.load_json(raw, what)
    except bounded.NotJson:
        raise InputError(f"{what} is neither json nor an armored line") from None


def load_text(source: str, armor: str, what: str) -> object:
    """Read ``source``: an armored line, or the path of a file holding JSON or an armored line."""
    if source.strip().startswith(armor):
        return _document(source, armor, what)
    path = Path(source)
    limit = bounded.cap(what) * 4 // 3 + 1024  # armor makes a document 4/3 longer
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
        text = data.decode("utf-8")
    except (OSError, ValueError) as e:  # ValueError: not UTF-8, or a NUL in the path
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "unreadable"
        raise InputError(f"cannot read {what} ({reason})", where=source[:200]) from None
    if len(data) > limit:
        raise InputError(f"{what} is larger than its cap", where=source[:200])
    return _document(text, armor, what)


def load_request(source: str) -> UnsealRequest:
    """A request from a file path or an armored line; raises InputError."""
    return UnsealRequest.from_dict(load_text(source, REQUEST_ARMOR, "request"))


def load_approval(source: str) -> Approval:
    """An approval from a file path or an armored line; raises InputError."""
    return Approval.from_dict(load_text(source, APPROVAL_ARMOR, "approval"))
