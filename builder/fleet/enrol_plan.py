"""What ``fleet enrol`` must put in place, from a spec and its sealed bundle, and the record it leaves.

The record is a ``breakglass-enrolment/1`` document listing the public parts
that are in place on every host their targets name: ``drift SPEC
--enrolment RECORD`` then compares what was sealed with what the fleet
accepts.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from builder.core.canonical import dumps
from builder.core.errors import InputError
from builder.core.fsio import write_atomic
from builder.fleet.drift import Enrolment, sealed_from_bundle
from builder.fleet.enrol import Wanted, targets_of, wanted


def plan_for(spec_path: Path) -> tuple[str, list[Wanted]]:
    """The image name and every line the spec's enrol targets need. Raises InputError when
    the spec has no targets or no sealed bundle."""
    from builder.release.spec import load_spec

    image, targets = targets_of(spec_path)
    if not targets:
        raise InputError("no credential of the spec has an 'enrol' block", where=str(spec_path))
    sealed_path = load_spec(spec_path).sealed_path
    if not sealed_path.exists():
        raise InputError(
            "no sealed bundle beside the spec", where=str(sealed_path), hint="run seal first"
        )
    return image, wanted(targets, sealed_from_bundle(sealed_path).credentials)


def write_record(
    path: Path, image: str, want: Iterable[Wanted], in_place: set[tuple[str, str]]
) -> None:
    parts = {(w.credential.scope, w.credential.name): w.credential for w in want}
    doc = Enrolment(image, tuple(parts[k] for k in sorted(in_place))).to_dict()
    write_atomic(path, dumps(doc))
