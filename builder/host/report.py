"""``host report REQUEST_ID``: the post-incident review of one break-glass window.

From the audit log and the host's files: the timeline (request, approvals,
activation, logins, expiry), who asked and why, who approved, the commands
run through sudo (from sudo's I/O logs under ``recordings/sudo``), and each
recording with its digest as the audit chain holds it and how to replay it.
Strings that came from a request (reason, requester) or a user (commands)
are escaped before they reach a terminal (``builder.core.display.escape``) or an
HTML page (``html.escape``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from builder.core.errors import InputError
from builder.host import audit, record
from builder.host.layout import Layout, require_image

# the events a review reads, in the words the timeline uses
_TIMELINE = {
    "request-created": "request created",
    "approval-accepted": "approval accepted",
    "approval-refused": "approval refused",
    "activation-refused": "activation refused",
    "activated": "activated",
    "expiry-scheduled": "expiry scheduled",
    "session-started": "login",
    "session-recorded": "recording hashed",
    "sessions-ended": "sessions ended",
    "expired": "expired",
    "resealed": "resealed",
    "request-expired": "request expired",
    "request-cancelled": "request cancelled",
    "recovered": "recovered",
    "tampered": "tampered",
    "clock-anomaly": "clock anomaly",
}


def build(root: Path, request_id: str) -> dict[str, Any]:
    """The review of ``request_id`` as a JSON document.

    Raises InputError when the host has no audited request of that id, CheckFailed
    when the audit log does not parse.
    """
    require_image(root)
    layout = Layout(root)
    events = [e for e in audit.read_events(layout) if e.get("request_id") == request_id]
    created = next((e for e in events if e.get("event") == "request-created"), None)
    if created is None:
        raise InputError(
            f"no request {request_id[:64]} in this host's audit log",
            hint="`breakglass host audit show` lists the request ids",
        )
    details = created.get("details") or {}
    timeline = [
        {"time": e.get("time"), "event": e.get("event"), "actor": e.get("actor"),
         "what": _TIMELINE[str(e.get("event"))], "details": e.get("details") or {}}
        for e in events if e.get("event") in _TIMELINE
    ]  # fmt: skip
    approvers = [
        str((e.get("details") or {}).get("approver"))
        for e in events
        if e.get("event") == "approval-accepted"
    ]
    files = record.recorded(events)
    top = record.recordings_dir(layout)
    recordings = _recordings(top, files)
    return {
        "request_id": request_id,
        "scope": created.get("scope"),
        "requester": created.get("actor"),
        "reason": details.get("reason"),
        "ttl_seconds": details.get("ttl_seconds"),
        "approvers": approvers,
        "timeline": timeline,
        "recordings": recordings,
        "sudo": _sudo_commands(top, files),
    }


def _recordings(top: Path, files: dict[str, tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The script recordings (pairs of ``.io`` and ``.timing``) and the sudo log sessions."""
    out: list[dict[str, Any]] = []
    for name, (seq, entry) in sorted(files.items()):
        base = {"name": name, "size": entry.get("size"), "sha256": entry.get("sha256"),
                "audit_seq": seq}  # fmt: skip
        if name.endswith(".io"):
            stem = name[: -len(".io")]
            timing = top / f"{stem}.timing"
            base["replay"] = f"scriptreplay --log-timing {timing} --log-io {top / name}"
        elif name.startswith(f"{record.SUDO_IO}/") and Path(name).name == "log":
            session = str(Path(name).parent.relative_to(record.SUDO_IO))
            base["replay"] = f"sudoreplay -d {top / record.SUDO_IO} {session}"
        out.append(base)
    return out


def _sudo_commands(top: Path, files: dict[str, tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """What sudo's I/O log says each session ran: its ``log.json``, or the ``log`` lines."""
    out = []
    for name in sorted(files):
        if not (name.startswith(f"{record.SUDO_IO}/") and Path(name).name == "log"):
            continue
        where = (top / name).parent
        session = str(where.relative_to(top / record.SUDO_IO))
        entry: dict[str, Any] = {"session": session}
        try:
            doc = json.loads((where / "log.json").read_bytes())
            entry.update(
                command=" ".join(doc.get("runargv") or [doc.get("command", "")]),
                user=doc.get("submituser"), runas=doc.get("runuser"), cwd=doc.get("runcwd"),
                time=(doc.get("submit_time") or {}).get("seconds"),
            )  # fmt: skip
        except (OSError, ValueError, AttributeError, TypeError):
            try:
                lines = (where / "log").read_text(errors="replace").splitlines()
            except OSError:
                lines = []
            # line 1: time:user:runas:group:tty:lines:cols, line 2: cwd, line 3: the command
            first = lines[0].split(":") if lines else []
            entry.update(
                command=lines[2] if len(lines) > 2 else None,
                user=first[1] if len(first) > 1 else None,
                runas=first[2] if len(first) > 2 else None,
                cwd=lines[1] if len(lines) > 1 else None,
                time=int(first[0]) if first and first[0].isdigit() else None,
            )
        entry["replay"] = f"sudoreplay -d {top / record.SUDO_IO} {session}"
        out.append(entry)
    return out


def render_text(doc: dict[str, Any]) -> str:
    """The review for a terminal; every string from a request or a session escaped."""
    from builder.core.display import escape

    def s(value: object) -> str:
        return escape(str(value)) if value is not None else "-"

    lines = [
        f"request {s(doc['request_id'])}",
        f"scope: {s(doc['scope'])}",
        f"requester: {s(doc['requester'])}",
        f"reason: {s(doc['reason'])}",
        f"approvers: {', '.join(s(a) for a in doc['approvers']) or '-'}",
        "",
        "timeline:",
    ]
    for t in doc["timeline"]:
        extra = _summary(t)
        lines.append(f"  {s(t['time'])}  {t['what']}  by {s(t['actor'])}{extra}")
    lines += ["", "commands run through sudo:"]
    for c in doc["sudo"] or []:
        lines.append(f"  {s(c.get('user'))} as {s(c.get('runas'))}: {s(c.get('command'))}")
        lines.append(f"    replay: {s(c['replay'])}")
    if not doc["sudo"]:
        lines.append("  (none recorded)")
    lines += ["", "recordings:"]
    for r in doc["recordings"]:
        lines.append(f"  {s(r['name'])}  {r['size']} bytes  {s(r['sha256'])}")
        if "replay" in r:
            lines.append(f"    replay: {s(r['replay'])}")
    if not doc["recordings"]:
        lines.append("  (none)")
    return "\n".join(lines)


def _summary(t: dict[str, Any]) -> str:
    from builder.core.display import escape

    d = t["details"]
    keys = ("approver", "expires_at", "user", "reason", "by", "found")
    parts = [f"{k}={escape(str(d[k]))}" for k in keys if k in d]
    if t["event"] == "session-recorded":
        parts.append(f"files={len(d.get('files') or [])}")
    return ("  " + " ".join(parts)) if parts else ""


def render_html(doc: dict[str, Any]) -> str:
    """The review as one self-contained HTML page; every value escaped (controls, then HTML)."""
    from html import escape

    from builder.core.display import escape as visible

    def e(value: object) -> str:
        return escape(visible(str(value))) if value is not None else "-"

    rows = "".join(
        f"<tr><td>{e(t['time'])}</td><td>{e(t['what'])}</td><td>{e(t['actor'])}</td>"
        f"<td>{e(_summary(t).strip())}</td></tr>"
        for t in doc["timeline"]
    )
    sudo = "".join(
        f"<tr><td>{e(c.get('user'))}</td><td>{e(c.get('runas'))}</td><td><code>{e(c.get('command'))}"
        f"</code></td><td><code>{e(c['replay'])}</code></td></tr>"
        for c in doc["sudo"]
    )
    recs = "".join(
        f"<tr><td>{e(r['name'])}</td><td>{e(r['size'])}</td><td><code>{e(r['sha256'])}</code></td>"
        f"<td><code>{e(r.get('replay', ''))}</code></td></tr>"
        for r in doc["recordings"]
    )
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>breakglass request {e(doc['request_id'])}</title></head><body>\n"
        f"<h1>Break-glass request {e(doc['request_id'])}</h1>\n"
        f"<p>scope {e(doc['scope'])}; requester {e(doc['requester'])}; "
        f"approvers {e(', '.join(doc['approvers']))}</p>\n<p>reason: {e(doc['reason'])}</p>\n"
        "<h2>Timeline</h2><table><tr><th>time</th><th>event</th><th>by</th><th>details</th></tr>"
        f"{rows}</table>\n"
        "<h2>Commands run through sudo</h2><table><tr><th>user</th><th>as</th><th>command</th>"
        f"<th>replay</th></tr>{sudo}</table>\n"
        "<h2>Recordings</h2><table><tr><th>file</th><th>bytes</th><th>sha256</th><th>replay</th></tr>"
        f"{recs}</table>\n</body></html>"
    )
