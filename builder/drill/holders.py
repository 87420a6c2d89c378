"""Share-holder check-in: an approver proves they can still open their share, revealing nothing.

``check_holder`` decrypts the approver's share of every scope of the real
sealed bundle with their own identity, checks that it is a well-formed SLIP-39
share (its checksum), and forgets it: no secret is combined, printed or
written. What comes out is a check-in line naming the approver, the scope and
the sha256 of the share *ciphertext*; the release engineer collects those
lines in a check-in file (``images/NAME.checkins.jsonl``), and the drill
report lists who has and has not checked in for the bundle as it is now
(a check-in for an older seal does not count).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from builder.core import agecrypt, bounded
from builder.core.canonical import digest, dumps
from builder.core.errors import CheckFailed, InputError
from builder.core.secret import Secret
from builder.release.bundle import SealedBundle

FORMAT = "breakglass-holder-checkin/1"
KEYS = {"format", "image", "approver", "scope", "share_digest", "checked_at", "ok"}


@dataclass(frozen=True)
class CheckIn:
    image: str
    approver: str
    scope: str
    share_digest: str
    checked_at: str
    ok: bool = True

    @classmethod
    def from_dict(cls, doc: object, where: str) -> CheckIn:
        if not isinstance(doc, dict) or set(doc) != KEYS or doc.get("format") != FORMAT:
            raise InputError(f"not a {FORMAT} line", where=where)
        names = ("image", "approver", "scope", "share_digest", "checked_at")
        if not all(isinstance(doc[k], str) for k in names) or not isinstance(doc["ok"], bool):
            raise InputError("check-in fields have the wrong types", where=where)
        return cls(
            doc["image"],
            doc["approver"],
            doc["scope"],
            doc["share_digest"],
            doc["checked_at"],
            doc["ok"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "image": self.image,
            "approver": self.approver,
            "scope": self.scope,
            "share_digest": self.share_digest,
            "checked_at": self.checked_at,
            "ok": self.ok,
        }

    def line(self) -> str:
        return dumps(self.to_dict()).decode("utf-8").rstrip("\n")


def load_bundle(path: Path) -> SealedBundle:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read sealed bundle ({e.strerror})", where=str(path)) from None
    return SealedBundle.from_bytes(data, str(path))


def check_holder(
    bundle: SealedBundle, approver: str, identities: Sequence[agecrypt.Identity], now: datetime
) -> list[CheckIn]:
    """One check-in per scope that holds a share for ``approver``.

    Raises InputError when the bundle has no share for them, CheckFailed when a
    share does not decrypt with their identity or is not a valid share.
    """
    found = [s for s in bundle.scopes if approver in s.shares]
    if not found:
        raise InputError(f"the sealed bundle holds no share for approver '{approver}'")
    out = []
    for scope in found:
        ciphertext = scope.shares[approver]
        try:
            share = agecrypt.decrypt(ciphertext, identities, what=f"the share of {approver}")
        except InputError as e:
            raise CheckFailed(f"scope {scope.name}: {e.message}") from None
        _check_share(share, scope.name)
        out.append(
            CheckIn(
                bundle.image,
                approver,
                scope.name,
                digest(ciphertext.encode("ascii")),
                now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
        )
    return out


def _check_share(share: Secret, scope: str) -> None:
    # Check the share's own checksum without combining anything.
    from builder.core import shares

    try:
        shares.check(share)
    except InputError:
        raise CheckFailed(
            f"scope {scope}: the decrypted share is not a valid SLIP-39 share"
        ) from None


def read_checkins(path: Path) -> list[CheckIn]:
    """Every check-in line of a check-in file; none when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as e:
        raise InputError(f"cannot read check-in file ({e.strerror})", where=str(path)) from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        doc = bounded.load_json(line, "check-in", where=f"{path}:{n}")
        out.append(CheckIn.from_dict(doc, f"{path}:{n}"))
    return out


def append_checkins(path: Path, checkins: Sequence[CheckIn]) -> None:
    """Add check-in lines to ``path`` (rewritten atomically, earlier lines kept)."""
    from builder.core.fsio import write_atomic

    existing = path.read_bytes() if path.exists() else b""
    if existing and not existing.endswith(b"\n"):
        existing += b"\n"
    write_atomic(path, existing + "".join(c.line() + "\n" for c in checkins).encode("utf-8"))


def roll_call(bundle: SealedBundle, checkins: Sequence[CheckIn]) -> dict[str, str | None]:
    """For every approver holding a share: when they last checked in for *this* bundle, or None.

    A check-in counts only when it names this image and the current share
    ciphertext of every scope the approver holds a share in.
    """
    holders = sorted({a for s in bundle.scopes for a in s.shares})
    result: dict[str, str | None] = {}
    for approver in holders:
        current = {
            s.name: digest(s.shares[approver].encode("ascii"))
            for s in bundle.scopes
            if approver in s.shares
        }
        seen: dict[str, str] = {}
        for c in checkins:
            if (
                c.ok
                and c.image == bundle.image
                and c.approver == approver
                and current.get(c.scope) == c.share_digest
            ):
                seen[c.scope] = max(seen.get(c.scope, ""), c.checked_at)
        result[approver] = min(seen.values()) if set(seen) == set(current) else None
    return result
