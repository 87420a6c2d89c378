"""``fleet rotate`` against real hosts: phases resume after SIGINT in each, and old public parts
stay while any host runs the old version."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.fleet.drift import load_enrolment, sealed_from_bundle
from builder.fleet.rotate import INTERRUPT_ENV, PHASES
from builder.release.bump import bump
from builder.release.seal import seal
from builder.release.spec import load_spec
from tests import fleetkit
from tests.conftest import run_cli
from tests.test_fleet_enrol import ENROL_KEY, ENROL_TOKEN, KEYS, TOKENS


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fleetkit.TestFleet]:
    started = fleetkit.small_fleet(tmp_path_factory.mktemp("fleet-rotate"), count=3)
    yield started
    started.stop()


@dataclass
class Rotation:
    spec: Path
    old: Path  # enrolment record of the old seal, as fleet enrol left it
    old_lines: set[str]
    new_lines: set[str]
    new_etc: Path  # etc/breakglass of the new version's image

    def upgrade(self, host: fleetkit.FleetHost) -> None:
        """What the user's deploy system does: the host now runs the new image."""
        etc = host.root / "etc/breakglass"
        shutil.rmtree(etc)
        shutil.copytree(self.new_etc, etc)


def lines(fleet: fleetkit.TestFleet) -> set[str]:
    found = set()
    for h in fleet.hosts:
        for rel in (TOKENS, KEYS):
            if (h.root / rel).exists():
                found |= {f"{h.name}:{x}" for x in (h.root / rel).read_text().splitlines()}
    return found


@pytest.fixture
def rotation(fleet: fleetkit.TestFleet, tmp_path: Path) -> Iterator[Rotation]:
    """Old parts enrolled on the fleet; then seal --rotate, bump and a build of 1.0.1."""
    from builder.release.build import plan

    src = tmp_path / "src"
    shutil.copytree(fleet.image.root.parent / "src", src)
    spec = src / "hostkit.yaml"
    text = spec.read_text().replace("generate: token\n", "generate: token\n" + ENROL_TOKEN)
    spec.write_text(text.replace("generate: ssh-ed25519\n", "generate: ssh-ed25519\n" + ENROL_KEY))
    for h in fleet.hosts:
        (h.root / TOKENS).parent.mkdir(parents=True, exist_ok=True)
        (h.root / KEYS).parent.mkdir(parents=True, exist_ok=True)
    old = tmp_path / "old-enrolment.json"
    proc = run_cli("fleet", "enrol", spec, fleet.inventory, "--record", old)
    assert proc.returncode == 0, proc.stderr
    old_lines = lines(fleet)
    seal(load_spec(spec), dt.datetime.now(dt.UTC), rotate=True)
    assert bump(spec, "patch") == ("1.0.0", "1.0.1")
    built = plan(load_spec(spec))
    new_root = tmp_path / "new-root"
    for f in built.files:
        (new_root / f.path).parent.mkdir(parents=True, exist_ok=True)
        (new_root / f.path).write_bytes(f.data)
    yield Rotation(spec, old, old_lines, set(), new_root / "etc/breakglass")
    for h in fleet.hosts:
        fleetkit.reset(fleet, h)
        (h.workdir / "home/reloads.log").unlink(missing_ok=True)


def rotate(
    fleet: fleetkit.TestFleet, r: Rotation, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = run_cli("fleet", "rotate", r.spec, fleet.inventory, *extra, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def state(r: Rotation) -> dict[str, object]:
    doc: dict[str, object] = json.loads(r.spec.with_name("hostkit.rotate.json").read_text())
    return doc


def new_parts_lines(fleet: fleetkit.TestFleet, r: Rotation) -> set[str]:
    parts = {
        c.name: c for c in sealed_from_bundle(r.spec.with_name("hostkit.sealed.yaml")).credentials
    }
    token, key = parts["deploy-token"], parts["emergency-ssh-key"]
    web, db = (fleet.hosts[0], fleet.hosts[2]), (fleet.hosts[1],)
    return {f"{h.name}:breakglass deploy-token {token.fingerprint}" for h in web} | {
        f"{h.name}:{key.public}" for h in db
    }


def test_old_parts_stay_while_a_host_runs_the_old_version(
    fleet: fleetkit.TestFleet, rotation: Rotation
) -> None:
    new = new_parts_lines(fleet, rotation)
    assert not new & rotation.old_lines and len(rotation.old_lines) == 3

    code, out, err = rotate(fleet, rotation, "--old", str(rotation.old))
    assert code == 1 and "3 host(s) not yet on hostkit 1.0.1: host-000 (runs 1.0.0)" in err
    assert "enrol-new: ok (3 changes)" in out and "wait-version: waiting" in out
    assert lines(fleet) == rotation.old_lines | new  # new next to old
    assert state(rotation)["done"] == ["enrol-new"]

    rotation.upgrade(fleet.hosts[0])
    rotation.upgrade(fleet.hosts[1])
    code, out, err = rotate(fleet, rotation)
    assert code == 1 and "1 host(s) not yet on hostkit 1.0.1: host-002 (runs 1.0.0)" in err
    assert "enrol-new: done before" in out and "host-002: runs 1.0.0" in out
    assert lines(fleet) == rotation.old_lines | new

    # even with wait-version recorded as passed, remove-old checks again and refuses
    doc = state(rotation)
    doc["done"] = ["enrol-new", "wait-version"]
    rotation.spec.with_name("hostkit.rotate.json").write_text(json.dumps(doc))
    code, out, err = rotate(fleet, rotation)
    assert code == 1 and "host-002" in err and "remove-old: waiting" in out
    assert lines(fleet) == rotation.old_lines | new

    rotation.upgrade(fleet.hosts[2])
    code, out, err = rotate(fleet, rotation)
    assert code == 0, err
    assert "remove-old: ok (3 changes)" in out and "drift: ok" in out
    assert lines(fleet) == new
    assert state(rotation)["done"] == list(PHASES)
    code, out, _ = rotate(fleet, rotation)
    assert code == 0 and out.count("done before") == 4


@pytest.mark.e2e
def test_sigint_in_each_phase_resumes(fleet: fleetkit.TestFleet, rotation: Rotation) -> None:
    new = new_parts_lines(fleet, rotation)
    for h in fleet.hosts:
        rotation.upgrade(h)
    extra: tuple[str, ...] = ("--old", str(rotation.old))
    for i, phase in enumerate(PHASES):
        code, out, err = rotate(fleet, rotation, *extra, env={INTERRUPT_ENV: f"rotate-{phase}"})
        assert code == 130 and err.strip() == "breakglass: error: interrupted", (phase, err)
        # the phase's work is done, its record is not: the next run redoes it, idempotently
        assert state(rotation)["done"] == list(PHASES[:i]), phase
        if phase in ("enrol-new", "wait-version"):
            assert lines(fleet) == rotation.old_lines | new
        else:
            assert lines(fleet) == new
        extra = ()
    code, out, err = rotate(fleet, rotation)
    assert code == 0, err
    assert "drift: ok" in out and state(rotation)["done"] == list(PHASES)
    assert lines(fleet) == new
    assert {c.name for c in load_enrolment(rotation.old).credentials} == {
        "deploy-token",
        "emergency-ssh-key",
    }
