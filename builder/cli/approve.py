"""``breakglass approve``: the approver's command, run on their own machine."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from builder.approval.request import UnsealRequest


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
@click.option(
    "--image", "image_dir", type=click.Path(file_okay=False, path_type=Path),
    help="The published image (dist/NAME/VERSION): refuse a request for any other manifest.",
)  # fmt: skip
@click.option(
    "--allowed-signers", type=click.Path(dir_okay=False, path_type=Path),
    help="Trusted image signers, to check --image's signature first.",
)  # fmt: skip
@click.option(
    "--receipts", "receipts_dir", type=click.Path(file_okay=False, path_type=Path),
    help="Keep the approval's receipt here (default ~/.local/state/breakglass/receipts); "
    "`drift --receipts` checks receipts against hosts' audit logs.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def approve_cmd(
    request: str, identity: Path, signing_key: Path, approver: str, yes: bool, out: Path | None,
    image_dir: Path | None, allowed_signers: Path | None, receipts_dir: Path | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Approve REQUEST (a file or an armored line): re-encrypt your share to it and sign."""
    from builder.approval import receipt
    from builder.approval.approve import approve, check_approvable
    from builder.approval.request import load_request
    from builder.core.fsio import write_atomic

    now = datetime.now(UTC).replace(microsecond=0)
    parsed = load_request(request)
    check_approvable(parsed, approver, now)
    if image_dir is not None:
        _check_published_image(parsed.image.manifest_digest, image_dir, allowed_signers)
    if not yes:
        _show(parsed)
        _confirm(approver)
    approval = approve(
        parsed, approver=approver, identity=identity, signing_key=signing_key, now=now
    )
    if yes:  # no prompt, but the terminal still keeps what was approved
        _show(parsed)
    # the receipt first: an approval that leaves no receipt cannot be checked against the host
    receipt_path = receipt.keep(receipt.Receipt.of(parsed, approval),
                                receipts_dir or receipt.default_dir())  # fmt: skip
    if out is not None:
        write_atomic(out, approval.canonical())
    if as_json:
        click.echo(json.dumps({"approval": approval.armored(), "digest": approval.digest,
                               "file": str(out) if out else None,
                               "receipt": str(receipt_path)}, sort_keys=True))  # fmt: skip
    else:
        click.echo(approval.armored())


def _show(parsed: UnsealRequest) -> None:
    from builder.approval.approve import summary

    for label, value in summary(parsed):
        click.echo(f"{label:>15}: {value}", err=True)


def _confirm(approver: str) -> None:
    """Ask for a yes; no answer at all (no terminal, stdin closed) is an error that names --yes."""
    from builder.core.errors import InputError

    click.echo(f"approve as {approver}? [y/N]: ", nl=False, err=True)
    answer = sys.stdin.readline()
    if not answer:
        click.echo(err=True)
        raise InputError(
            "no answer to the confirmation (no terminal?)",
            hint="read the request above; to approve it without a prompt, rerun with --yes",
        )
    if answer.strip().lower() not in ("y", "yes"):
        raise click.exceptions.Abort()


def _check_published_image(wanted: str, image_dir: Path, allowed_signers: Path | None) -> None:
    """Refuse a request whose manifest is not the published, signed one: a forged request
    could otherwise carry real shares from the public bundle and an attacker's recipient."""
    from builder.core import canonical, sshsig
    from builder.core.errors import CheckFailed, InputError
    from builder.release.build import MANIFEST_NAME, SIGNATURE_NAME

    if allowed_signers is None:
        raise InputError("--image needs --allowed-signers to check the image's signature")
    try:
        manifest = (image_dir / MANIFEST_NAME).read_bytes()
        signature = (image_dir / SIGNATURE_NAME).read_text(encoding="ascii", errors="replace")
        signers = allowed_signers.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(
            f"cannot read the published image ({e.strerror})", where=str(e.filename)
        ) from None
    sshsig.verify_allowed_signers(manifest, signature, signers, sshsig.MANIFEST_NAMESPACE)
    if canonical.digest(manifest) != wanted:
        raise CheckFailed("the request is for another image than the published one; not approving")


def register(cli: click.Group) -> None:
    """Add this module's commands to the top-level group."""
    cli.add_command(approve_cmd)
