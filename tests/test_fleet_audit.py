"""``fleet audit pull`` and ``fleet audit timeline`` against real hosts over SSH.

Each edit the issue names is made on a host between two pulls, in a way
that ``host audit verify`` on the host itself accepts (head record rewritten
to match, or a whole valid chain): only the collected copy can tell.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.core.canonical import digest, dumps
from builder.fleet.audit_store import AuditStore
from builder.host import audit
from builder.host.layout import Layout
from tests import fleetkit
from tests.conftest import run_cli

LOG = "var/lib/breakglass/audit.jsonl"
HEAD = "var/lib/breakglass/audit.head"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fleetkit.TestFleet]:
    started = fleetkit.small_fleet(tmp_path_factory.mktemp("fleet-audit"), count=3)
    yield started
    started.stop()


@pytest.fixture
def clean(fleet: fleetkit.TestFleet) -> Iterator[fleetkit.TestFleet]:
    for h in fleet.hosts:
        fleetkit.reset(fleet, h)
    yield fleet


def pull(
    fleet: fleetkit.TestFleet, store: Path, *extra: str
) -> tuple[int, dict[str, dict[str, object]], str]:
    proc = run_cli("fleet", "audit", "pull", fleet.inventory, "--store", store, "--json", *extra)
    results = json.loads(proc.stdout) if proc.stdout.strip() else []
    return proc.returncode, {r["host"]: r for r in results}, proc.stderr


def verify_on_host(host: fleetkit.FleetHost) -> None:
    """What the host alone says about its log: these edits all pass."""
    audit.verify(Layout(host.root))


def test_pulls_are_incremental_and_extend_the_store(
    clean: fleetkit.TestFleet, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    h0 = clean.hosts[0]
    fleetkit.activate(clean.image, h0)
    code, res, err = pull(clean, store)
    assert code == 0, err
    events = len((h0.root / LOG).read_bytes().splitlines())
    assert res["host-000"]["status"] == "accepted" and res["host-000"]["new_events"] == events
    assert res["host-001"]["status"] == "no-log"
    first = AuditStore(store).collected("host-000")
    assert first.data == (h0.root / LOG).read_bytes()

    code, res, _ = pull(clean, store)
    assert code == 0 and res["host-000"]["new_events"] == 0

    fleetkit.reseal(h0)
    code, res, _ = pull(clean, store)
    assert code == 0 and res["host-000"]["new_events"] == 1
    second = AuditStore(store).collected("host-000")
    assert second.data.startswith(first.data) and second.data == (h0.root / LOG).read_bytes()
    assert second.head == json.loads((h0.root / HEAD).read_bytes())["head"]
    records = AuditStore(store).records("host-000")
    assert [r["status"] for r in records] == ["accepted"] * 3
    assert [r["to_seq"] for r in records] == [events, events, events + 1]


def _pull_edit_pull(
    fleet: fleetkit.TestFleet, store: Path, edit: object
) -> tuple[int, dict[str, object], str, bytes]:
    h = fleet.hosts[1]
    fleetkit.activate(fleet.image, h)
    fleetkit.reseal(h)
    code, _, err = pull(fleet, store, "--limit", h.name)
    assert code == 0, err
    kept = AuditStore(store).collected(h.name).data
    assert callable(edit)
    edit(h)
    verify_on_host(h)
    code, res, err = pull(fleet, store, "--limit", h.name)
    return code, res[h.name], err, kept


def test_last_line_deleted_and_head_rewritten(clean: fleetkit.TestFleet, tmp_path: Path) -> None:
    def edit(h: fleetkit.FleetHost) -> None:
        lines = (h.root / LOG).read_bytes().splitlines(keepends=True)
        (h.root / LOG).write_bytes(b"".join(lines[:-1]))
        (h.root / HEAD).write_bytes(
            json.dumps({"seq": len(lines) - 1, "head": digest(lines[-2])}).encode()
        )

    store = tmp_path / "store"
    code, r, err, kept = _pull_edit_pull(clean, store, edit)
    n = len(kept.splitlines())
    assert code == 1
    assert (
        f"breakglass: error: 1 host(s) with a log that does not extend the collected one: host-001 (log truncated at event {n})"
        in err
    )
    diff = r["first_difference"]
    assert isinstance(diff, dict)
    assert diff["line"] == n and diff["kind"] == "truncated" and diff["kept"]["event"] == "resealed"
    assert diff["host"] is None
    assert AuditStore(store).collected("host-001").data == kept  # the earlier copy is kept


def test_whole_log_replaced_by_a_valid_shorter_chain(
    clean: fleetkit.TestFleet, tmp_path: Path
) -> None:
    def edit(h: fleetkit.FleetHost) -> None:
        forged = tmp_path / "forged"
        t = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC)
        audit.append(Layout(forged), t, "request-created", scope="agent-backup", who="root")
        audit.append(Layout(forged), t, "request-cancelled", scope="agent-backup", who="root")
        (h.root / LOG).write_bytes((forged / LOG).read_bytes())
        (h.root / HEAD).write_bytes((forged / HEAD).read_bytes())

    store = tmp_path / "store"
    code, r, err, kept = _pull_edit_pull(clean, store, edit)
    assert code == 1 and "host-001 (log rewritten at event 1)" in err
    diff = r["first_difference"]
    assert isinstance(diff, dict)
    assert diff["line"] == 1 and diff["kept"]["event"] == "request-created"
    assert diff["host"]["time"] == "2026-11-29T12:00:00Z"
    assert AuditStore(store).collected("host-001").data == kept
    evidence = r["evidence"]
    assert (
        isinstance(evidence, str)
        and AuditStore(store).get(evidence) == (clean.hosts[1].root / LOG).read_bytes()
    )


def test_one_event_edited(clean: fleetkit.TestFleet, tmp_path: Path) -> None:
    def edit(h: fleetkit.FleetHost) -> None:
        # change who approved, then re-chain every later line and the head, as root could
        lines = (h.root / LOG).read_bytes().splitlines(keepends=True)
        k = next(i for i, line in enumerate(lines) if b"approval-accepted" in line)
        out, prev = [], digest(b"")
        for i, line in enumerate(lines):
            event = json.loads(line)
            if i == k:
                event["actor"] = "mallory"
            event["prev"] = prev
            out.append(dumps(event))
            prev = digest(out[-1])
        (h.root / LOG).write_bytes(b"".join(out))
        (h.root / HEAD).write_bytes(dumps({"seq": len(out), "head": prev}))
        edit.line = k + 1  # type: ignore[attr-defined]

    store = tmp_path / "store"
    code, r, err, _ = _pull_edit_pull(clean, store, edit)
    line = edit.line  # type: ignore[attr-defined]
    assert code == 1 and f"host-001 (log edited at event {line})" in err
    diff = r["first_difference"]
    assert isinstance(diff, dict) and diff["kind"] == "edited" and diff["line"] == line
    assert diff["kept"]["event"] == diff["host"]["event"] == "approval-accepted"
    assert diff["kept"]["line_hash"] != diff["host"]["line_hash"]


def test_timeline_merges_hosts_and_marks_tampering(
    clean: fleetkit.TestFleet, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    h0, h2 = clean.hosts[0], clean.hosts[2]
    fleetkit.activate(clean.image, h0)
    fleetkit.activate(clean.image, h2)
    fleetkit.reseal(h2)
    assert pull(clean, store)[0] == 0
    (h2.root / LOG).write_bytes(b"")
    (h2.root / HEAD).unlink()
    assert pull(clean, store)[0] == 1
    proc = run_cli("fleet", "audit", "timeline", "--store", store, "--json")
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(proc.stdout)
    assert [e["time"] for e in entries] == sorted(e["time"] for e in entries)
    assert {e["host"] for e in entries} == {"host-000", "host-002"}
    assert [e["event"] for e in entries if e["host"] == "host-002"][-2:] == [
        "resealed",
        "log-diverged",
    ]
    assert sum(1 for e in entries if e["category"] == "activation") == 4
    tamper = next(e for e in entries if e["category"] == "tampering")
    assert tamper["details"]["first_difference"]["kind"] == "truncated"
    page = run_cli("fleet", "audit", "timeline", "--store", store, "--html")
    assert page.returncode == 0 and page.stdout.startswith("<!doctype html>")
    assert page.stdout.count("<tr class=") == len(entries) and 'class="tampering"' in page.stdout
