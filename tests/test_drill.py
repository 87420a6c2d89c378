"""The drill end to end: one real run on loopback (sshd, stand-ins, real host and approve commands),
its report and the plaintext canary; the ways to break it are e2e cases."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from builder.core.errors import InputError
from builder.drill.report import DrillResult, write_report
from builder.drill.scenario import REVOKE_GRACE_SECONDS, Drill
from tests.conftest import ROOT, require_tool

SPEC = ROOT / "images/example.yaml"


def _tools() -> None:
    for tool in ("sshd", "ssh", "ssh-keygen", "bwrap"):
        require_tool(tool)


@pytest.fixture(scope="module")
def drilled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Drill, DrillResult, Path]:
    """One real drill, its temporary files in a directory of its own (``out/tmp``)."""
    _tools()
    out = tmp_path_factory.mktemp("report")
    private_tmp = out / "tmp"
    private_tmp.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        # a private TMPDIR: other drills running on the machine must not look like leftovers
        mp.setenv("TMPDIR", str(private_tmp))
        mp.setattr(tempfile, "tempdir", str(private_tmp))
        drill = Drill(SPEC, 8)  # roomy: a loaded machine must still fit an ssh login in the window
        result = drill.run()
    write_report(result, out)
    return drill, result, out


def test_drill_passes_every_step_with_timings(drilled: tuple[Drill, DrillResult, Path]) -> None:
    _, result, out = drilled
    assert result.ok, [f"{s.name}: {s.detail}" for s in result.steps if not s.ok]
    names = [s.name.split(" ")[0] for s in result.steps]
    for n in ("1.", "2.", "3.", "4.", "5.", "6."):
        assert n in names
    # one headline figure per scope the drill opened (the example has two)
    assert result.scopes == ("agent-backup", "ssh-emergency")
    assert set(result.time_to_access_seconds) == set(result.scopes)
    assert all(v > 0 for v in result.time_to_access_seconds.values())
    # revocation waits for the host's own expiry (the drill plays its timer), within the grace
    assert set(result.time_to_revoke_seconds) == set(result.scopes)
    assert all(0 <= v < REVOKE_GRACE_SECONDS for v in result.time_to_revoke_seconds.values())
    assert result.audit_head and result.audit_head.startswith("sha256:")
    doc = json.loads((out / "report.json").read_text())
    assert doc["ok"] is True and doc["audit_head"] == result.audit_head
    assert any("route=breakglass outcome=ok" in s.detail for s in result.steps)
    assert any("ssh login as breakglass succeeded" in s.detail for s in result.steps)


def test_plaintext_canary(drilled: tuple[Drill, DrillResult, Path]) -> None:
    drill, _, out = drilled
    assert len(drill.secrets) >= 2  # the token and the ssh key were seen while active
    texts = [p.read_bytes() for p in out.iterdir() if p.is_file()]
    texts.append("\n".join(drill.log).encode())
    for secret in drill.secrets:
        assert secret
        for text in texts:
            assert secret not in text
        # the ssh key's base64 body, line by line, must not appear either
        for line in secret.splitlines()[1:-1]:
            assert all(line not in t for t in texts)


def test_drill_leaves_no_temporary_files(drilled: tuple[Drill, DrillResult, Path]) -> None:
    _, _, out = drilled
    assert list((out / "tmp").iterdir()) == []


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
    proc = _run_cli(SPEC, "--unsafe-break", "slow-disk")
    assert proc.returncode == 2 and "invalid value for '--unsafe-break'" in proc.stderr.lower()
    with pytest.raises(InputError, match="unknown unsafe break 'slow-disk'"):
        Drill(SPEC, 5, unsafe_break="slow-disk")


@pytest.mark.e2e
def test_cli_drill_writes_report(tmp_path: Path) -> None:
    _tools()
    # 8 s, not 5: the ssh login must fit in the window after a slow unseal on a loaded machine
    proc = _run_cli(SPEC, "--report", str(tmp_path), "--json", "--ttl", "8s")
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
def test_frozen_host_clock_fails_step_5(tmp_path: Path) -> None:
    _tools()
    proc = _run_cli(SPEC, "--unsafe-break", "frozen-clock", "--report", str(tmp_path / "r"))
    assert proc.returncode == 1, proc.stderr
    assert "warning: unsafe break 'frozen-clock'" in proc.stderr
    assert (
        "drill step failed: 5. expiry: access revoked, no plaintext [agent-backup]" in proc.stderr
    )
    # the agent still deploys with its token: the host never expired the window
    assert "still works 15 s after the ttl ended (agent route=breakglass outcome=ok" in proc.stderr
    assert "host ACTIVE, 2 plaintext file(s) remain" in proc.stderr
    doc = json.loads((tmp_path / "r/report.json").read_text())
    assert doc["ok"] is False and doc["time_to_revoke_seconds"] == {}
    assert [(s["name"].split(" ")[0], s["ok"]) for s in doc["steps"]] == [
        ("prepare:", True),
        ("1.", True),
        ("2.", True),
        ("3.", True),
        ("4.", True),
        ("5.", False),
    ]
    assert re.search(r"UNSAFE: host clock frozen at \d{4}-\d\d-\d\dT", doc["steps"][3]["detail"])
    assert "| FAIL |" in (tmp_path / "r/report.md").read_text()
    assert list(tmp_path.glob("breakglass-drill-*")) == []


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(pattern: str, where: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(where.glob(pattern)):
            return
        time.sleep(0.05)
    raise AssertionError(f"the drill never got to {pattern}")


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("signals", "moment"),
    [
        ((signal.SIGINT,), "breakglass-drill-*/root/run/breakglass/agent-backup/*"),
        ((signal.SIGTERM, signal.SIGTERM), "breakglass-drill-*/root/run/breakglass/agent-backup/*"),
        ((signal.SIGTERM,), "breakglass-drill-*/sshd/sshd.log"),
    ],
    ids=["sigint-while-active", "sigterm-twice-while-active", "sigterm-at-sshd-start"],
)
def test_interrupt_cleans_up(tmp_path: Path, signals: tuple[int, ...], moment: str) -> None:
    _tools()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    argv = [sys.executable, "-m", "builder", "drill", str(SPEC), "--ttl", "60s"]
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        # a shell starts background jobs with SIGINT ignored, and the drill keeps it so;
        # give the drill the disposition an interactive run has
        preexec_fn=_default_sigint,
    )  # fmt: skip
    try:
        _wait_for(moment, tmp_path)
        for sig in signals:  # a second signal must not cut the cleanup short
            proc.send_signal(sig)
            time.sleep(0.05)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "breakglass: error: interrupted" in err.decode()
    assert list(tmp_path.iterdir()) == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path) not in ps


def test_sshd_wrapper_gives_authorized_keys_the_host_env(tmp_path: Path) -> None:
    # sshd runs AuthorizedKeysCommand with a scrubbed environment; the frozen clock must survive it
    from builder.drill.sshd import LoopbackSshd
    from builder.host.clock import FROZEN_ENV

    sshd = LoopbackSshd(tmp_path / "root", tmp_path / "w", ("breakglass",))
    (tmp_path / "w/bin").mkdir(parents=True)
    # a drill image's manifest: only such an image honours (and so announces) the frozen clock
    manifest = tmp_path / "root/etc/breakglass/manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"image":{"drill":true}}')
    wrapper = tmp_path / "w/bin/breakglass"
    argv = [str(wrapper), "host", "authorized-keys", "breakglass"]
    for env, warning in (({}, False), ({FROZEN_ENV: "2026-11-29T19:00:00Z"}, True)):
        sshd.set_env(env)
        proc = subprocess.run(
            argv, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0 and proc.stdout == "", proc.stderr
        assert ("unsafe frozen clock at 2026-11-29T19:00:00Z" in proc.stderr) is warning
    assert [p.name for p in (tmp_path / "w/bin").iterdir()] == ["breakglass"]
