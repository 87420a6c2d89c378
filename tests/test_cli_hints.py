"""What a new operator meets: the request id, hints on the usual mistakes, partial unseals."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests import hostkit
from tests.conftest import ROOT, run_cli


@pytest.fixture
def image(tmp_path: Path) -> hostkit.Image:
    return hostkit.clone(hostkit.shared_image(), tmp_path / "root")


def _request(image: hostkit.Image, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return hostkit.run(
        "host", "request", "--root", str(image.root), "--scope", "ssh-emergency", "--ttl", "15m",
        "--reason", "db down", "--requester", "dave", "--out", str(tmp_path / "req.json"), *extra,
    )  # fmt: skip


def test_request_prints_its_id_plainly_and_in_json(image: hostkit.Image, tmp_path: Path) -> None:
    r = _request(image, tmp_path)
    assert r.returncode == 0, r.stderr
    rid = json.loads((tmp_path / "req.json").read_bytes())["id"]
    assert r.stdout.startswith("BREAKGLASS-REQUEST-1:")
    lines = r.stderr.splitlines()
    assert lines[0] == f"request id: {rid}"
    assert f"breakglass host unseal {rid} APPROVAL..." in lines[1]
    j = _request(image, tmp_path, "--json")
    assert j.returncode == 0 and j.stderr == ""
    assert (
        json.loads(j.stdout)["request_id"] == json.loads((tmp_path / "req.json").read_bytes())["id"]
    )


def test_a_root_without_an_image_hints_at_host_install(tmp_path: Path) -> None:
    r = run_cli("host", "request", "--root", tmp_path, "--scope", "s", "--ttl", "15m",
                "--reason", "x", "--requester", "dave")  # fmt: skip
    assert r.returncode == 2
    first, hint = r.stderr.splitlines()
    assert first == (
        f"breakglass: error: {tmp_path} is not a breakglass host: it has no etc/breakglass/manifest.json"
    )
    assert (
        hint.startswith("hint: ") and "breakglass host install dist/NAME/VERSION --root DIR" in hint
    )


def test_approve_without_a_terminal_names_yes(image: hostkit.Image, tmp_path: Path) -> None:
    assert _request(image, tmp_path).returncode == 0
    alice = image.approvers["alice"]
    r = hostkit.run(
        "approve", str(tmp_path / "req.json"), "--identity", str(alice.identity),
        "--signing-key", str(alice.signing_key), "--approver", "alice", "--out", str(tmp_path / "a"),
        input=b"",
    )  # fmt: skip
    assert r.returncode == 2 and r.stdout == ""
    assert "ttl: 15m" in r.stderr  # the TTL as it was requested, not 900s
    assert r.stderr.endswith(
        "breakglass: error: no answer to the confirmation (no terminal?)\n"
        "hint: read the request above; to approve it without a prompt, rerun with --yes\n"
    )
    assert not (tmp_path / "a").exists()


def test_a_partly_accepted_unseal_says_what_counts(image: hostkit.Image, tmp_path: Path) -> None:
    assert _request(image, tmp_path).returncode == 0
    rid = json.loads((tmp_path / "req.json").read_bytes())["id"]
    alice = tmp_path / "alice.json"
    assert hostkit.approve(tmp_path / "req.json", image.approvers["alice"], alice).returncode == 0
    forged = json.loads(alice.read_bytes())
    forged["approver"] = "bob"  # bob's name on alice's signature: refused
    (tmp_path / "bob.json").write_text(json.dumps(forged))
    r = hostkit.run(
        "host", "unseal", "--root", str(image.root), rid, str(alice), str(tmp_path / "bob.json")
    )
    assert r.returncode == 1
    first, hint = r.stderr.splitlines()
    assert first.startswith("breakglass: error: approval refused: ")
    assert first.endswith("; accepted 1 approval (alice); 1 more needed")
    assert hint.startswith("hint: an approval that was accepted stays")
    status = json.loads(hostkit.run("host", "status", "--root", str(image.root), "--json").stdout)
    assert status["state"] == "PENDING"
    ok = hostkit.run("host", "unseal", "--root", str(image.root), rid, str(alice))
    assert ok.returncode == 1 and "approver already counted" in ok.stderr


def test_pending_unseal_says_how_many_more(image: hostkit.Image, tmp_path: Path) -> None:
    assert _request(image, tmp_path).returncode == 0
    rid = json.loads((tmp_path / "req.json").read_bytes())["id"]
    alice = tmp_path / "alice.json"
    assert hostkit.approve(tmp_path / "req.json", image.approvers["alice"], alice).returncode == 0
    r = hostkit.run("host", "unseal", "--root", str(image.root), rid, str(alice))
    assert r.returncode == 0 and r.stdout == "PENDING: accepted 1 approval (alice); 1 more needed\n"


def test_corrupt_state_hint_leads_back_to_dormant(image: hostkit.Image, tmp_path: Path) -> None:
    import subprocess

    state = image.root / "var/lib/breakglass/state.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text("{not json")
    r = hostkit.run("host", "status", "--root", str(image.root))
    hint = r.stderr.splitlines()[1]
    command = hint.removeprefix("hint: move it aside (").split(") and run")[0]
    subprocess.run(command.split(), check=True)  # the hint's own mv
    tick = hostkit.run("host", "tick", "--root", str(image.root))
    assert tick.returncode == 0 and tick.stdout == "DORMANT\n"


@pytest.mark.parametrize(
    "flags", [["--major", "--minor"], ["--minor", "--patch"], ["--major", "--patch", "--minor"]]
)
def test_bump_refuses_conflicting_flags(flags: list[str], tmp_path: Path) -> None:
    spec = tmp_path / "example.yaml"
    before = (ROOT / "images/example.yaml").read_bytes()
    spec.write_bytes(before)
    r = run_cli("bump", spec, *flags)
    assert r.returncode == 2
    assert r.stderr.startswith("breakglass: error: --") and "conflict: give at most one" in r.stderr
    assert len(r.stderr.splitlines()) == 2 and r.stderr.splitlines()[1].startswith("hint: ")
    assert spec.read_bytes() == before


def test_bump_with_one_flag(tmp_path: Path) -> None:
    spec = tmp_path / "example.yaml"
    spec.write_bytes((ROOT / "images/example.yaml").read_bytes())
    r = run_cli("bump", spec, "--minor", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["new"] == "1.1.0"
