"""``fleet enrol``: put each credential's public part where its ``enrol:`` targets say, with pyinfra.

The plan comes from the spec (targets) and the sealed bundle beside it
(public parts). Each (host, file, line) becomes one ``files.line``
operation, literal and idempotent; a target's ``reload`` runs on a host only
when one of its lines there changed. ``check`` computes the same operations
and what they would change, and runs nothing. ``remove`` takes lines away
(the last phase of a rotation) with the same operations, ``present=False``.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from builder.core.errors import CheckFailed, InputError
from builder.fleet.drift import PublicPart
from builder.fleet.inventory import ROOT_DATA, Fleet
from builder.release.enrol_targets import EnrolTarget


@dataclass(frozen=True)
class Wanted:
    """One line one credential needs in one target file."""

    credential: PublicPart
    target: EnrolTarget
    line: str


def wanted(
    targets: dict[tuple[str, str], tuple[EnrolTarget, ...]], parts: Iterable[PublicPart]
) -> list[Wanted]:
    """Every line the public parts need, by their credential's targets. Raises InputError
    when a target's line names a public part the credential does not have."""
    out = []
    for part in parts:
        for target in targets.get((part.scope, part.name), ()):
            try:
                line = target.render(**part.to_dict())
            except KeyError as e:
                raise InputError(
                    f"enrol line for {part.scope}/{part.name} uses {{{e.args[0]}}}, "
                    f"which a {part.kind} credential does not have"
                ) from None
            out.append(Wanted(part, target, line))
    return out


def targets_of(spec_path: Path) -> tuple[str, dict[tuple[str, str], tuple[EnrolTarget, ...]]]:
    """The image name and each credential's enrol targets, from the spec."""
    from builder.release.spec import load_spec

    spec = load_spec(spec_path)
    return spec.name, {(c.scope, c.name): c.enrol for c in spec.credentials if c.enrol}


@dataclass
class HostChanges:
    host: str
    reachable: bool
    changes: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _hosts_for(fleet: Fleet, pattern: str) -> tuple[list[Any], int]:
    """The hosts of ``pattern`` within the fleet's limit, and how many it names in all. Raises InputError when it names no
    host of the whole inventory (a typo), not when ``--limit`` leaves them out."""
    from pyinfra.api.exceptions import NoGroupError

    try:
        group = set(fleet.state.inventory.get_group(pattern))
    except NoGroupError:
        group = set()
    everywhere = [h for h in fleet.state.inventory if h in group or fnmatch(h.name, pattern)]
    if not everywhere:
        raise InputError(f"enrol target hosts {pattern!r} match no host of the inventory")
    return [h for h in everywhere if h in fleet.hosts], len(everywhere)


def _on_host(host: Any, path: str) -> str:
    root = str(host.data.get(ROOT_DATA) or "/")
    return posixpath.join(root, path.lstrip("/"))


@dataclass
class EnrolResult:
    hosts: list[HostChanges]
    # credentials whose lines are in place on every host their targets name (after a run, or
    # already before it in a check); a target host that was unreachable leaves its credential out
    in_place: set[tuple[str, str]]

    @property
    def changes(self) -> int:
        return sum(len(h.changes) for h in self.hosts)

    @property
    def failed(self) -> int:
        return sum(len(h.failed) for h in self.hosts)


def _end_with_newline(fleet: Fleet, host: Any, path: str) -> None:
    """Give a file that lacks a final newline one, so that an appended line stands on its own.

    (pyinfra's ``ensure_newline`` also adds one to an empty or new file.)
    """
    from pyinfra.api.operation import add_op
    from pyinfra.context import ctx_host, ctx_state
    from pyinfra.facts.server import Command
    from pyinfra.operations import server

    f = shlex.quote(path)
    with ctx_state.use(fleet.state), ctx_host.use(host):
        answer = host.get_fact(
            Command, f'[ -s {f} ] && [ -n "$(tail -c1 {f})" ] && echo fix || echo ok'
        )
    if answer == "fix":
        add_op(
            fleet.state, server.shell, name=f"breakglass: final newline in {path}", host=[host],
            commands=[f"echo >> {f}"],
        )  # fmt: skip


def apply(
    fleet: Fleet, add: Sequence[Wanted], *, remove: Sequence[Wanted] = (), check: bool
) -> EnrolResult:
    """Make every reachable target host hold ``add`` and not ``remove``; with ``check``, only say what would change.

    Returns one HostChanges per host of the fleet. Raises InputError when a
    target names no host of the inventory.
    """
    from pyinfra.api.operation import add_op
    from pyinfra.api.operations import run_ops
    from pyinfra.context import ctx_host, ctx_state
    from pyinfra.operations import files, server

    report = {
        h.name: HostChanges(
            h.name, h.name not in fleet.unreachable, error=fleet.unreachable.get(h.name)
        )
        for h in fleet.hosts
    }
    ops: list[tuple[Any, str, Any, tuple[str, str] | None]] = []  # host, what, meta, added key
    not_in_place: set[tuple[str, str]] = set()
    reloads: dict[tuple[str, tuple[str, ...]], list[Any]] = {}
    for present, items in ((True, add), (False, remove)):
        for w in items:
            hosts, named = _hosts_for(fleet, w.target.hosts)
            live = [h for h in hosts if h.name not in fleet.unreachable]
            key = (w.credential.scope, w.credential.name)
            # hosts left out by --limit or unreachable are not known to hold the line
            if present and len(live) < named:
                not_in_place.add(key)
            verb = "add" if present else "remove"
            what = f"{verb} {w.credential.scope}/{w.credential.name} in {w.target.file}"
            for host in live:
                if present:
                    _end_with_newline(fleet, host, _on_host(host, w.target.file))
                # extended: pyinfra escapes '+' as '\+', a literal only in ERE (in GNU BRE it means
                # "one or more", so a key with a '+' would never match and be appended again)
                metas = add_op(
                    fleet.state, files.line, name=f"breakglass: {what}", host=[host],
                    path=_on_host(host, w.target.file), line=w.line, present=present,
                    escape_regex_characters=True, extended_regex=True,
                )  # fmt: skip
                ops.append((host, what, metas[host], key if present else None))
                if w.target.reload:
                    reloads.setdefault((host.name, w.target.reload), []).append(metas[host])
    for (name, argv), metas in reloads.items():
        host = next(h for h in fleet.hosts if h.name == name)

        def changed(metas: list[Any] = metas) -> bool:
            return any(m.did_change() for m in metas)

        add_op(
            fleet.state, server.shell, name=f"breakglass: reload {' '.join(argv)}", host=[host],
            commands=[shlex.join(argv)], _if=changed,
        )  # fmt: skip
    keys = {k for *_, k in ops if k is not None}
    if check:
        for host, what, meta, added in ops:
            with ctx_state.use(fleet.state), ctx_host.use(host):
                if meta.will_change:
                    report[host.name].changes.append(what)
                    if added:
                        not_in_place.add(added)
                else:
                    report[host.name].unchanged += 1
        return EnrolResult(list(report.values()), keys - not_in_place)
    from pyinfra.api.exceptions import PyinfraError

    try:
        run_ops(fleet.state)
    except PyinfraError as e:
        raise CheckFailed(f"enrolment failed on every host ({str(e).splitlines()[0]})") from None
    for host, what, meta, added in ops:
        if not meta.is_complete() or not meta.did_succeed():
            report[host.name].failed.append(what)
            if added:
                not_in_place.add(added)
        elif meta.did_change():
            report[host.name].changes.append(what)
        else:
            report[host.name].unchanged += 1
    return EnrolResult(list(report.values()), keys - not_in_place)
