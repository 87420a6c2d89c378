"""``breakglass approve``: the approver's command, run on their own machine."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click


@click.command("approve")
@click.argument("request")
@click.option(
    "--identity", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="Your age identity file (or OpenSSH private key) that decrypts your share.",
)  # fmt: skip
@click.option(
    "--signing-key", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="Your SSH signing key (a .pub whose key is in ssh-agent works too).",
)  # fmt: skip
@click.option("--approver", required=True, help="Your approver name as the image policy lists it.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the approval here."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def approve_cmd(
    request: str, identity: Path, signing_key: Path, approver: str, yes: bool, out: Path | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Approve REQUEST (a file or an armored line): re-encrypt your share to it and sign."""
    from builder.approve import approve, check_approvable, summary
    from builder.fsio import write_atomic
    from builder.request import load_request

    now = datetime.now(UTC).replace(microsecond=0)
    parsed = load_request(request)
    check_approvable(parsed, approver, now)
    if not yes:
        for label, value in summary(parsed):
            click.echo(f"{label:>15}: {value}", err=True)
        click.confirm(f"approve as {approver}?", abort=True, err=True)
    approval = approve(
        parsed, approver=approver, identity=identity, signing_key=signing_key, now=now
    )
    if out is not None:
        write_atomic(out, approval.canonical())
    if as_json:
        click.echo(json.dumps({"approval": approval.armored(), "digest": approval.digest,
                               "file": str(out) if out else None}, sort_keys=True))  # fmt: skip
    else:
        click.echo(approval.armored())


def register(cli: click.Group) -> None:
    """Add this module's commands to the top-level group."""
    cli.add_command(approve_cmd)
