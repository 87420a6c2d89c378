"""``fleet status`` over 50 real hosts on this machine (about 15 s here, the fleet's start included).

Each host is a copy of one built image root behind its own sshd (bwrap) on
a loopback port; pyinfra reaches all 50 over SSH in one run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests import fleetkit, hostkit
from tests.conftest import require_root, require_tool, run_cli

HOSTS = 50


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fleetkit.TestFleet]:
    require_root("each host's sshd runs as root in bwrap")
    for tool in ("bwrap", "sshd", "ssh-keygen", "ssh"):
        require_tool(tool)
    started = fleetkit.start_fleet(
        hostkit.shared_image(), tmp_path_factory.mktemp("fleet50"), count=HOSTS
    )
    yield started
    started.stop()


def status(fleet: fleetkit.TestFleet) -> tuple[int, dict[str, dict[str, object]], str]:
    proc = run_cli("fleet", "status", fleet.inventory, "--json", "--parallel", str(HOSTS))
    doc = json.loads(proc.stdout)
    return proc.returncode, {r["host"]: r for r in doc["hosts"]}, proc.stderr


def test_fifty_hosts_one_active_one_forged_one_unreachable(fleet: fleetkit.TestFleet) -> None:
    code, rows, err = status(fleet)
    assert code == 0, err
    assert len(rows) == HOSTS
    assert all(
        r["reachable"] and r["phase"] == "DORMANT" and not r["problems"] for r in rows.values()
    )

    active, forged, down = fleet.hosts[7], fleet.hosts[23], fleet.hosts[41]
    fleetkit.activate(fleet.image, active)
    code, rows, err = status(fleet)
    assert code == 1 and err.startswith(
        f"breakglass: error: 1 host(s) need attention: {active.name}"
    )
    assert rows[active.name]["phase"] == "ACTIVE"

    fleetkit.reset(fleet, active)
    fleetkit.forge_expired(forged)
    code, rows, err = status(fleet)
    assert code == 1 and err.startswith(
        f"breakglass: error: 1 host(s) need attention: {forged.name}"
    )
    problems = rows[forged.name]["problems"]
    assert isinstance(problems, list) and "ACTIVE past expires_at" in problems[0]

    fleetkit.reset(fleet, forged)
    fleet.stop_host(down)
    code, rows, err = status(fleet)
    assert code == 0, err
    assert rows[down.name]["reachable"] is False
    assert sum(1 for r in rows.values() if r["reachable"]) == HOSTS - 1
