"""Exact-time expiry and session ending degrade to nothing off the running system (``--root``):
activation goes on, nothing is armed, killed or audited; the periodic tick and the check on
every command remain. The VM test (tests/test_e2e_vm.py) proves both under systemd."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from builder.host import schedule, sessions
from builder.host.layout import Layout
from builder.host.state import Active, HostState

T0 = dt.datetime(2026, 11, 29, 19, 0, tzinfo=dt.UTC)


def test_reseal_timer_is_skipped_under_root_and_says_why(tmp_path: Path) -> None:
    done = schedule.reseal_at(tmp_path, "ab" * 32, T0)
    assert done == {"skipped": "not the running system (--root)"}
    schedule.arm(Layout(tmp_path), T0, "ab" * 32, "ssh-emergency", T0)
    assert not (tmp_path / "var/lib/breakglass/audit.jsonl").exists()


def test_unit_name_keeps_only_safe_characters() -> None:
    assert schedule.unit_name("0123abcd" * 8) == "breakglass-reseal-0123abcd0123abcd"
    assert schedule.unit_name("../x;y z") == "breakglass-reseal-xyz"


def test_sessions_are_not_touched_under_root(tmp_path: Path) -> None:
    manifest = tmp_path / "etc/breakglass/manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"scopes": [{"name": "s", "emergency_user": "root"}]}')
    layout = Layout(tmp_path)
    assert sessions.emergency_user(layout, "s") == "root"
    assert sessions.emergency_user(layout, "other") is None
    # "root" here would be this machine's root: under --root nothing is killed or audited
    assert sessions.end_sessions(layout, T0, "r", "s") is None
    closed = HostState("ACTIVE", None, Active("r", "s", T0, T0, ()), {})
    sessions.end_for(layout, T0, closed)
    assert not (tmp_path / "var/lib/breakglass/audit.jsonl").exists()
