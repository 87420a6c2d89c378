"""Drift: do the public parts recorded at seal time match what an environment accepts?

The recorded side is the sealed bundle beside the spec (or a built manifest,
which carries the same public parts); the environment side is an enrolment
file (``breakglass-enrolment/1``). Each credential comes out in sync, out of
sync (both know it, the fingerprints differ), missing (sealed but not
enrolled) or stale (enrolled but no longer sealed); a scope is also overdue
when its bundle's ``rotate_by`` has passed, and burned when a host state says
it was used. Anything but all-in-sync, on time and unburned is drift.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from builder.approval.request import parse_time
from builder.core import bounded
from builder.core.errors import InputError

ENROLMENT_FORMAT = "breakglass-enrolment/1"
ENROLMENT_KEYS = {"format", "image", "created", "credentials"}
CREDENTIAL_KEYS = {"scope", "name", "kind", "public", "fingerprint"}

IN_SYNC = "in-sync"
OUT_OF_SYNC = "out-of-sync"
MISSING = "missing"
STALE = "stale"


@dataclass(frozen=True, order=True)
class PublicPart:
    """One credential's public part as a seal recorded it or an environment enrolled it."""

    scope: str
    name: str
    kind: str
    public: str | None
    fingerprint: str | None

    @classmethod
    def from_dict(cls, doc: object, what: str) -> PublicPart:
        if not isinstance(doc, dict):
            raise InputError(f"{what} must be a mapping")
        unknown = set(doc) - CREDENTIAL_KEYS
        if unknown:
            raise InputError(f"{what} has unknown key '{sorted(unknown)[0]}'")
        for key in ("scope", "name", "kind"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise InputError(f"{what} needs a non-empty string '{key}'")
        for key in ("public", "fingerprint"):
            if doc.get(key) is not None and not isinstance(doc[key], str):
                raise InputError(f"{what} has a '{key}' that is not a string")
        return cls(
            doc["scope"], doc["name"], doc["kind"], doc.get("public"), doc.get("fingerprint")
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "name": self.name,
            "kind": self.kind,
            "public": self.public,
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True)
class Enrolment:
    image: str
    credentials: tuple[PublicPart, ...]

    @classmethod
    def from_dict(cls, doc: object) -> Enrolment:
        if not isinstance(doc, dict):
            raise InputError("enrolment must be a JSON object")
        unknown = set(doc) - ENROLMENT_KEYS
        if unknown:
            raise InputError(f"enrolment has unknown key '{sorted(unknown)[0]}'")
        if doc.get("format") != ENROLMENT_FORMAT:
            raise InputError(f"enrolment format is not {ENROLMENT_FORMAT}")
        if not isinstance(doc.get("image"), str):
            raise InputError("enrolment needs a string 'image'")
        creds = doc.get("credentials")
        if not isinstance(creds, list):
            raise InputError("enrolment needs a list 'credentials'")
        parts = tuple(
            PublicPart.from_dict(c, f"enrolment credential {i}") for i, c in enumerate(creds)
        )
        return cls(doc["image"], parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ENROLMENT_FORMAT,
            "image": self.image,
            "credentials": [c.to_dict() for c in self.credentials],
        }


@dataclass(frozen=True)
class Sealed:
    """What a seal recorded: the image, its public parts and when they must be rotated."""

    image: str
    credentials: tuple[PublicPart, ...]
    rotate_by: datetime | None


@dataclass(frozen=True)
class DriftEntry:
    scope: str
    name: str
    status: str
    recorded: str | None
    enrolled: str | None
    overdue: bool
    burned: bool

    @property
    def ok(self) -> bool:
        return self.status == IN_SYNC and not self.overdue and not self.burned

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "name": self.name,
            "status": self.status,
            "recorded_fingerprint": self.recorded,
            "enrolled_fingerprint": self.enrolled,
            "overdue": self.overdue,
            "burned": self.burned,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class DriftReport:
    image: str
    rotate_by: datetime | None
    entries: tuple[DriftEntry, ...]

    @property
    def ok(self) -> bool:
        return bool(self.entries) and all(e.ok for e in self.entries)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "rotate_by": _fmt(self.rotate_by) if self.rotate_by else None,
            "ok": self.ok,
            "credentials": [e.to_dict() for e in self.entries],
        }

    def lines(self) -> list[str]:
        """One human line per credential, then a verdict."""
        out = []
        for e in self.entries:
            flags = (
                [e.status] + (["overdue"] if e.overdue else []) + (["burned"] if e.burned else [])
            )
            out.append(f"{e.scope}/{e.name}: {', '.join(flags)}")
        out.append("drift: none" if self.ok else "drift: found")
        return out


def compare(
    sealed: Sealed, enrolled: Iterable[PublicPart], now: datetime, burned: Iterable[str] = ()
) -> DriftReport:
    """Compare recorded and enrolled public parts, credential by credential; never raises."""
    recorded = {(c.scope, c.name): c for c in sealed.credentials}
    accepted = {(c.scope, c.name): c for c in enrolled}
    burned_scopes = set(burned)
    overdue = sealed.rotate_by is not None and now >= sealed.rotate_by
    entries = []
    for key in sorted(set(recorded) | set(accepted)):
        r, a = recorded.get(key), accepted.get(key)
        if r is None:
            status = STALE
        elif a is None:
            status = MISSING
        elif (r.fingerprint, r.public, r.kind) == (a.fingerprint, a.public, a.kind):
            status = IN_SYNC
        else:
            status = OUT_OF_SYNC
        entries.append(
            DriftEntry(
                scope=key[0],
                name=key[1],
                status=status,
                recorded=r.fingerprint if r else None,
                enrolled=a.fingerprint if a else None,
                overdue=overdue and r is not None,
                burned=key[0] in burned_scopes,
            )
        )
    return DriftReport(sealed.image, sealed.rotate_by, tuple(entries))


def load_enrolment(path: Path) -> Enrolment:
    """Read an enrolment file; raises InputError naming the file and the problem."""
    try:
        raw = bounded.read(path, "enrolment")
    except OSError as e:
        raise InputError(f"cannot read enrolment ({e.strerror})", where=str(path)) from None
    doc = bounded.load_json(raw, "enrolment", where=str(path))
    try:
        return Enrolment.from_dict(doc)
    except InputError as e:
        raise InputError(e.message, where=str(path)) from None


def sealed_from_bundle(path: Path) -> Sealed:
    """The public parts and rotation date a sealed bundle records (no ciphertext is opened)."""
    from builder.release.bundle import SealedBundle

    try:
        data = bounded.read(path, "sealed bundle")
    except OSError as e:
        raise InputError(f"cannot read sealed bundle ({e.strerror})", where=str(path)) from None
    bundle = SealedBundle.from_bytes(data, str(path))
    parts = tuple(
        PublicPart(scope.name, c.name, c.kind, c.public, c.fingerprint)
        for scope in bundle.scopes
        for c in scope.credentials
    )
    return Sealed(bundle.image, parts, _time(bundle.rotate_by, str(path)))


def sealed_from_manifest(path: Path) -> Sealed:
    """The public parts and rotation date a built break-glass manifest records."""
    where = str(path)
    try:
        doc = bounded.load_json(bounded.read(path, "manifest"), "manifest", where)
        image = doc["image"]["name"]
        rotate_by = doc["sealed_bundle"].get("rotate_by")
        scopes = doc["scopes"]
    except OSError as e:
        raise InputError(f"cannot read manifest ({e.strerror})", where=where) from None
    except (KeyError, TypeError, AttributeError):
        raise InputError("not a break-glass manifest", where=where) from None
    parts = []
    for scope in scopes if isinstance(scopes, list) else []:
        creds = scope.get("credentials") if isinstance(scope, dict) else None
        for cred in creds if isinstance(creds, list) else []:
            if not isinstance(cred, dict):
                raise InputError("a manifest credential is not a mapping", where=where)
            fields = {k: cred.get(k) for k in ("name", "kind", "public", "fingerprint")}
            parts.append(PublicPart.from_dict({"scope": scope.get("name"), **fields}, where))
    return Sealed(str(image), tuple(parts), _time(rotate_by, where))


def burned_scopes(root: Path) -> tuple[str, ...]:
    """The scopes the host state under ``root`` marks burned. Raises InputError when malformed."""
    from builder.host.state import load

    return tuple(sorted(load(root).burned))


def _time(value: object, where: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"bad time {value!r} (want RFC 3339 UTC)", where=where) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sealed_at(path: Path, *, manifest: bool) -> datetime | None:
    """When the bundle at ``path`` (or the one a built manifest records) was sealed; raises InputError."""
    kind = "manifest" if manifest else "sealed bundle"
    try:
        raw = bounded.read(path, kind)
    except OSError as e:
        raise InputError(f"cannot read {kind} ({e.strerror})", where=str(path)) from None
    if manifest:
        doc = bounded.load_json(raw, kind, str(path))
        bundle = doc.get("sealed_bundle") if isinstance(doc, dict) else None
        created = bundle.get("created") if isinstance(bundle, dict) else None
    else:
        from builder.release.bundle import SealedBundle

        created = SealedBundle.from_bytes(raw, str(path)).created
    if not isinstance(created, str):
        return None
    try:
        return parse_time(created, "sealed bundle created")
    except InputError as e:
        raise InputError(e.message, where=str(path)) from None
