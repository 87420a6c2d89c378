"""The reference agent against the loopback stand-ins: both routes, the outage, and no leaks."""

from __future__ import annotations

import hashlib
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from builder.core.canonical import dumps
from builder.core.record import replace
from builder.drill import agent
from builder.drill.standins import IdentityProvider, ProtectedService
from builder.host import state
from builder.host.state import ACTIVE, Active, HostState
from tests.conftest import ROOT

NOW = datetime(2026, 11, 29, 19, 0, 0, tzinfo=UTC)
NAME = "deploy-agent"
SCOPE = "agent-backup"


@pytest.fixture
def token() -> str:
    return "drill-canary-" + secrets.token_hex(16)


@pytest.fixture
def world(token: str) -> Iterator[tuple[IdentityProvider, ProtectedService]]:
    idp = IdentityProvider(["deploy-agent"])
    public = "sha256:" + hashlib.sha256(token.encode()).hexdigest()
    service = ProtectedService(idp, [public])
    idp.start()
    service.start()
    try:
        yield idp, service
    finally:
        service.stop()
        idp.stop()


def install(root: Path, idp: IdentityProvider, service: ProtectedService, bg_url: str) -> None:
    """Lay out the rendered configs as the image carries them."""
    base = root / "etc/breakglass/agents" / NAME
    (base / "normal").mkdir(parents=True)
    (base / "breakglass").mkdir(parents=True)
    (base / "normal/agent.toml").write_text(
        f'[agent]\nname = "{NAME}"\nmode = "normal"\n'
        f'[identity_provider]\ntoken_url = "{idp.token_url}"\nclient_id = "deploy-agent"\n'
        f'[service]\nurl = "{service.normal_url}"\n'
    )
    (base / "breakglass/agent.toml").write_text(
        f'[agent]\nname = "{NAME}"\nmode = "breakglass"\nscope = "{SCOPE}"\n'
        f'[service]\nurl = "{bg_url}"\n'
        f'token_file = "/run/breakglass/{SCOPE}/deploy-token"\n'
    )


def activate(root: Path, token: str, expires: datetime) -> None:
    """What unseal leaves behind: the overlay under run/, the token, an ACTIVE state."""
    run = root / "run/breakglass"
    (run / "agents" / NAME).mkdir(parents=True)
    src = root / "etc/breakglass/agents" / NAME / "breakglass/agent.toml"
    (run / "agents" / NAME / "agent.toml").write_bytes(src.read_bytes())
    (run / SCOPE).mkdir()
    (run / SCOPE / "deploy-token").write_text(token)
    files = (f"run/breakglass/{SCOPE}/deploy-token", f"run/breakglass/agents/{NAME}/agent.toml")
    window = Active("0" * 32, SCOPE, expires - timedelta(minutes=10), expires, files, "boot", 1)
    (run / ".grant.json").write_bytes(dumps(window.to_dict()))  # the unseal's proof
    state.save(root, HostState(phase=ACTIVE, active=window))


def test_normal_route_through_identity_provider(
    tmp_path: Path, world: tuple[IdentityProvider, ProtectedService]
) -> None:
    idp, service = world
    install(tmp_path, idp, service, service.breakglass_url)
    outcome = agent.run(tmp_path, NAME, "agent.toml")
    assert outcome.ok and outcome.route == "normal"
    assert service.calls == [("/api/deploy", 200)]


def test_outage_makes_normal_route_fail(
    tmp_path: Path, world: tuple[IdentityProvider, ProtectedService]
) -> None:
    idp, service = world
    install(tmp_path, idp, service, service.breakglass_url)
    idp.stop()
    outcome = agent.run(tmp_path, NAME, "agent.toml")
    assert not outcome.ok and outcome.route == "normal"
    assert "step=token" in outcome.detail and "connection-refused" in outcome.detail
    assert service.calls == []


def test_unknown_client_is_refused(
    tmp_path: Path, world: tuple[IdentityProvider, ProtectedService]
) -> None:
    idp, service = world
    install(tmp_path, idp, service, service.breakglass_url)
    cfg = tmp_path / "etc/breakglass/agents" / NAME / "normal/agent.toml"
    cfg.write_text(cfg.read_text().replace('client_id = "deploy-agent"', 'client_id = "intruder"'))
    outcome = agent.run(tmp_path, NAME, "agent.toml")
    assert not outcome.ok and "status=401" in outcome.detail


def test_breakglass_route_when_scope_active(
    tmp_path: Path, world: tuple[IdentityProvider, ProtectedService], token: str
) -> None:
    idp, service = world
    install(tmp_path, idp, service, service.breakglass_url)
    idp.stop()
    activate(tmp_path, token, NOW + timedelta(minutes=5))
    outcome = agent.run(tmp_path, NAME, "agent.toml")
    assert outcome.ok and outcome.route == "breakglass", outcome.detail
    assert service.calls == [("/breakglass/deploy", 200)]


def test_agent_keeps_the_credential_until_the_host_revokes_it(
    tmp_path: Path, world: tuple[IdentityProvider, ProtectedService], token: str
) -> None:
    # the agent does not read a clock: past expires_at it still works until the host reseals,
    # so a host that never expires (frozen clock, dead timer) shows up in a drill
    idp, service = world
    install(tmp_path, idp, service, service.breakglass_url)
    idp.stop()
    activate(tmp_path, token, NOW - timedelta(seconds=1))
    outcome = agent.run(tmp_path, NAME, "agent.toml")
    assert outcome.ok and outcome.route == "breakglass", outcome.detail
    # what expiry leaves: DORMANT state, overlay and token wiped
    shutil.rmtree(tmp_path / "run/breakglass")
    state.save(tmp_path, state.load(tmp_path).dormant())
    outcome = agent.run(tmp_path, NAME, "agent.toml")
    assert not outcome.ok and outcome.route == "normal"
    assert service.calls == [("/breakglass/deploy", 200)]


def test_active_state_without_overlay_takes_normal_route(
    tmp_path: Path, world: tuple[IdentityProvider, ProtectedService], token: str
) -> None:
    idp, service = world
    install(tmp_path, idp, service, service.breakglass_url)
    activate(tmp_path, token, NOW + timedelta(minutes=5))
    (tmp_path / "run/breakglass/agents" / NAME / "agent.toml").unlink()
    outcome = agent.run(tmp_path, NAME, "agent.toml")
    assert outcome.ok and outcome.route == "normal"
    assert agent.active_scope(tmp_path) == SCOPE
    (tmp_path / "var/lib/breakglass/state.json").write_text("{not json")
    assert agent.active_scope(tmp_path) is None


def test_hand_written_active_state_takes_normal_route(
    tmp_path: Path, world: tuple[IdentityProvider, ProtectedService], token: str
) -> None:
    # a state file written by hand, without the grant only an unseal leaves in run/, opens nothing
    idp, service = world
    install(tmp_path, idp, service, service.breakglass_url)
    activate(tmp_path, token, NOW + timedelta(minutes=5))
    assert agent.active_scope(tmp_path) == SCOPE
    (tmp_path / "run/breakglass/.grant.json").unlink()
    assert agent.active_scope(tmp_path) is None
    outcome = agent.run(tmp_path, NAME, "agent.toml")
    assert outcome.route == "normal"
    activate_again = state.load(tmp_path)
    assert activate_again.active is not None
    stretched = replace(activate_again.active, expires_at=NOW + timedelta(days=365))
    (tmp_path / "run/breakglass/.grant.json").write_bytes(dumps(activate_again.active.to_dict()))
    state.save(tmp_path, replace(activate_again, active=stretched))
    assert agent.active_scope(tmp_path) is None


def test_wrong_token_is_refused_on_breakglass_route(
    tmp_path: Path, world: tuple[IdentityProvider, ProtectedService]
) -> None:
    idp, service = world
    install(tmp_path, idp, service, service.breakglass_url)
    activate(tmp_path, "not-the-enrolled-token", NOW + timedelta(minutes=5))
    outcome = agent.run(tmp_path, NAME, "agent.toml")
    assert not outcome.ok and outcome.route == "breakglass" and "status=401" in outcome.detail


def test_wrong_endpoint_in_overlay_fails(
    tmp_path: Path, world: tuple[IdentityProvider, ProtectedService], token: str
) -> None:
    idp, service = world
    install(tmp_path, idp, service, service.base_url + "/api/deploy")
    activate(tmp_path, token, NOW + timedelta(minutes=5))
    outcome = agent.run(tmp_path, NAME, "agent.toml")
    assert not outcome.ok and outcome.route == "breakglass" and "status=401" in outcome.detail


def test_module_entry_point_logs_route_never_the_token(
    tmp_path: Path, world: tuple[IdentityProvider, ProtectedService], token: str
) -> None:
    idp, service = world
    install(tmp_path, idp, service, service.breakglass_url)
    activate(tmp_path, token, datetime.now(UTC) + timedelta(minutes=5))
    argv = [sys.executable, "-m", "builder.drill.agent", "--root", str(tmp_path)]
    argv += ["--config-name", "agent.toml", "--name", NAME]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "route=breakglass outcome=ok" in proc.stdout
    assert token not in proc.stdout + proc.stderr
    idp.stop()
    (tmp_path / "run/breakglass" / SCOPE / "deploy-token").write_text("wrong")
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 1
    assert "outcome=failed" in proc.stdout


def test_missing_config_is_a_clean_failure(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "builder.drill.agent", "--root", str(tmp_path)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "error=config" in proc.stderr
