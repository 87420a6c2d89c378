"""The host commands' bodies, and the click-free dispatcher that runs them.

``breakglass host ...`` runs on the host, often from sshd or a timer, where
start-up time is most of the cost. ``fast_main`` parses the simple
command lines itself (options and arguments as click would take them) and
calls the same functions as ``builder.cli.host``; anything it does not
recognise (``--help``, an unknown or malformed option, a path click would
refuse) returns None and the full click CLI answers it, with click's own
messages. There is one implementation of each command: the click commands
call the ``run_*`` functions below too, and print with ``emit``.

Every ``run_*`` returns ``(doc, text)``: the ``--json`` document and the
human text. Nothing here imports click, jinja2 or ruamel.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing (and pathlib: re, enum...) cost the start of every host command
if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from pathlib import Path
    from typing import Any

    Output = tuple[dict[str, Any], str]

REPORT_URL = "https://github.com/breakglass-dev/breakglass/issues"


def now(root: Path) -> datetime:
    from builder.host import clock

    return clock.now(root)


def emit(as_json: bool, doc: dict[str, Any], text: str) -> None:
    """Print ``doc`` as sorted JSON with ``as_json``, else ``text``; one trailing newline."""
    if as_json:
        import json

        text = json.dumps(doc, sort_keys=True)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run_status(root: Path) -> Output:
    from builder.host.status import describe, render

    doc = describe(root, now(root))
    return doc, render(doc)


def run_request(
    root: Path, *, scope: str, ttl: str, reason: str, requester: str, out: Path | None
) -> tuple[dict[str, Any], str, str]:
    """Open a request; returns the document, the armored line and the note for stderr."""
    from builder.core.duration import parse
    from builder.core.fsio import write_atomic
    from builder.host.layout import Layout
    from builder.host.request import open_request

    request = open_request(
        root, now(root), scope=scope, ttl_seconds=parse(ttl), reason=reason, requester=requester
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
    # the id on a line of its own: it is what `host unseal` takes, and the armored line is long
    note = (
        f"request id: {request.id}\n"
        f"written to {out or stored}; send it to the approvers, then run: "
        f"breakglass host unseal {request.id} APPROVAL..."
    )
    return doc, request.armored(), note


def run_unseal(root: Path, request_id: str, approvals: list[str]) -> Output:
    from builder.approval.request import format_time
    from builder.host.unseal import progress, unseal

    result = unseal(root, now(root), request_id, approvals)
    expires = format_time(result.expires_at) if result.expires_at else None
    doc = {
        "state": result.phase, "request_id": result.request_id, "scope": result.scope,
        "approvals": list(result.approvals), "needed": result.needed, "expires_at": expires,
        "refused": list(result.refused),
    }  # fmt: skip
    if result.phase == "ACTIVE":
        text = f"ACTIVE: scope {result.scope} open until {expires}"
    else:
        text = f"PENDING: {progress(result.approvals, result.needed)}"
    return doc, text


def run_reseal(root: Path) -> Output:
    from builder.host.expire import reseal, session

    at = now(root)
    with session(root, at) as (layout, current):
        before = current.phase
        if before != "DORMANT":
            event = "resealed" if before == "ACTIVE" else "request-cancelled"
            reseal(layout, current, at, event, {"by": "reseal"})
    return {"state": "DORMANT", "was": before}, f"DORMANT (was {before})"


def run_tick(root: Path) -> Output:
    from builder.host.expire import session

    with session(root, now(root)) as (_layout, current):
        phase = current.phase
    return {"state": phase}, phase


def run_authorized_keys(root: Path, user: str) -> list[str]:
    from builder.host.authorized_keys import authorized_keys

    return authorized_keys(root, user, now(root))


def run_audit_verify(root: Path, expect_head: str | None) -> Output:
    from builder.host import audit
    from builder.host.layout import Layout, require_image

    require_image(root)
    result = audit.verify(Layout(root), expect_head=expect_head, recordings=True)
    return (
        {"ok": True, "events": result.events, "head": result.head},
        f"ok: {result.events} events\nhead: {result.head}",
    )


# -- the click-free dispatcher ------------------------------------------------

# command words -> (options taking a value, required options, positional arity)
# arity: (fewest, most or None for any number)
_SPECS: dict[tuple[str, ...], tuple[frozenset[str], frozenset[str], tuple[int, int | None]]] = {
    ("status",): (frozenset(), frozenset(), (0, 0)),
    ("tick",): (frozenset(), frozenset(), (0, 0)),
    ("reseal",): (frozenset(), frozenset(), (0, 0)),
    ("authorized-keys",): (frozenset(), frozenset(), (1, 1)),
    ("unseal",): (frozenset(), frozenset(), (2, None)),
    ("request",): (
        frozenset({"--scope", "--ttl", "--reason", "--requester", "--out"}),
        frozenset({"--scope", "--ttl", "--reason", "--requester"}),
        (0, 0),
    ),
    ("audit", "verify"): (frozenset({"--expect-head"}), frozenset(), (0, 0)),
    ("record-session",): (frozenset(), frozenset(), (0, 0)),
}


def _parse(argv: list[str]) -> tuple[tuple[str, ...], dict[str, str], list[str], bool] | None:
    """``host ...`` argv as (command, options, positionals, --json); None to leave it to click."""
    words = tuple(argv[:2]) if argv[:1] == ["audit"] else tuple(argv[:1])
    spec = _SPECS.get(words)
    if spec is None:
        return None
    takes_value, required, (fewest, most) = spec
    takes_value = takes_value | {"--root"}
    options: dict[str, str] = {}
    positional: list[str] = []
    as_json = False
    args = argv[len(words) :]
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--json":
            as_json = True
            continue
        name, eq, value = arg.partition("=")
        if name in takes_value and arg.startswith("--"):
            if not eq:
                if i >= len(args):
                    return None
                value = args[i]
                i += 1
            # click's messages for odd values (a path that is a file, an empty one) are its own
            if not value or value.startswith("-"):
                return None
            options[name] = value
        elif arg.startswith("-"):
            return None  # --help, --, an unknown option: click says what it says
        else:
            positional.append(arg)
    if not required <= set(options) or len(positional) < fewest:
        return None
    if most is not None and len(positional) > most:
        return None
    root = options.get("--root", "/")
    if os.path.exists(root) and not os.path.isdir(root):
        return None
    out = options.get("--out")
    if out is not None and os.path.isdir(out):
        return None
    return words, options, positional, as_json


def fast_main(argv: list[str]) -> int | None:
    """Run ``host ARGV`` without click; the exit code, or None when click must answer.

    Errors are reported as ``builder.cli.main`` reports them: one line
    ``breakglass: error: ...``, an optional ``hint: ...``, the error's exit code.
    """
    parsed = _parse(argv)
    if parsed is None:
        return None
    words, options, positional, as_json = parsed
    root = options.get("--root", "/")
    try:
        _dispatch(words, root, options, positional, as_json)
    except KeyboardInterrupt:
        return _fail("interrupted", None, 130)
    except Exception as e:
        from builder.core.errors import BreakglassError

        if isinstance(e, BreakglassError):
            return _fail(e.message, e.hint, e.exit_code)
        return _fail(
            f"internal error ({type(e).__name__}); please report it at {REPORT_URL}", None, 3
        )
    return 0


def _dispatch(
    words: tuple[str, ...],
    root_arg: str,
    options: dict[str, str],
    positional: list[str],
    as_json: bool,
) -> None:
    if words == ("authorized-keys",):
        from builder.host.authorized_keys import fast_main as quick_keys

        # the lock-free answer when the host needs no settling, else the full path below
        argv = [f"--root={root_arg}", *(["--json"] if as_json else []), positional[0]]
        if quick_keys(argv) is not None:
            return
    if words == ("status",):
        from builder.host.status import fast_describe, render

        # the answer without settling when there is nothing to settle, else the full path below
        quick = fast_describe(root_arg)
        if quick is not None:
            emit(as_json, quick, render(quick))
            return
    from pathlib import Path

    root = Path(root_arg)
    simple: dict[tuple[str, ...], Callable[[Path], Output]] = {
        ("status",): run_status,
        ("tick",): run_tick,
        ("reseal",): run_reseal,
    }
    if words in simple:
        emit(as_json, *simple[words](root))
    elif words == ("authorized-keys",):
        from builder.host.authorized_keys import emit as emit_keys

        emit_keys(run_authorized_keys(root, positional[0]), positional[0], as_json)
    elif words == ("unseal",):
        emit(as_json, *run_unseal(root, positional[0], positional[1:]))
    elif words == ("request",):
        out = options.get("--out")
        doc, text, note = run_request(
            root,
            scope=options["--scope"],
            ttl=options["--ttl"],
            reason=options["--reason"],
            requester=options["--requester"],
            out=Path(out) if out is not None else None,
        )
        emit(as_json, doc, text)
        if not as_json:
            sys.stderr.write(note + "\n")
            sys.stderr.flush()
    elif words == ("audit", "verify"):
        emit(as_json, *run_audit_verify(root, options.get("--expect-head")))
    elif words == ("record-session",):
        from builder.host.record import record_session

        # every emergency login starts here (sshd's ForceCommand): the session's status is ours
        raise SystemExit(record_session(root, now(root), os.environ.get("SSH_ORIGINAL_COMMAND")))
    else:  # pragma: no cover - _SPECS and this table list the same commands
        raise AssertionError(words)


def _fail(message: str, hint: str | None, code: int) -> int:
    sys.stdout.flush()
    sys.stderr.write(f"breakglass: error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
    sys.stderr.flush()
    return code
