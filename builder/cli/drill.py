"""Drill commands: ``drill SPEC`` rehearses break-glass end to end, ``drill holders`` checks a
share holder, ``drift`` compares sealed public parts with what an environment enrolled.

``drill`` is a group whose default command is ``run``: ``breakglass drill SPEC`` and
``breakglass drill run SPEC`` are the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from datetime import datetime

    from builder.approval.receipt import Ceremony


class _DefaultRunGroup(click.Group):
    """A group that treats an unknown first word as the argument of its ``run`` command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _emit(document: dict[str, Any], lines: list[str], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(document, indent=2, sort_keys=True))
    else:
        from builder.core.display import escape

        for line in lines:
            click.echo(escape(line, backslash=False))  # names come from enrolments and receipts


@click.command("drift")
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--enrolment",
    "enrolment_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="What the environment accepts (breakglass-enrolment/1 JSON).",
)
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Compare a built manifest's public parts instead of the sealed bundle's.",
)
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    help="A host root whose state says which scopes are burned.",
)
@click.option(
    "--receipts",
    "receipts_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Approvers' receipts (from `approve`): flag approved requests never activated.",
)
@click.option(
    "--audit",
    "audit_logs",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="A collected host audit log (audit.jsonl); repeat for every host of the image.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def drift_command(
    spec: Path,
    enrolment_path: Path,
    manifest_path: Path | None,
    root: Path | None,
    receipts_dir: Path | None,
    audit_logs: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Report credentials out of sync with an enrolment, overdue for rotation, or burned.

    With --receipts and --audit, also every approved request that was never
    activated (its shares may have been combined outside `host unseal`): its
    scope is marked for rotation. Exit 1 when anything is not in sync,
    overdue, burned or approved without activation.
    """
    from datetime import UTC, datetime

    from builder.core.errors import CheckFailed, InputError
    from builder.fleet import drift
    from builder.release.spec import load_spec

    now = datetime.now(UTC)
    image = load_spec(spec)
    if manifest_path is not None:
        sealed = drift.sealed_from_manifest(manifest_path)
    elif image.sealed_path.exists():
        sealed = drift.sealed_from_bundle(image.sealed_path)
    else:
        raise InputError(
            "no sealed bundle beside the spec", where=str(image.sealed_path), hint="run seal first"
        )
    enrolment = drift.load_enrolment(enrolment_path)
    if enrolment.image != image.name:
        raise InputError(
            f"enrolment is for image '{enrolment.image}', not '{image.name}'",
            where=str(enrolment_path),
        )
    burned = drift.burned_scopes(root) if root is not None else ()
    sealed_from = manifest_path or image.sealed_path
    ceremonies = _ceremonies(
        receipts_dir, audit_logs, now, image.name, sealed_from, manifest_path is not None
    )
    burned = (*burned, *(c.scope for c in ceremonies))
    report = drift.compare(sealed, enrolment.credentials, now, burned)
    document = report.to_dict()
    if receipts_dir is not None:
        document["ceremonies"] = [c.to_dict() for c in ceremonies]
    lines = [c.line() for c in ceremonies] + report.lines()
    _emit(document, lines, as_json)
    if not report.ok or ceremonies:
        raise CheckFailed(f"drift found for image '{image.name}'")


def _ceremonies(
    receipts_dir: Path | None,
    audit_logs: tuple[Path, ...],
    now: datetime,
    image: str,
    sealed_from: Path,
    is_manifest: bool,
) -> list[Ceremony]:
    """Approved requests of ``image`` since its last seal, from receipts and audit logs.

    [] without ``--receipts``. Raises InputError when one option comes without the other.
    """
    from builder.approval import receipt
    from builder.core.errors import InputError
    from builder.fleet import drift

    if receipts_dir is None:
        if audit_logs:
            raise InputError("--audit goes with --receipts")
        return []
    if not audit_logs:
        raise InputError(
            "--receipts needs the hosts' audit logs", hint="pass --audit FILE for each host"
        )
    activated: set[str] = set()
    for log in audit_logs:
        activated |= receipt.activated_requests(log)
    since = drift.sealed_at(sealed_from, manifest=is_manifest)
    return receipt.ceremonies(
        receipt.load_all(receipts_dir), activated, now, image=image, sealed_at=since
    )


@click.group("drill", cls=_DefaultRunGroup, invoke_without_command=False)
def drill_group() -> None:
    """Rehearse break-glass against a simulated outage: `drill SPEC` runs it (same as `drill run
    SPEC`); `drill holders` lets an approver check in."""


@drill_group.command("run")
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--ttl", default="10s", show_default=True, help="Break-glass window of the drill.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write report.md, report.html and report.json here.",
)
@click.option(
    "--enrolment",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Enrol the stand-in service from this file instead of the drill's own seal "
    "(rehearses an environment that drifted).",
)
@click.option(
    "--checkins",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Share-holder check-in file [default: images/NAME.checkins.jsonl beside the spec].",
)
@click.option(
    "--unsafe-break",
    type=click.Choice(["frozen-clock"]),
    help="Rehearse a failure on purpose; the drill must then fail. frozen-clock: every host "
    "command from the unseal on sees the clock stopped at that moment, so the window never "
    "ends (expected: step 5 fails).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report data as JSON.")
def drill_run(
    spec: Path,
    ttl: str,
    report_dir: Path | None,
    enrolment: Path | None,
    checkins: Path | None,
    unsafe_break: str | None,
    as_json: bool,
) -> None:
    """Rehearse break-glass for SPEC end to end on loopback; exit 1 naming the failed step."""
    from builder.core import duration
    from builder.core.errors import CheckFailed, InputError
    from builder.drill.report import figures, write_report
    from builder.drill.scenario import Drill

    ttl_seconds = duration.parse(ttl)
    if not 5 <= ttl_seconds <= 300:
        # under 5s an ssh login can outlive the window; over 5m a drill stops being routine
        raise InputError("drill ttl must be between 5s and 5m")
    if not spec.is_file():
        raise InputError("no such spec file", where=str(spec))
    if unsafe_break is not None:
        click.echo(
            f"breakglass: warning: unsafe break '{unsafe_break}': this drill rehearses a failure "
            "and must fail",
            err=True,
        )
    drill = Drill(
        spec, ttl_seconds, enrolment=enrolment, checkins=checkins, unsafe_break=unsafe_break
    )
    result = drill.run()
    if report_dir is not None:
        write_report(result, report_dir)
    lines = [
        f"{'ok  ' if s.ok else 'FAIL'} {s.ended - s.started:7.2f}s  {s.name}" for s in result.steps
    ]
    for scope, value in figures(result, result.time_to_access_seconds):
        lines.append(f"time from outage to access [{scope}]: {value}")
    for scope, value in figures(result, result.time_to_revoke_seconds):
        lines.append(f"time from expiry to revoked access [{scope}]: {value}")
    if result.audit_head:
        lines.append(f"audit head: {result.audit_head}")
    _emit(result.to_dict(), lines, as_json)
    failed = result.failed_step
    if failed is not None:
        raise CheckFailed(f"drill step failed: {failed.name}: {failed.detail}")


@drill_group.command("holders")
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--identity",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Your age identity file (or OpenSSH private key).",
)
@click.option("--approver", required=True, help="Your approver name as the spec lists it.")
@click.option(
    "--checkin",
    "checkin_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also append the check-in lines to this file (e.g. images/NAME.checkins.jsonl).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the check-ins as JSON.")
def drill_holders(
    spec: Path, identity: Path, approver: str, checkin_file: Path | None, as_json: bool
) -> None:
    """Prove you can still open your share of SPEC's sealed bundle; nothing secret is shown.

    Prints one check-in line per scope (approver, scope, sha256 of the share
    ciphertext, ok) to hand to the release engineer.
    """
    from datetime import UTC, datetime

    from builder.core import agecrypt
    from builder.drill.holders import append_checkins, check_holder, load_bundle
    from builder.release.spec import load_spec

    image = load_spec(spec)
    image.approver(approver)
    bundle = load_bundle(image.sealed_path)
    checkins = check_holder(bundle, approver, agecrypt.load_identities(identity), datetime.now(UTC))
    if checkin_file is not None:
        append_checkins(checkin_file, checkins)
    _emit(
        {"checkins": [c.to_dict() for c in checkins]},
        [
            f"checkin approver={c.approver} scope={c.scope} share={c.share_digest} ok"
            for c in checkins
        ]
        + [c.line() for c in checkins],
        as_json,
    )


def register(cli: click.Group) -> None:
    """Add this module's commands to the top-level group."""
    cli.add_command(drift_command)
    cli.add_command(drill_group)
