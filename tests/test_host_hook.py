"""The ``on_activate`` hook gets the event on stdin; its failure is audited, not fatal."""

from __future__ import annotations

import atexit
import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path

from builder.host import audit
from builder.host.layout import Layout
from builder.host.request import open_request
from builder.host.unseal import unseal
from tests import hostkit

T0 = dt.datetime(2026, 11, 29, 19, 0, 0, tzinfo=dt.UTC)
SINK = Path(tempfile.mkdtemp(prefix="breakglass-hook-")) / "event.json"
atexit.register(shutil.rmtree, SINK.parent, True)


def _activate(image: hostkit.Image) -> str:
    req = open_request(
        image.root, T0, scope="agent-backup", ttl_seconds=60, reason="hook", requester="dave"
    )
    approvals = [hostkit.lib_approve(req, image.approvers[n], T0) for n in ("bob", "carol")]
    assert unseal(image.root, T0, req.id, approvals).phase == "ACTIVE"
    return req.id


def test_hook_receives_the_activation_event(tmp_path: Path) -> None:
    built = hostkit.shared_image("hook-ok", on_activate=["/bin/sh", "-c", f"cat > {SINK}"])
    image = hostkit.clone(built, tmp_path / "root")
    rid = _activate(image)
    event = json.loads(SINK.read_text())
    assert (
        event["event"] == "activated"
        and event["request_id"] == rid
        and event["scope"] == "agent-backup"
    )
    assert event["approvers"] == ["bob", "carol"] and event["expires_at"] == "2026-11-29T19:01:00Z"
    last = audit.read_events(Layout(image.root))[-1]
    assert last["event"] == "hook-ok" and last["details"] == {"argv0": "/bin/sh", "exit": 0}


def test_failing_hook_is_audited_not_fatal(tmp_path: Path) -> None:
    built = hostkit.shared_image("hook-fail", on_activate=["/nonexistent/alert"])
    image = hostkit.clone(built, tmp_path / "root")
    _activate(image)
    events = audit.read_events(Layout(image.root))
    assert [e["event"] for e in events][-2:] == ["activated", "hook-failed"]
    assert events[-1]["details"] == {"argv0": "/nonexistent/alert", "error": "FileNotFoundError"}
    assert hostkit.plaintext_files(image.root) != []
