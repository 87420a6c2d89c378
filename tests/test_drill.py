"""The drill end to end: one real run on loopback (sshd, stand-ins, real host and approve commands),
its report and the plaintext canary; the ways to break it are e2e cases."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.drill.report import DrillResult, write_report
from builder.drill.scenario import Drill
from tests.conftest import ROOT, require_tool

SPEC = ROOT / "images/example.yaml"


def _tools() -> None:
    for tool in ("sshd", "ssh", "ssh-keygen", "bwrap"):
        require_tool(tool)


@pytest.fixture(scope="module")
def drilled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Drill, DrillResult, Path]:
    _tools()
    drill = Drill(SPEC, 8)  # roomy: a loaded CI machine must still fit an ssh login in the window
    result = drill.run()
    out = tmp_path_factory.mktemp("report")
    write_report(result, out)
    return drill, result, out


def test_drill_passes_every_step_with_timings(drilled: tuple[Drill, DrillResult, Path]) -> None:
    _, result, out = drilled
    assert result.ok, [f"{s.name}: {s.detail}" for s in result.steps if not s.ok]
    names = [s.name.split(" ")[0] for s in result.steps]
    for n in ("1.", "2.", "3.", "4.", "5.", "6."):
        assert n in names
    assert result.time_to_access_seconds is not None and result.time_to_access_seconds > 0
    assert result.time_to_revoke_seconds is not None and result.time_to_revoke_seconds < 5
    assert result.audit_head and result.audit_head.startswith("sha256:")
    doc = json.loads((out / "report.json").read_text())
    assert doc["ok"] is True and doc["audit_head"] == result.audit_head
    assert any("route=breakglass outcome=ok" in s.detail for s in result.steps)
    assert any("ssh login as breakglass succeeded" in s.detail for s in result.steps)


def test_plaintext_canary(drilled: tuple[Drill, DrillResult, Path]) -> None:
    drill, _, out = drilled
    assert len(drill.secrets) >= 2  # the token and the ssh key were seen while active
    texts = [p.read_bytes() for p in out.iterdir()] + ["\n".join(drill.log).encode()]
    for secret in drill.secrets:
        assert secret
        for text in texts:
            assert secret not in text
        # the ssh key's base64 body, line by line, must not appear either
        for line in secret.splitlines()[1:-1]:
            assert all(line not in t for t in texts)


def test_drill_leaves_no_temporary_files(drilled: tuple[Drill, DrillResult, Path]) -> None:
    import tempfile

    leftovers = list(Path(tempfile.gettempdir()).glob("breakglass-drill-*"))
    assert leftovers == [] or all(p.stat().st_mtime < time.time() - 3600 for p in leftovers)


def _run_cli(spec: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "builder", "drill", str(spec), "--ttl", "5s", *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)


def _copy_example(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    (tmp_path / "images").mkdir()
    for name in ("example.yaml", "example.sealed.yaml", "example.enrolment.json"):
        shutil.copy(ROOT / "images" / name, tmp_path / "images" / name)
    return tmp_path / "images/example.yaml"


def test_bad_ttl_is_input_error() -> None:
    proc = _run_cli(SPEC, "--ttl", "1h")
    assert proc.returncode == 2 and "drill ttl must be between 5s and 5m" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "builder", "drill", "no-such.yaml"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "no such spec file" in proc.stderr


@pytest.mark.e2e
def test_cli_drill_writes_report(tmp_path: Path) -> None:
    _tools()
    proc = _run_cli(SPEC, "--report", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True
    assert {p.name for p in tmp_path.iterdir()} == {"report.md", "report.html", "report.json"}


@pytest.mark.e2e
def test_wrong_breakglass_endpoint_fails_step_4(tmp_path: Path) -> None:
    _tools()
    spec = _copy_example(tmp_path)
    tpl = tmp_path / "templates/deploy-agent/breakglass.toml.j2"
    tpl.write_text(tpl.read_text().replace("/breakglass/deploy", "/api/deploy"))
    proc = _run_cli(spec, "--report", str(tmp_path / "r"))
    assert proc.returncode == 1
    assert "drill step failed: 4. break-glass access [agent-backup]" in proc.stderr
    assert "status=401" in proc.stderr
    assert json.loads((tmp_path / "r/report.json").read_text())["ok"] is False


@pytest.mark.e2e
def test_drifted_enrolment_fails_the_sync_check(tmp_path: Path) -> None:
    _tools()
    proc = _run_cli(SPEC, "--enrolment", str(ROOT / "images/example.enrolment.json"))
    assert proc.returncode == 1
    assert "drill step failed: prepare" in proc.stderr
    assert "out-of-sync" in proc.stderr


@pytest.mark.e2e
def test_missing_sshd_dropin_fails_the_login(tmp_path: Path) -> None:
    _tools()
    spec = _copy_example(tmp_path)
    (tmp_path / "templates/system/sshd-breakglass.conf.j2").write_text("# no drop-in\n")
    proc = _run_cli(spec)
    assert proc.returncode == 1
    assert "drill step failed: 4. break-glass access [ssh-emergency]" in proc.stderr
    assert "ssh login as breakglass refused" in proc.stderr


@pytest.mark.e2e
def test_sigint_cleans_up(tmp_path: Path) -> None:
    _tools()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    argv = [sys.executable, "-m", "builder", "drill", str(SPEC), "--ttl", "20s"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not list(
        tmp_path.glob("breakglass-drill-*/root/run/breakglass/agent-backup/*")
    ):
        time.sleep(0.1)
    assert list(tmp_path.glob("breakglass-drill-*")), "the drill never reached its active window"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (1, 130), err  # click reports the interrupt as "aborted"
    assert list(tmp_path.iterdir()) == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path) not in ps
