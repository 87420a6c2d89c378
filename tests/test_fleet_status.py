"""``fleet status`` over a small real fleet: 4 image roots, each behind its own sshd on loopback.

pyinfra reaches every host over SSH; the CLI runs as a separate process.
The 50-host version of these cases is in tests/test_fleet_e2e.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.core.canonical import digest
from tests import fleetkit, hostkit
from tests.conftest import require_root, require_tool, run_cli


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fleetkit.TestFleet]:
    require_root("each host's sshd runs as root in bwrap")
    for tool in ("bwrap", "sshd", "ssh-keygen", "ssh"):
        require_tool(tool)
    started = fleetkit.start_fleet(
        hostkit.shared_image(), tmp_path_factory.mktemp("fleet"), count=4
    )
    yield started
    started.stop()


@pytest.fixture
def clean(fleet: fleetkit.TestFleet) -> Iterator[fleetkit.TestFleet]:
    """The fleet with every host DORMANT and reachable again after the test."""
    yield fleet
    for h in fleet.hosts:
        fleetkit.reset(fleet, h)
        if h.proc is None:
            fleet.start_host(h)
    fleet.write_known_hosts()
    fleet.write_inventory()


def status(fleet: fleetkit.TestFleet, *extra: str) -> tuple[int, dict[str, object], str]:
    proc = run_cli("fleet", "status", fleet.inventory, "--json", *extra)
    doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, doc, proc.stderr


def rows(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    hosts = doc["hosts"]
    assert isinstance(hosts, list)
    return {r["host"]: r for r in hosts}


def test_all_hosts_dormant_and_described(clean: fleetkit.TestFleet) -> None:
    code, doc, err = status(clean)
    assert code == 0, err
    by_host = rows(doc)
    assert sorted(by_host) == [h.name for h in clean.hosts]
    want = digest((clean.image.root / "etc/breakglass/manifest.json").read_bytes())
    for r in by_host.values():
        assert r["reachable"] is True and r["phase"] == "DORMANT" and r["problems"] == []
        assert (r["image"], r["version"], r["manifest_digest"]) == ("hostkit", "1.0.0", want)
        assert r["audit_events"] == 0 and r["burned"] == []
        assert isinstance(r["clock_skew"], float) and abs(r["clock_skew"]) < 5
    assert doc["summary"] == {
        "hosts": 4, "reachable": 4, "unreachable": 0, "active": 0, "pending": 0, "with_problems": 0,
    }  # fmt: skip


def test_active_host_fails_the_run_and_is_named(clean: fleetkit.TestFleet) -> None:
    target = clean.hosts[1]
    fleetkit.activate(clean.image, target, ttl=600)
    code, doc, err = status(clean)
    assert code == 1
    assert err.startswith("breakglass: error: 1 host(s) need attention: host-001")
    r = rows(doc)["host-001"]
    assert r["phase"] == "ACTIVE" and r["scope"] == "agent-backup"
    assert isinstance(r["seconds_left"], int) and 500 < r["seconds_left"] <= 600
    assert r["burned"] == ["agent-backup"]
    head = json.loads((target.root / "var/lib/breakglass/audit.head").read_bytes())
    assert (r["audit_head"], r["audit_events"]) == (head["head"], head["seq"])
    assert all(rows(doc)[h.name]["problems"] == [] for h in clean.hosts if h is not target)


def test_forged_past_expiry_is_named(clean: fleetkit.TestFleet) -> None:
    fleetkit.forge_expired(clean.hosts[2])
    proc = run_cli("fleet", "status", clean.inventory)
    assert proc.returncode == 1
    assert "host-002" in proc.stderr and proc.stderr.count("\n") == 1
    line = next(x for x in proc.stdout.splitlines() if x.startswith("host-002:"))
    assert "ACTIVE past expires_at" in line and "expiry never ran" in line
    # reading never settles a host: the forged state is still there for the responder to see
    assert b'"ACTIVE"' in (clean.hosts[2].root / "var/lib/breakglass/state.json").read_bytes()


def test_unreachable_host_is_reported_not_fatal(clean: fleetkit.TestFleet) -> None:
    clean.stop_host(clean.hosts[3])
    code, doc, err = status(clean)
    assert code == 0, err
    r = rows(doc)["host-003"]
    assert r["reachable"] is False and r["error"]
    assert doc["summary"]["unreachable"] == 1 and doc["summary"]["reachable"] == 3  # type: ignore[index]
    text = run_cli("fleet", "status", clean.inventory)
    assert "host-003: UNREACHABLE" in text.stdout
    assert "4 hosts, 3 reachable, 1 unreachable" in text.stdout


def test_limit_by_group_and_by_glob(clean: fleetkit.TestFleet) -> None:
    _, doc, _ = status(clean, "--limit", "db")
    assert sorted(rows(doc)) == ["host-001", "host-003"]
    _, doc, _ = status(clean, "--limit", "host-00[02]", "--parallel", "1")
    assert sorted(rows(doc)) == ["host-000", "host-002"]
    proc = run_cli("fleet", "status", clean.inventory, "--limit", "nosuch")
    assert proc.returncode == 2
    assert (
        proc.stderr
        == "breakglass: error: --limit 'nosuch' matches no host or group of the inventory\n"
    )


def test_hosts_behind_the_newest_version(clean: fleetkit.TestFleet) -> None:
    code, doc, _ = status(clean, "--version", "1.2.0")
    assert code == 1 and doc["newest_version"] == "1.2.0"
    for r in rows(doc).values():
        assert r["problems"] == ["behind: runs 1.0.0, newest is 1.2.0"]
    proc = run_cli("fleet", "status", clean.inventory, "--version", "latest")
    assert proc.returncode == 2 and "not MAJOR.MINOR.PATCH" in proc.stderr


def test_bad_inventory_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "inv.py"
    bad.write_text("web = [\n")
    for inv in (str(bad), "no-such-inventory"):
        proc = run_cli("fleet", "status", inv)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("breakglass: error: ") and proc.stderr.count("\n") <= 2
        assert "Traceback" not in proc.stderr


def test_rotate_due_counts_scopes_burned_on_the_fleet(
    clean: fleetkit.TestFleet, tmp_path: Path
) -> None:
    import shutil

    src = tmp_path / "src"
    shutil.copytree(clean.image.root.parent / "src", src)
    spec = src / "hostkit.yaml"
    proc = run_cli("fleet", "rotate-due", spec, "--inventory", clean.inventory, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["action"] == "none"

    fleetkit.activate(clean.image, clean.hosts[2])
    bundle = (src / "hostkit.sealed.yaml").read_bytes()
    proc = run_cli("fleet", "rotate-due", spec, "--inventory", clean.inventory, "--json")
    assert proc.returncode == 0, proc.stderr
    (report,) = json.loads(proc.stdout)
    assert report["due"] == {"agent-backup": ["burned"]}
    assert (report["action"], report["new_version"]) == ("rotated", "1.0.1")
    assert (src / "hostkit.sealed.yaml").read_bytes() != bundle
