"""Fleet commands: status, audit pull, audit timeline, over a pyinfra inventory.

Every command that reaches hosts takes ``--limit`` (host names, groups or
globs; repeatable), ``--parallel`` (how many hosts pyinfra works on at once),
``--json``, and shows its progress on stderr when stderr is a terminal.
pyinfra imports stay inside the commands: ``breakglass --help`` starts fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _reach(f: F) -> F:
    f = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)
    f = click.option(
        "--connect-timeout", default=10, show_default=True, help="Seconds to wait for each host."
    )(f)
    f = click.option(
        "--parallel",
        default=50,
        show_default=True,
        help="How many hosts pyinfra works on at once.",
    )(f)
    f = click.option(
        "--limit", multiple=True, help="Only these hosts or groups (glob patterns; repeatable)."
    )(f)
    f = click.argument("inventory")(f)
    return f


def _progress(enabled: bool) -> Callable[[int, int], None] | None:
    if not enabled or not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        end = "\n" if done >= total else ""
        click.echo(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} hosts connected",
            err=True,
            nl=False,
        )
        if end:
            click.echo("", err=True)

    return show


@click.group("fleet")
def fleet() -> None:
    """Many hosts at once, over pyinfra: status, audit collection."""


@fleet.command("status")
@_reach
@click.option(
    "--version", "newest", help="The newest released version (hosts below it are behind)."
)
@click.option(
    "--enrolment",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also report hosts whose image's public parts differ from this enrolment.",
)
def status_cmd(
    inventory: str,
    limit: tuple[str, ...],
    parallel: int,
    connect_timeout: int,
    as_json: bool,
    newest: str | None,
    enrolment: Path | None,
) -> None:
    """One row per host: reachable, image, phase, burned scopes, audit head, clock skew.

    Exit 1 when any host is ACTIVE (or ACTIVE past its expiry), has drifted,
    or runs a version older than the newest one seen or named.
    """
    from builder.core.errors import CheckFailed
    from builder.fleet.inventory import open_fleet
    from builder.fleet.probe import BreakglassProbe
    from builder.fleet.status import assess, version_key

    if newest is not None:
        version_key(newest)
    enrolled = None
    if enrolment is not None:
        from builder.fleet.drift import load_enrolment

        enrolled = load_enrolment(enrolment).credentials
    with open_fleet(
        inventory,
        limit=limit,
        parallel=parallel,
        connect_timeout=connect_timeout,
        on_progress=_progress(not as_json),
    ) as fl:
        results = fl.run(BreakglassProbe, "status probe")
    now = datetime.now(UTC)
    report = assess(results, now, newest=newest, enrolled=enrolled)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        for line in report.lines():
            click.echo(line)
    if not report.ok:
        bad = [r.host for r in report.rows if r.problems]
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise CheckFailed(f"{len(bad)} host(s) need attention: {shown}")


@fleet.group("audit")
def audit() -> None:
    """Collect every host's audit log into an append-only store; read it as one timeline."""


@audit.command("pull")
@_reach
@click.option(
    "--store",
    "store_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The audit store directory (created on first use).",
)
def pull_cmd(
    inventory: str,
    limit: tuple[str, ...],
    parallel: int,
    connect_timeout: int,
    as_json: bool,
    store_dir: Path,
) -> None:
    """Fetch what each host appended since the last pull; report logs that no longer extend it.

    Exit 1 when any host's log was truncated, rewritten, replaced or edited
    (named with the first event that differs); unreachable hosts are reported.
    """
    from builder.core.errors import CheckFailed
    from builder.fleet.audit_pull import make_fact, settle
    from builder.fleet.audit_store import AuditStore
    from builder.fleet.inventory import open_fleet

    store = AuditStore(store_dir)
    with store.locked():
        with open_fleet(
            inventory,
            limit=limit,
            parallel=parallel,
            connect_timeout=connect_timeout,
            on_progress=_progress(not as_json),
        ) as fl:
            known = {h.name: store.collected(h.name) for h in fl.hosts}
            results = fl.run(make_fact(known), "audit probe")
        now = datetime.now(UTC)
        pulled = [settle(store, r, known[name], now) for name, r in results.items()]
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in pulled], indent=2, sort_keys=True))
    else:
        for p in pulled:
            extra = f" ({p.detail})" if p.detail else ""
            click.echo(f"{p.host}: {p.status}, +{p.new_events} events, {p.events} collected{extra}")
        counts = {
            s: sum(1 for p in pulled if p.status == s) for s in sorted({p.status for p in pulled})
        }
        click.echo("audit pull: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    bad = [p for p in pulled if not p.ok]
    if bad:
        first = bad[0]
        raise CheckFailed(
            f"{len(bad)} host(s) with a log that does not extend the collected one: "
            f"{first.host} ({first.detail})"
            + (f" and {len(bad) - 1} more" if len(bad) > 1 else ""),
            hint="the earlier copy is kept in the store; compare it with the host's (evidence object)",
        )


@audit.command("timeline")
@click.option(
    "--store",
    "store_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="The audit store directory.",
)
@click.option("--html", "as_html", is_flag=True, help="One self-contained HTML page.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def timeline_cmd(store_dir: Path, as_html: bool, as_json: bool) -> None:
    """Every collected host's events in one time order: activations, refusals, expiries, tampering."""
    from builder.fleet.audit_store import AuditStore
    from builder.fleet.timeline import build, to_html

    entries = build(AuditStore(store_dir))
    if as_html:
        click.echo(to_html(entries), nl=False)
    elif as_json:
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2, sort_keys=True))
    else:
        for e in entries:
            click.echo(e.line())


@fleet.command("enrol")
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@_reach
@click.option(
    "--check",
    is_flag=True,
    help="Show what would change; change nothing (exit 1 if anything would).",
)
@click.option(
    "--record",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write what the fleet now accepts as an enrolment file (input of `drift`).",
)
def enrol_cmd(
    spec: Path,
    inventory: str,
    limit: tuple[str, ...],
    parallel: int,
    connect_timeout: int,
    as_json: bool,
    check: bool,
    record: Path | None,
) -> None:
    """Put each credential's public part where the spec's `enrol:` targets say (idempotent).

    Reads the sealed bundle beside SPEC for the public parts. A second run
    changes nothing. Exit 1 when an operation failed, or with --check when
    anything would change.
    """
    from builder.core.errors import CheckFailed
    from builder.fleet.enrol import apply
    from builder.fleet.enrol_plan import plan_for, write_record
    from builder.fleet.inventory import open_fleet

    image, want = plan_for(spec)
    with open_fleet(
        inventory,
        limit=limit,
        parallel=parallel,
        connect_timeout=connect_timeout,
        on_progress=_progress(not as_json),
    ) as fl:
        result = apply(fl, want, check=check)
    if record is not None and not check:
        write_record(record, image, want, result.in_place)
    if as_json:
        click.echo(json.dumps({
            "check": check, "changes": result.changes, "failed": result.failed,
            "in_place": sorted("/".join(k) for k in result.in_place),
            "hosts": [h.to_dict() for h in result.hosts],
        }, indent=2, sort_keys=True))  # fmt: skip
    else:
        for h in result.hosts:
            if not h.reachable:
                click.echo(f"{h.host}: UNREACHABLE ({h.error})")
            for c in h.changes:
                click.echo(f"{h.host}: {'would ' if check else ''}{c}")
            for f in h.failed:
                click.echo(f"{h.host}: FAILED {f}")
        verb = "would change" if check else "changed"
        click.echo(f"enrol: {result.changes} {verb}, {result.failed} failed")
    if result.failed:
        raise CheckFailed(f"{result.failed} enrolment operation(s) failed")
    if check and result.changes:
        raise CheckFailed(
            f"{result.changes} enrolment change(s) pending",
            hint="run without --check to apply them",
        )


@fleet.command("rotate")
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@_reach
@click.option(
    "--old",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The public parts being replaced (the enrolment file of the previous seal); starts a rotation.",
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The phase-state file [default: SPEC's directory/NAME.rotate.json].",
)
def rotate_cmd(
    spec: Path,
    inventory: str,
    limit: tuple[str, ...],
    parallel: int,
    connect_timeout: int,
    as_json: bool,
    old: Path | None,
    state_path: Path | None,
) -> None:
    """Rotate in resumable phases: enrol new parts, wait for the new version, remove old parts, drift.

    Run it after `seal --rotate`, `bump` and a build; run it again until it
    exits 0. Exit 1 while hosts are behind (they are named).
    """
    from builder.core.errors import InputError
    from builder.fleet.drift import load_enrolment
    from builder.fleet.enrol import apply
    from builder.fleet.inventory import open_fleet
    from builder.fleet.rotate import RotateReport, rotate

    if limit:
        # removing old parts is safe only when every host is known to run the new version
        raise InputError(
            "fleet rotate works on the whole inventory, not a --limit",
            hint="use `fleet enrol --limit` to stage new parts on some hosts first",
        )

    old_parts = list(load_enrolment(old).credentials) if old is not None else None
    state_file = state_path or spec.with_name(spec.stem + ".rotate.json")
    report = RotateReport()
    try:
        with open_fleet(
            inventory,
            limit=limit,
            parallel=parallel,
            connect_timeout=connect_timeout,
            on_progress=_progress(not as_json),
        ) as fl:
            plan = rotate(
                fl,
                spec,
                state_file,
                old=old_parts,
                apply=apply,
                now=datetime.now(UTC),
                report=report,
            )
    finally:
        if as_json:
            click.echo(json.dumps({"phases": report.phases}, indent=2, sort_keys=True))
        else:
            for p in report.phases:
                extra = f" ({p['changes']} changes)" if "changes" in p else ""
                late = "".join(f"\n  {h}: {why}" for h, why in sorted(p.get("behind", {}).items()))
                click.echo(f"{p['phase']}: {p['status']}{extra}{late}")
    if not as_json:
        click.echo(f"rotate: {plan.image} {plan.version} done")


@fleet.command("rotate-due")
@click.argument("specs", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--inventory", help="Also count scopes that hosts of this inventory report burned.")
@click.option(
    "--limit", multiple=True, help="Only these hosts or groups of the inventory (repeatable)."
)
@click.option(
    "--parallel", default=50, show_default=True, help="How many hosts pyinfra works on at once."
)
@click.option(
    "--bump",
    "part",
    type=click.Choice(["major", "minor", "patch"]),
    default="patch",
    show_default=True,
    help="Which part of the version a rotation raises.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def rotate_due_cmd(
    specs: tuple[Path, ...],
    inventory: str | None,
    limit: tuple[str, ...],
    parallel: int,
    part: str,
    as_json: bool,
) -> None:
    """Re-seal and bump each spec whose scopes are overdue or burned (the scheduled rotation).

    Only credentials that `seal` generates can be rotated here; a due scope
    with a credential supplied from a file or the environment is reported
    and the run exits 1. Prints no secret: the new plaintext never leaves
    this process.
    """
    from builder.core.errors import CheckFailed
    from builder.fleet.due import check, rotate_if_due

    now = datetime.now(UTC)
    burned: set[tuple[str, str]] = set()
    if inventory is not None:
        from builder.fleet.inventory import open_fleet
        from builder.fleet.probe import BreakglassProbe
        from builder.fleet.status import host_row

        with open_fleet(
            inventory, limit=limit, parallel=parallel, on_progress=_progress(not as_json)
        ) as fl:
            for result in fl.run(BreakglassProbe, "status probe").values():
                row = host_row(result, now)
                burned |= {(row.image, s) for s in row.burned if row.image}
    reports = [rotate_if_due(check(spec, now, burned), now, part) for spec in specs]
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports], indent=2, sort_keys=True))
    else:
        for r in reports:
            click.echo(r.line())
    blocked = [r for r in reports if r.action == "blocked"]
    if blocked:
        raise CheckFailed(
            f"{len(blocked)} spec(s) due for rotation with credentials supplied from outside: "
            + ", ".join(r.spec for r in blocked),
            hint="rotate those credentials at their source, then run `breakglass seal --rotate`",
        )


def register(cli: click.Group) -> None:
    cli.add_command(fleet)
