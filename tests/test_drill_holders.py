"""Share-holder check-in against the example image's real sealed bundle: proves, reveals nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from builder.core import agecrypt
from builder.drill.holders import load_bundle, read_checkins, roll_call
from builder.drill.scenario import Drill
from tests.conftest import ROOT

SPEC = ROOT / "images/example.yaml"
KEYS = ROOT / "examples/keys"


def holders(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "builder", "drill", "holders", str(SPEC), *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)


def test_checkin_proves_the_share_without_showing_it(tmp_path: Path) -> None:
    checkins = tmp_path / "example.checkins.jsonl"
    proc = holders("--identity", str(KEYS / "alice.age"), "--approver", "alice",
                   "--checkin", str(checkins))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "checkin approver=alice scope=ssh-emergency share=sha256:" in proc.stdout
    assert "checkin approver=alice scope=agent-backup share=sha256:" in proc.stdout
    bundle = load_bundle(SPEC.with_name("example.sealed.yaml"))
    identities = agecrypt.load_identities(KEYS / "alice.age")
    for scope in bundle.scopes:
        words = agecrypt.decrypt(scope.shares["alice"], identities, what="share").reveal().decode()
        for word in words.split()[:4]:  # the opening words of a share are its identifier
            assert f" {word} " not in f" {proc.stdout} {checkins.read_text()} "
    lines = read_checkins(checkins)
    assert {c.scope for c in lines} == {"ssh-emergency", "agent-backup"}
    call = roll_call(bundle, lines)
    assert call["alice"] is not None and call["bob"] is None and call["carol"] is None


def test_report_lists_who_checked_in(tmp_path: Path) -> None:
    checkins = tmp_path / "c.jsonl"
    assert holders("--identity", str(KEYS / "bob.age"), "--approver", "bob", "--checkin",
                   str(checkins), "--json").returncode == 0  # fmt: skip
    listed = {h.approver: h.checked_in for h in Drill(SPEC, 5, checkins=checkins)._holders()}
    assert set(listed) == {"alice", "bob", "carol"}
    assert listed["bob"] is not None and listed["alice"] is None


def test_checkin_for_an_older_seal_does_not_count(tmp_path: Path) -> None:
    checkins = tmp_path / "c.jsonl"
    holders(
        "--identity", str(KEYS / "carol.age"), "--approver", "carol", "--checkin", str(checkins)
    )
    doc = [json.loads(line) for line in checkins.read_text().splitlines()]
    doc[0]["share_digest"] = "sha256:" + "0" * 64
    checkins.write_text("".join(json.dumps(d) + "\n" for d in doc))
    bundle = load_bundle(SPEC.with_name("example.sealed.yaml"))
    assert roll_call(bundle, read_checkins(checkins))["carol"] is None


def test_wrong_identity_fails_closed(tmp_path: Path) -> None:
    checkins = tmp_path / "c.jsonl"
    proc = holders(
        "--identity", str(KEYS / "bob.age"), "--approver", "alice", "--checkin", str(checkins)
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("breakglass: error: scope ") and "cannot decrypt" in proc.stderr
    assert not checkins.exists()


def test_unknown_approver_is_input_error() -> None:
    proc = holders("--identity", str(KEYS / "bob.age"), "--approver", "mallory")
    assert proc.returncode == 2 and "no approver named 'mallory'" in proc.stderr
