"""``fleet enrol`` against real hosts over SSH: --check changes nothing, a second run changes
nothing, and ``drift`` on the record it leaves is clean."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.fleet.drift import sealed_from_bundle
from tests import fleetkit
from tests.conftest import run_cli

TOKENS = "etc/deploy/breakglass-tokens"
KEYS = "home/ops/.ssh/authorized_keys"
ENROL_TOKEN = """    enrol:
      - hosts: web
        file: /etc/deploy/breakglass-tokens
        line: "breakglass {name} {fingerprint}"
        reload: [sh, -c, "echo reloaded >> reloads.log"]
"""
ENROL_KEY = """    enrol:
      - hosts: db
        file: /home/ops/.ssh/authorized_keys
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fleetkit.TestFleet]:
    started = fleetkit.small_fleet(tmp_path_factory.mktemp("fleet-enrol"), count=3)
    yield started
    started.stop()


@pytest.fixture
def spec(fleet: fleetkit.TestFleet, tmp_path: Path) -> Iterator[Path]:
    """The fleet image's spec and sealed bundle, with enrol targets added; hosts reset after."""
    src = tmp_path / "src"
    shutil.copytree(fleet.image.root.parent / "src", src)
    path = src / "hostkit.yaml"
    text = path.read_text()
    text = text.replace("generate: token\n", "generate: token\n" + ENROL_TOKEN)
    text = text.replace("generate: ssh-ed25519\n", "generate: ssh-ed25519\n" + ENROL_KEY)
    path.write_text(text)
    for h in fleet.hosts:
        (h.root / TOKENS).parent.mkdir(parents=True, exist_ok=True)
        (h.root / KEYS).parent.mkdir(parents=True, exist_ok=True)
    yield path
    for h in fleet.hosts:
        fleetkit.reset(fleet, h)
        (h.workdir / "home/reloads.log").unlink(missing_ok=True)


def enrol(fleet: fleetkit.TestFleet, spec: Path, *extra: str) -> tuple[int, dict[str, object], str]:
    proc = run_cli("fleet", "enrol", spec, fleet.inventory, "--json", *extra)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def reloads(h: fleetkit.FleetHost) -> int:
    log = h.workdir / "home/reloads.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_check_then_enrol_then_nothing_left_and_drift_clean(
    fleet: fleetkit.TestFleet, spec: Path, tmp_path: Path
) -> None:
    web, db = [fleet.hosts[0], fleet.hosts[2]], [fleet.hosts[1]]
    code, doc, err = enrol(fleet, spec, "--check")
    assert code == 1 and "3 enrolment change(s) pending" in err
    assert doc["changes"] == 3 and doc["in_place"] == []
    assert not any((h.root / TOKENS).exists() or (h.root / KEYS).exists() for h in fleet.hosts)
    assert all(reloads(h) == 0 for h in fleet.hosts)

    record = tmp_path / "enrolled.json"
    code, doc, err = enrol(fleet, spec, "--record", str(record))
    assert code == 0, err
    assert doc["changes"] == 3 and doc["failed"] == 0, doc
    parts = {
        c.name: c for c in sealed_from_bundle(spec.with_name("hostkit.sealed.yaml")).credentials
    }
    token, key = parts["deploy-token"], parts["emergency-ssh-key"]
    for h in web:
        assert (h.root / TOKENS).read_text() == f"breakglass deploy-token {token.fingerprint}\n"
        assert not (h.root / KEYS).exists() and reloads(h) == 1
    for h in db:
        assert (h.root / KEYS).read_text() == f"{key.public}\n"
        assert not (h.root / TOKENS).exists() and reloads(h) == 0

    code, doc, err = enrol(fleet, spec, "--record", str(record))
    assert code == 0 and doc["changes"] == 0, (err, doc)
    assert all(reloads(h) == 1 for h in web)  # no change, no reload
    code, doc, _ = enrol(fleet, spec, "--check")
    assert code == 0 and doc["changes"] == 0

    drift = run_cli("drift", spec, "--enrolment", record, "--json")
    assert drift.returncode == 0, drift.stdout + drift.stderr
    assert {c["status"] for c in json.loads(drift.stdout)["credentials"]} == {"in-sync"}


def test_unreachable_target_host_leaves_its_credential_out_of_the_record(
    fleet: fleetkit.TestFleet, spec: Path, tmp_path: Path
) -> None:
    fleet.stop_host(fleet.hosts[1])
    try:
        record = tmp_path / "enrolled.json"
        code, doc, err = enrol(fleet, spec, "--record", str(record))
        assert code == 0, err
        assert doc["in_place"] == ["agent-backup/deploy-token"]
        drift = run_cli("drift", spec, "--enrolment", record, "--json")
        assert drift.returncode == 1
        status = {c["name"]: c["status"] for c in json.loads(drift.stdout)["credentials"]}
        assert status == {"deploy-token": "in-sync", "emergency-ssh-key": "missing"}
    finally:
        fleet.start_host(fleet.hosts[1])
        fleet.write_known_hosts()
        fleet.write_inventory()


def test_enrol_line_with_a_placeholder_the_kind_lacks_is_refused(
    fleet: fleetkit.TestFleet, spec: Path
) -> None:
    spec.write_text(
        spec.read_text().replace('line: "breakglass {name} {fingerprint}"', 'line: "{nope}"')
    )
    proc = run_cli("fleet", "enrol", spec, fleet.inventory)
    assert proc.returncode == 2
    assert "unknown placeholder '{nope}'" in proc.stderr and proc.stderr.startswith(
        "breakglass: error: "
    )


def test_limit_enrols_only_those_hosts_and_the_record_says_so(
    fleet: fleetkit.TestFleet, spec: Path, tmp_path: Path
) -> None:
    record = tmp_path / "enrolled.json"
    code, doc, err = enrol(fleet, spec, "--limit", "web", "--record", str(record))
    assert code == 0, err
    assert doc["changes"] == 2 and doc["in_place"] == ["agent-backup/deploy-token"]
    assert not (fleet.hosts[1].root / KEYS).exists()
    rotate = run_cli("fleet", "rotate", spec, fleet.inventory, "--limit", "web")
    assert rotate.returncode == 2
    assert rotate.stderr.startswith("breakglass: error: fleet rotate works on the whole inventory")
