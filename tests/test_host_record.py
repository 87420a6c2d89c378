"""Session recording: the emergency login runs under ``script``, each recording is hashed into the
audit chain, ``host report`` shows it, and ``audit verify`` finds a recording edited or deleted.

The end-to-end case logs in through a real sshd on loopback (as ``test_host_sshd``), whose
ForceCommand runs the recorder as root through the machine's real sudo; the emergency user
runs ``echo hello`` and one command through sudo, which sudo's I/O log records. The fast case
runs util-linux ``script`` itself into the recordings directory and checks the hashing,
verification and report on that file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from builder.host.layout import Layout
from builder.host.record import recordings_dir
from tests import hostkit
from tests.conftest import require_root, require_tool


def _events(root: Path, event: str) -> list[dict[str, Any]]:
    lines = (root / "var/lib/breakglass/audit.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == event]


def _verify(root: Path) -> subprocess.CompletedProcess[str]:
    return hostkit.run("host", "audit", "verify", "--root", str(root))


def _request_id(root: Path) -> str:
    return str(_events(root, "request-created")[-1]["request_id"])


def _tamper_and_check(root: Path, io: Path) -> None:
    """Editing, then deleting, a hashed recording makes `audit verify` fail, naming it."""
    original = io.read_bytes()
    io.write_bytes(original.replace(b"hello", b"HELLO"))
    bad = _verify(root)
    assert bad.returncode == 1, bad.stderr
    assert f"recording {io.name}" in bad.stderr and "edited" in bad.stderr
    io.write_bytes(original)
    assert _verify(root).returncode == 0
    io.unlink()
    gone = _verify(root)
    assert gone.returncode == 1 and "deleted" in gone.stderr, gone.stderr


def test_a_recording_is_hashed_at_reseal_reported_and_guarded_by_verify(tmp_path: Path) -> None:
    script = require_tool("script")
    image = hostkit.clone(hostkit.shared_image(), tmp_path / "root")
    root = image.root
    from tests.test_host_sshd import _activate

    _activate(image, 600)
    top = recordings_dir(Layout(root))
    top.mkdir(mode=0o700)
    stem = top / f"{_request_id(root)}-session"
    subprocess.run(
        [script, "-q", "--log-io", f"{stem}.io", "--log-timing", f"{stem}.timing", "-c", "echo hello"],
        check=True, capture_output=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert b"hello" in Path(f"{stem}.io").read_bytes()
    assert hostkit.run("host", "reseal", "--root", str(root)).returncode == 0
    # kept after reseal, hashed once, with sizes and digests and no content
    recorded = _events(root, "session-recorded")
    assert len(recorded) == 1 and recorded[0]["request_id"] == _request_id(root)
    files = {f["name"]: f for f in recorded[0]["details"]["files"]}
    assert set(files) == {stem.name + ".io", stem.name + ".timing"}
    assert "hello" not in json.dumps(recorded)
    assert hostkit.plaintext_files(root) == []
    ok = _verify(root)
    assert ok.returncode == 0, ok.stderr
    # a second reseal does not hash the same files again
    assert hostkit.run("host", "reseal", "--root", str(root)).returncode == 0
    assert len(_events(root, "session-recorded")) == 1

    out = hostkit.run("host", "report", _request_id(root), "--root", str(root), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["requester"] == "dave" and doc["approvers"] == ["bob", "carol"]
    [io_entry] = [r for r in doc["recordings"] if r["name"].endswith(".io")]
    assert io_entry["sha256"] == files[stem.name + ".io"]["sha256"]
    assert io_entry["replay"].startswith("scriptreplay --log-timing ")
    events = [t["event"] for t in doc["timeline"]]
    assert events[0] == "request-created" and "activated" in events and "resealed" in events
    text = hostkit.run("host", "report", _request_id(root), "--root", str(root)).stdout
    assert io_entry["sha256"] in text and "scriptreplay" in text
    _tamper_and_check(root, Path(f"{stem}.io"))


def test_report_escapes_the_reason_and_refuses_an_unknown_request(tmp_path: Path) -> None:
    image = hostkit.clone(hostkit.shared_image(), tmp_path / "root")
    reason = "disk full\x1b[2J\nscope: everything"
    made = hostkit.run("host", "request", "--scope", "ssh-emergency", "--ttl", "5m", "--reason",
                       reason, "--requester", "dave", "--root", str(image.root), "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    rid = json.loads(made.stdout)["request_id"]
    text = hostkit.run("host", "report", rid, "--root", str(image.root))
    assert text.returncode == 0, text.stderr
    assert "\x1b" not in text.stdout and "\nscope: everything" not in text.stdout
    assert "reason: disk full\\x1b[2J\\nscope: everything" in text.stdout
    page = hostkit.run("host", "report", rid, "--html", "--root", str(image.root)).stdout
    assert page.startswith("<!doctype html>") and "\x1b" not in page
    missing = hostkit.run("host", "report", "0" * 32, "--root", str(image.root))
    assert missing.returncode == 2
    assert missing.stderr.startswith("breakglass: error: no request ") and "Traceback" not in (
        missing.stderr
    )


def test_record_session_refuses_to_run_by_hand(tmp_path: Path) -> None:
    image = hostkit.clone(hostkit.shared_image(), tmp_path / "root")
    out = hostkit.run("host", "record-session", "--root", str(image.root), env={"SUDO_USER": ""})
    assert out.returncode == 2
    assert out.stderr.startswith("breakglass: error: record-session runs as root through sudo")


@pytest.mark.e2e
def test_the_emergency_login_is_recorded_hashed_reported_and_verified(tmp_path: Path) -> None:
    require_root("to run sshd, sudo and add local accounts")
    require_tool("ssh")
    require_tool("runuser")
    require_tool("script")
    from tests.test_host_sshd import _activate, _akc_account, _emergency_account, _run_dir, _sshd

    with _akc_account(), _run_dir() as run_dir:
        image = hostkit.clone(hostkit.shared_image(), run_dir / "root")
        root, user = image.root, image.emergency_user
        _activate(image, 600)
        key = tmp_path / "id_emergency"
        shutil.copy(root / "run/breakglass/ssh-emergency/emergency-ssh-key", key)
        key.chmod(0o600)
        rid = _request_id(root)
        extra = f"{user} ALL=(root) NOPASSWD: /usr/bin/id -un\n"
        with _emergency_account(user), _sshd(root, extra) as port:
            login = subprocess.run(
                [
                    "ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
                    "-p", str(port), f"{user}@127.0.0.1", "echo hello; sudo -n /usr/bin/id -un",
                ],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert login.returncode == 0, login.stderr
            assert "hello" in login.stdout and "root" in login.stdout
            top = recordings_dir(Layout(root))
            [io] = top.glob(f"{rid}-*.io")
            assert b"hello" in io.read_bytes()
            # the emergency user can neither read nor remove its recording
            for argv in (["cat", str(io)], ["rm", "-f", str(io)], ["ls", str(top)]):
                as_user = subprocess.run(["runuser", "-u", user, "--", *argv],
                                         capture_output=True, check=False)  # fmt: skip
                assert as_user.returncode != 0, argv
            assert io.exists()
            started = _events(root, "session-started")
            assert [e["details"]["user"] for e in started] == [user]
            # hashed by the recorder when the session ended, before any reseal
            [by_session] = _events(root, "session-recorded")
            names = {f["name"]: f for f in by_session["details"]["files"]}
            assert (
                names[io.name]["sha256"]
                == "sha256:" + __import__("hashlib").sha256(io.read_bytes()).hexdigest()
            )
            assert list((top / "sudo").rglob("log")), "sudo wrote no I/O log"
        assert hostkit.run("host", "reseal", "--root", str(root)).returncode == 0
        # sudo's session counter changes with every sudo run: it is not hashed
        hashed = [
            f["name"] for e in _events(root, "session-recorded") for f in e["details"]["files"]
        ]
        assert "sudo/seq" not in hashed and any(n.startswith("sudo/") for n in hashed)
        ok = _verify(root)
        assert ok.returncode == 0, ok.stderr
        report = hostkit.run("host", "report", rid, "--root", str(root), "--json")
        assert report.returncode == 0, report.stderr
        doc = json.loads(report.stdout)
        assert any("/usr/bin/id -un" in (c["command"] or "") for c in doc["sudo"]), doc["sudo"]
        assert all(c["replay"].startswith("sudoreplay -d ") for c in doc["sudo"])
        [entry] = [r for r in doc["recordings"] if r["name"] == io.name]
        assert entry["sha256"] == names[io.name]["sha256"]
        assert "login" in [t["what"] for t in doc["timeline"]]
        text = hostkit.run("host", "report", rid, "--root", str(root)).stdout
        assert entry["sha256"] in text and "/usr/bin/id -un" in text
        _tamper_and_check(root, io)
