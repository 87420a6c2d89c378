"""Host commands: status, request, unseal, reseal, tick, authorized-keys, audit.

Every command takes ``--root DIR`` (default ``/``) so that tests and drills
run against an unpacked image, and ``--json``. Imports of the host runtime
stay inside the commands so that ``breakglass --help`` starts fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _now(root: Path) -> datetime:
    from builder.host import clock

    return clock.now(root)


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
    click.echo(json.dumps(doc, sort_keys=True) if as_json else text)


@click.group("host")
def host() -> None:
    """Run on the host: request, unseal, expire, audit."""


@host.command("status")
@_common
def status_cmd(root: Path, as_json: bool) -> None:
    """Show DORMANT / PENDING / ACTIVE, burned scopes and the image (expiry is applied first)."""
    from builder.host.status import describe, render

    doc = describe(root, _now(root))
    _out(as_json, doc, render(doc))


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
    from builder.duration import parse
    from builder.fsio import write_atomic
    from builder.host.layout import Layout
    from builder.host.request import open_request

    request = open_request(
        root, _now(root), scope=scope, ttl_seconds=parse(ttl), reason=reason, requester=requester
    )
    stored = Layout(root).request_file(request.id)
    if out is not None:
        write_atomic(out, request.canonical())
    doc = {
        "request_id": request.id,
        "file": str(out or stored),
        "stored": str(stored),
        "digest": request.digest,
        "not_after": request.to_dict()["not_after"],
        "armored": request.armored(),
    }
    _out(as_json, doc, request.armored())
    if not as_json:
        click.echo(f"request {request.id} written to {out or stored}; needs approvals", err=True)


@host.command("unseal")
@click.argument("request_id")
@click.argument("approvals", nargs=-1, required=True)
@_common
def unseal_cmd(request_id: str, approvals: tuple[str, ...], root: Path, as_json: bool) -> None:
    """Add approvals (files or armored lines); at quorum, open the request's scope."""
    from builder.host.unseal import unseal
    from builder.request import format_time

    result = unseal(root, _now(root), request_id, list(approvals))
    expires = format_time(result.expires_at) if result.expires_at else None
    doc = {
        "state": result.phase, "request_id": result.request_id, "scope": result.scope,
        "approvals": list(result.approvals), "needed": result.needed, "expires_at": expires,
        "refused": list(result.refused),
    }  # fmt: skip
    if result.phase == "ACTIVE":
        text = f"ACTIVE: scope {result.scope} open until {expires}"
    else:
        text = f"PENDING: {len(result.approvals)} of {result.needed} approvals ({', '.join(result.approvals)})"
    _out(as_json, doc, text)


@host.command("reseal")
@_common
def reseal_cmd(root: Path, as_json: bool) -> None:
    """Close the window now: wipe plaintext, restore the dormant config, return to DORMANT."""
    from builder.host.expire import reseal, session

    now = _now(root)
    with session(root, now) as (layout, current):
        before = current.phase
        if before != "DORMANT":
            event = "resealed" if before == "ACTIVE" else "request-cancelled"
            reseal(layout, current, now, event, {"by": "reseal"})
    _out(as_json, {"state": "DORMANT", "was": before}, f"DORMANT (was {before})")


@host.command("tick")
@_common
def tick_cmd(root: Path, as_json: bool) -> None:
    """Apply expiry and crash recovery (run by the systemd timer)."""
    from builder.host.expire import session

    with session(root, _now(root)) as (_layout, current):
        phase = current.phase
    _out(as_json, {"state": phase}, phase)


@host.command("authorized-keys")
@click.argument("user")
@_common
def authorized_keys_cmd(user: str, root: Path, as_json: bool) -> None:
    """For sshd's AuthorizedKeysCommand: USER's key while its scope is open, else nothing."""
    from builder.host.authorized_keys import authorized_keys, emit

    emit(authorized_keys(root, user, _now(root)), user, as_json)


@host.group("audit")
def audit_group() -> None:
    """Verify and read the hash-chained audit log."""


@audit_group.command("verify")
@click.option("--expect-head", help="A head hash anchored earlier (e.g. in an incident ticket).")
@_common
def audit_verify_cmd(expect_head: str | None, root: Path, as_json: bool) -> None:
    """Check the chain; report the first bad line; print the head hash."""
    from builder.host import audit
    from builder.host.layout import Layout, require_image

    require_image(root)
    result = audit.verify(Layout(root), expect_head=expect_head)
    _out(
        as_json,
        {"ok": True, "events": result.events, "head": result.head},
        f"ok: {result.events} events\nhead: {result.head}",
    )


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
    from builder.display import escape

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
    cli.add_command(host)
