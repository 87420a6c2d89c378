"""Reading a host's answer into a status row: whatever a host sends, a row comes out, never a crash."""

from __future__ import annotations

import datetime as dt
import json

from hypothesis import given
from hypothesis import strategies as st

from builder.core.canonical import dumps
from builder.fleet.inventory import HostResult
from builder.fleet.probe import FILES, Probe, parse, probe_script
from builder.fleet.status import assess, host_row

NOW = dt.datetime(2026, 11, 29, 19, 0, 0, tzinfo=dt.UTC)


@given(
    st.dictionaries(st.sampled_from(sorted(FILES)), st.one_of(st.none(), st.binary(max_size=200))),
    st.integers(0, 10),
)
def test_any_bytes_give_a_row(files: dict[str, bytes | None], lines: int) -> None:
    row = host_row(HostResult("h", True, Probe(files=files, audit_lines=lines)), NOW)
    assert row.host == "h" and row.reachable
    json.dumps(row.to_dict())


@given(st.lists(st.text(max_size=80), max_size=8))
def test_any_output_parses(lines: list[str]) -> None:
    parse(lines, Probe())


def test_control_characters_from_a_host_are_escaped() -> None:
    manifest = dumps(
        {"image": {"name": "evil\x1b[2J", "version": "1.0.0\r"}, "scopes": [], "sealed_bundle": {}}
    )
    result = HostResult("h", True, Probe(files={"manifest": manifest}))
    text = "\n".join(assess({"h": result}, NOW).lines())
    assert "\x1b" not in text and "\r" not in text and "evil\\x1b[2J" in text


def test_probe_script_quotes_the_root() -> None:
    script = probe_script("/srv/it's here")
    assert "cd '/srv/it'\"'\"'s here'" in script


def test_expired_active_state_is_named() -> None:
    state = dumps({
        "format": "breakglass-host-state/1", "phase": "ACTIVE", "pending": None, "burned": {},
        "active": {"request_id": "r", "scope": "s", "files": [], "activated_at": "2026-11-29T17:00:00Z",
                   "expires_at": "2026-11-29T18:00:00Z"},
    })  # fmt: skip
    row = host_row(HostResult("h", True, Probe(files={"state": state})), NOW)
    assert row.phase == "ACTIVE" and row.seconds_left == 0
    assert "ACTIVE past expires_at 2026-11-29T18:00:00Z (expiry never ran)" in row.problems
