"""Host commands: status, request, unseal, reseal, tick, authorized-keys, audit.

Every command takes ``--root DIR`` (default ``/``) so that tests and drills
run against an unpacked image, and ``--json``. Imports of the host runtime
stay inside the commands so that ``breakglass --help`` starts fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _common(f: F) -> F:
    f = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)
    f = click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("/"),
        show_default=True,
        help="Root of the image the host runs (an unpacked image in tests and drills).",
    )(f)
    return f


def _out(as_json: bool, doc: dict[str, Any], text: str) -> None:
    from builder.host.commands import emit

    emit(as_json, doc, text)


@click.group("host")
def host() -> None:
    """Run on the host: request, unseal, expire, audit."""


@host.command("status")
@_common
def status_cmd(root: Path, as_json: bool) -> None:
    """Show DORMANT / PENDING / ACTIVE, burned scopes and the image (expiry is applied first)."""
    from builder.host.commands import run_status

    _out(as_json, *run_status(root))


@host.command("request")
@click.option("--scope", required=True, help="The scope to unseal.")
@click.option("--ttl", required=True, help="How long the window stays open, e.g. 15m.")
@click.option("--reason", required=True, help="Why; shown to every approver and audited.")
@click.option("--requester", required=True, help="Your name (you cannot approve it yourself).")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the request here."
)
@_common
def request_cmd(
    scope: str, ttl: str, reason: str, requester: str, out: Path | None, root: Path, as_json: bool
) -> None:
    """Open a request for approvals; prints it as one copy-pastable line."""
    from builder.host.commands import run_request

    doc, text, note = run_request(
        root, scope=scope, ttl=ttl, reason=reason, requester=requester, out=out
    )
    _out(as_json, doc, text)
    if not as_json:
        click.echo(note, err=True)


@host.command("unseal")
@click.argument("request_id")
@click.argument("approvals", nargs=-1, required=True)
@_common
def unseal_cmd(request_id: str, approvals: tuple[str, ...], root: Path, as_json: bool) -> None:
    """Add approvals (files or armored lines); at quorum, open the request's scope."""
    from builder.host.commands import run_unseal

    _out(as_json, *run_unseal(root, request_id, list(approvals)))


@host.command("reseal")
@_common
def reseal_cmd(root: Path, as_json: bool) -> None:
    """Close the window now: wipe plaintext, restore the dormant config, return to DORMANT."""
    from builder.host.commands import run_reseal

    _out(as_json, *run_reseal(root))


@host.command("tick")
@_common
def tick_cmd(root: Path, as_json: bool) -> None:
    """Apply expiry and crash recovery (run by the systemd timer)."""
    from builder.host.commands import run_tick

    _out(as_json, *run_tick(root))


@host.command("authorized-keys")
@click.argument("user")
@_common
def authorized_keys_cmd(user: str, root: Path, as_json: bool) -> None:
    """For sshd's AuthorizedKeysCommand: USER's key while its scope is open, else nothing."""
    from builder.host.authorized_keys import emit
    from builder.host.commands import run_authorized_keys

    emit(run_authorized_keys(root, user), user, as_json)


@host.command("record-session")
@_common
def record_session_cmd(root: Path, as_json: bool) -> None:
    """For sshd's ForceCommand (through sudo): run the emergency login under a recording."""
    import os
    import sys

    from builder.host.commands import now
    from builder.host.record import record_session

    sys.exit(record_session(root, now(root), os.environ.get("SSH_ORIGINAL_COMMAND") or None))


@host.command("report")
@click.argument("request_id")
@click.option("--html", "as_html", is_flag=True, help="One self-contained HTML page.")
@_common
def report_cmd(request_id: str, as_html: bool, root: Path, as_json: bool) -> None:
    """Review a window: timeline, approvers, sudo commands, recordings and how to replay them."""
    from builder.host import report

    doc = report.build(root, request_id)
    text = report.render_html(doc) if as_html else report.render_text(doc)
    _out(as_json, doc, text)


@host.group("audit")
def audit_group() -> None:
    """Verify and read the hash-chained audit log."""


@audit_group.command("verify")
@click.option("--expect-head", help="A head hash anchored earlier (e.g. in an incident ticket).")
@_common
def audit_verify_cmd(expect_head: str | None, root: Path, as_json: bool) -> None:
    """Check the chain; report the first bad line; print the head hash."""
    from builder.host.commands import run_audit_verify

    _out(as_json, *run_audit_verify(root, expect_head))


@audit_group.command("show")
@_common
def audit_show_cmd(root: Path, as_json: bool) -> None:
    """Print the audit events."""
    from builder.host import audit
    from builder.host.layout import Layout, require_image

    require_image(root)
    events = audit.read_events(Layout(root))
    if as_json:
        click.echo(json.dumps(events, sort_keys=True))
        return
    from builder.core.display import escape

    for e in events:
        details = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(e["details"].items()))
        rid = str(e.get("request_id") or "-")[:8]
        line = (
            f"{e.get('seq')} {e.get('time')} {e.get('event')} actor={e.get('actor')} "
            f"request={rid} scope={e.get('scope') or '-'} {details}".rstrip()
        )
        click.echo(escape(line, backslash=False))  # the log is written by anyone who owns the host


def register(cli: click.Group) -> None:
    """Add this module's commands to the top-level group."""
    from builder.cli import host_install

    host_install.register(host)
    cli.add_command(host)
