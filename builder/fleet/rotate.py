"""``fleet rotate``: move the fleet from the old public parts to the new ones in resumable phases.

Run after ``seal --rotate``, ``bump`` and a build of the new version::

    enrol-new     add the new public parts next to the old ones (fleet enrol)
    wait-version  every host that runs the image must run the spec's version or newer;
                  the ones behind (or unreachable) are reported and the run stops here
    remove-old    remove the old public parts that the new seal no longer has; checked
                  again right before removing: refused while any host runs an older version
    drift         the new parts in place everywhere, the old ones gone: the record is
                  written and compared with the sealed bundle

Each phase is idempotent. The state file records the old parts (taken once,
from ``--old ENROLMENT``) and each finished phase, written atomically after
the phase's work: a run stopped anywhere (SIGINT, a lost connection) redoes
at most the phase it was in, and a second run continues where the first
stopped.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from builder.core.canonical import dumps
from builder.core.errors import CheckFailed, InputError, StateError
from builder.core.fsio import write_atomic
from builder.fleet.drift import PublicPart, Sealed, compare, sealed_from_bundle
from builder.fleet.enrol import EnrolResult, Wanted, targets_of, wanted
from builder.fleet.inventory import Fleet
from builder.fleet.probe import BreakglassProbe
from builder.fleet.status import host_row, printable, version_key

ROTATE_FORMAT = "breakglass-fleet-rotate/1"
PHASES = ("enrol-new", "wait-version", "remove-old", "drift")
INTERRUPT_ENV = "BREAKGLASS_TEST_INTERRUPT_AT"


def interrupt_point(name: str) -> None:
    """Test-only: SIGINT this process when BREAKGLASS_TEST_INTERRUPT_AT names ``name``.

    The rotation tests stop a run after a phase's work and before its record,
    the worst place, to prove the next run resumes. It cannot skip a check.
    """
    if os.environ.get(INTERRUPT_ENV) == name:
        os.kill(os.getpid(), signal.SIGINT)


@dataclass
class RotateState:
    image: str
    version: str
    old: list[PublicPart]
    done: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ROTATE_FORMAT, "image": self.image, "version": self.version,
            "old": [p.to_dict() for p in self.old], "done": list(self.done),
        }  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> RotateState | None:
        """The state of an unfinished rotation, or None. Raises InputError when malformed."""
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            raise InputError("rotation state is unreadable", where=str(path)) from None
        try:
            if doc.get("format") != ROTATE_FORMAT or not set(doc["done"]) <= set(PHASES):
                raise ValueError
            old = [PublicPart.from_dict(p, "old part") for p in doc["old"]]
            return cls(str(doc["image"]), str(doc["version"]), old, list(doc["done"]))
        except (ValueError, KeyError, TypeError, AttributeError, InputError):
            raise InputError("rotation state is malformed", where=str(path)) from None

    def save(self, path: Path) -> None:
        write_atomic(path, dumps(self.to_dict()))


@dataclass
class Plan:
    image: str
    version: str
    sealed: Sealed
    new: list[Wanted]
    old: list[Wanted]


def make_plan(spec_path: Path, old: list[PublicPart]) -> Plan:
    """New lines from the sealed bundle beside the spec; old lines from the recorded old parts,
    except those the new seal still has (removing them would remove a new one)."""
    from builder.release.spec import load_spec

    spec = load_spec(spec_path)
    image, targets = targets_of(spec_path)
    sealed = sealed_from_bundle(spec.sealed_path)
    new = wanted(targets, sealed.credentials)
    keep = {w.line for w in new}
    old_lines = [w for w in wanted(targets, old) if w.line not in keep]
    return Plan(image, spec.version, sealed, new, old_lines)


def behind(fleet: Fleet, image: str, version: str) -> dict[str, str]:
    """Hosts that run ``image`` older than ``version``, or could not be checked: name -> why."""
    from datetime import UTC

    now = datetime.now(UTC)
    out = {}
    want = version_key(version)
    for name, result in fleet.run(BreakglassProbe, "version probe").items():
        row = host_row(result, now)
        if not row.reachable:
            out[name] = f"unreachable ({row.error})"
        elif row.image == image and row.version is not None:
            try:
                if version_key(row.version) < want:
                    out[name] = printable(f"runs {row.version}")
            except InputError:
                out[name] = printable(f"runs an unreadable version {row.version!r}")
    return out


@dataclass
class RotateReport:
    phases: list[dict[str, Any]] = field(default_factory=list)

    def add(self, phase: str, status: str, **details: Any) -> None:
        self.phases.append({"phase": phase, "status": status, **details})


def rotate(
    fleet: Fleet,
    spec_path: Path,
    state_path: Path,
    *,
    old: list[PublicPart] | None,
    apply: Callable[..., EnrolResult],
    now: datetime,
    report: RotateReport,
) -> Plan:
    """Run the phases not yet done, noting each in ``report`` (also when one raises). Raises StateError (exit 1) when hosts are behind, CheckFailed
    when a phase fails, InputError when no old parts are known or the state is for another seal."""
    state = RotateState.load(state_path)
    if state is not None and set(state.done) == set(PHASES) and old is not None:
        state = None  # the last rotation finished; --old starts the next one
    if state is None:
        if old is None:
            raise InputError(
                "no rotation in progress; give the old public parts with --old ENROLMENT"
            )
        plan = make_plan(spec_path, old)
        state = RotateState(plan.image, plan.version, list(old))
        state.save(state_path)
    else:
        plan = make_plan(spec_path, state.old)
        if (state.image, state.version) != (plan.image, plan.version):
            raise InputError(
                f"the rotation state is for {state.image} {state.version}, the spec is {plan.image} {plan.version}",
                where=str(state_path),
            )
    for phase in PHASES:
        if phase in state.done:
            report.add(phase, "done before")
            continue
        _run_phase(phase, fleet, plan, apply, report, now)
        interrupt_point(f"rotate-{phase}")
        state.done.append(phase)
        state.save(state_path)
    return plan


def _run_phase(
    phase: str,
    fleet: Fleet,
    plan: Plan,
    apply: Callable[..., EnrolResult],
    report: RotateReport,
    now: datetime,
) -> None:
    if phase == "enrol-new":
        result = apply(fleet, plan.new, check=False)
        _require_clean(result, phase)
        report.add(phase, "ok", changes=result.changes)
    elif phase in ("wait-version", "remove-old"):
        late = behind(fleet, plan.image, plan.version)
        if late:
            report.add(phase, "waiting", behind=late)
            first = sorted(late)[0]
            raise StateError(
                f"{len(late)} host(s) not yet on {plan.image} {plan.version}: {first} ({late[first]})"
                + (f" and {len(late) - 1} more" if len(late) > 1 else ""),
                hint="old public parts stay until every host runs the new version; run again later",
            )
        if phase == "wait-version":
            report.add(phase, "ok")
            return
        result = apply(fleet, [], remove=plan.old, check=False)
        _require_clean(result, phase)
        report.add(phase, "ok", changes=result.changes)
    else:  # drift
        result = apply(fleet, plan.new, remove=plan.old, check=True)
        keys = {(w.credential.scope, w.credential.name) for w in plan.new}
        parts = [p for p in plan.sealed.credentials if (p.scope, p.name) in result.in_place]
        drift = compare(Sealed(plan.sealed.image, plan.sealed.credentials, None), parts, now)
        if result.changes or result.failed or keys - result.in_place or not drift.ok:
            raise CheckFailed(f"drift after rotation: {result.changes} change(s) still pending")
        report.add(phase, "ok")


def _require_clean(result: EnrolResult, phase: str) -> None:
    unreachable = [h.host for h in result.hosts if not h.reachable]
    if result.failed or unreachable:
        raise CheckFailed(
            f"{phase}: {result.failed} operation(s) failed, {len(unreachable)} host(s) unreachable"
            + (f" ({unreachable[0]} ...)" if unreachable else ""),
            hint="run again: done phases are not repeated",
        )
