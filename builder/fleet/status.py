"""``fleet status``: one row per host from its probe, problems named, and the fleet's verdict.

A host has a problem (exit 1) when it is ACTIVE; when it is ACTIVE past its
``expires_at`` (its own expiry never ran); when it has drifted (a burned
scope, rotation overdue, an image version whose digest differs from another
host's build of the same version, a public part that differs from the given
enrolment, an unreadable manifest or state, an audit log shorter than its
head); or when it runs a version older than the newest one named. An
unreachable host is reported, not a problem: the run goes on without it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from builder.core.canonical import digest
from builder.core.errors import InputError
from builder.fleet.inventory import HostResult
from builder.fleet.probe import Probe

_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


def version_key(version: str) -> tuple[int, ...]:
    """Order of semver versions (MAJOR.MINOR.PATCH); raises InputError for anything else."""
    m = _VERSION.match(version)
    if not m:
        raise InputError(f"version {version!r} is not MAJOR.MINOR.PATCH")
    return tuple(int(x) for x in m.groups())


@dataclass
class HostStatus:
    """One row of ``fleet status``."""

    host: str
    reachable: bool
    error: str | None = None
    image: str | None = None
    version: str | None = None
    manifest_digest: str | None = None
    phase: str | None = None
    scope: str | None = None
    expires_at: str | None = None
    seconds_left: int | None = None
    burned: list[str] = field(default_factory=list)
    rotate_by: str | None = None
    rotation_due: bool = False
    audit_head: str | None = None
    audit_events: int | None = None
    clock_skew: float | None = None
    public_parts: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.__dict__.items() if k != "public_parts"}
        doc["clock_skew"] = None if self.clock_skew is None else round(self.clock_skew, 3)
        return doc


def _time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _read_manifest(row: HostStatus, raw: bytes | None, now: datetime) -> None:
    if raw is None:
        row.problems.append("no image manifest")
        return
    row.manifest_digest = digest(raw)
    try:
        doc = json.loads(raw)
        row.image, row.version = str(doc["image"]["name"]), str(doc["image"]["version"])
        rotate_by = doc.get("sealed_bundle", {}).get("rotate_by")
        for scope in doc.get("scopes", []):
            for cred in scope.get("credentials", []):
                row.public_parts.append(
                    {"scope": scope["name"], **{k: cred.get(k) for k in ("name", "kind", "public", "fingerprint")}}
                )  # fmt: skip
    except (ValueError, KeyError, TypeError, AttributeError):
        row.problems.append("image manifest unreadable")
        return
    due = _time(rotate_by)
    row.rotate_by = rotate_by if isinstance(rotate_by, str) else None
    if due is not None and now >= due:
        row.rotation_due = True
        row.problems.append(f"rotation due since {rotate_by}")


def _read_state(row: HostStatus, raw: bytes | None, now: datetime) -> None:
    from builder.host.state import ACTIVE, DORMANT, HostState

    if raw is None:
        row.phase = DORMANT  # a host that never ran a command has no state file yet
        return
    try:
        state = HostState.from_dict(json.loads(raw))
    except (ValueError, InputError):
        row.problems.append("host state unreadable")
        return
    row.phase = state.phase
    row.burned = sorted(state.burned)
    if row.burned:
        row.problems.append("burned: " + ", ".join(row.burned))
    if state.pending is not None:
        row.scope = state.pending.scope
    if state.phase == ACTIVE and state.active is not None:
        a = state.active
        row.scope = a.scope
        row.expires_at = a.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        left = int((a.expires_at - now).total_seconds())
        row.seconds_left = max(0, left)
        if left <= 0:
            row.problems.append(f"ACTIVE past expires_at {row.expires_at} (expiry never ran)")
        else:
            row.problems.append(f"ACTIVE: scope {a.scope}, {left}s left")


def _read_audit(row: HostStatus, raw: bytes | None, lines: int) -> None:
    row.audit_events = lines
    if raw is None:
        if lines:
            row.problems.append("audit head missing")
        return
    try:
        head = json.loads(raw)
        row.audit_head, seq = str(head["head"]), int(head["seq"])
    except (ValueError, KeyError, TypeError):
        row.problems.append("audit head unreadable")
        return
    if seq > lines:
        row.problems.append(f"audit log has {lines} events but its head records {seq}")


def host_row(result: HostResult, now: datetime) -> HostStatus:
    """Interpret one host's probe; never raises."""
    if not result.reachable:
        return HostStatus(result.name, False, error=result.error)
    probe = result.value
    if not isinstance(probe, Probe):
        return HostStatus(
            result.name, True, error=result.error or "no answer", problems=["no answer"]
        )
    row = HostStatus(result.name, True, clock_skew=probe.clock_skew)
    if probe.root_missing:
        row.problems.append("breakglass root missing")
        return row
    _read_manifest(row, probe.files.get("manifest"), now)
    _read_state(row, probe.files.get("state"), now)
    _read_audit(row, probe.files.get("audit_head"), probe.audit_lines)
    return row


@dataclass(frozen=True)
class FleetStatus:
    rows: list[HostStatus]
    newest: str | None

    @property
    def ok(self) -> bool:
        return not any(r.problems for r in self.rows)

    def summary(self) -> dict[str, int]:
        reach = [r for r in self.rows if r.reachable]
        return {
            "hosts": len(self.rows),
            "reachable": len(reach),
            "unreachable": len(self.rows) - len(reach),
            "active": sum(1 for r in reach if r.phase == "ACTIVE"),
            "pending": sum(1 for r in reach if r.phase == "PENDING"),
            "with_problems": sum(1 for r in self.rows if r.problems),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "newest_version": self.newest,
            "summary": self.summary(),
            "hosts": [r.to_dict() for r in self.rows],
        }

    def lines(self) -> list[str]:
        """Human rows; every string a host supplied is shown with control characters escaped."""
        out = []
        for r in self.rows:
            if not r.reachable:
                out.append(printable(f"{r.host}: UNREACHABLE ({r.error})"))
                continue
            bits = [
                r.phase or "?",
                f"{r.image or '?'} {r.version or '?'}",
                f"audit {r.audit_events} events",
            ]
            if r.clock_skew is not None:
                bits.append(f"skew {r.clock_skew:+.1f}s")
            problems = f" !! {'; '.join(r.problems)}" if r.problems else ""
            out.append(printable(f"{r.host}: {', '.join(bits)}{problems}"))
        s = self.summary()
        out.append(
            printable(
                f"fleet: {s['hosts']} hosts, {s['reachable']} reachable, {s['unreachable']} unreachable, "
                f"{s['active']} active, {s['pending']} pending, {s['with_problems']} with problems"
                + (f", newest version {self.newest}" if self.newest else "")
            )
        )
        return out


def printable(text: str) -> str:
    """``text`` with control characters escaped (a host controls its manifest and state)."""
    # a host controls its manifest and state: keep escape sequences out of the operator's terminal
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def assess(
    results: Mapping[str, HostResult],
    now: datetime,
    *,
    newest: str | None = None,
    enrolled: Iterable[Any] | None = None,
) -> FleetStatus:
    """Rows for every host plus the fleet-wide checks (versions, digests, enrolment)."""
    rows = [host_row(r, now) for r in results.values()]
    if newest is not None:
        version_key(newest)
    versions = [r.version for r in rows if r.version and _VERSION.match(r.version)]
    for v in versions:
        if newest is None or version_key(v) > version_key(newest):
            newest = v
    digests: dict[str, set[str]] = {}
    for r in rows:
        if r.version and r.manifest_digest:
            digests.setdefault(r.version, set()).add(r.manifest_digest)
    for r in rows:
        if (
            r.version
            and newest
            and _VERSION.match(r.version)
            and version_key(r.version) < version_key(newest)
        ):
            r.problems.append(f"behind: runs {r.version}, newest is {newest}")
        if r.version and len(digests.get(r.version, ())) > 1:
            r.problems.append(
                f"drift: version {r.version} has {len(digests[r.version])} different manifests in the fleet"
            )
    if enrolled is not None:
        _check_enrolment(rows, list(enrolled), now)
    return FleetStatus(rows, newest)


def _check_enrolment(rows: list[HostStatus], enrolled: list[Any], now: datetime) -> None:
    from builder.fleet.drift import PublicPart, Sealed, compare

    for r in rows:
        if not r.reachable or not r.image:
            continue
        parts = tuple(PublicPart.from_dict(p, f"{r.host} manifest") for p in r.public_parts)
        report = compare(Sealed(r.image, parts, None), enrolled, now)
        bad = [f"{e.scope}/{e.name} {e.status}" for e in report.entries if e.status != "in-sync"]
        if bad:
            r.problems.append("drift: " + ", ".join(bad))
