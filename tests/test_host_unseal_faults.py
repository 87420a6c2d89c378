"""``host unseal`` when activation cannot finish: refused, failed, or stopped at any step.

The kills at each step are proven with real processes in test_host_crash.py.
Here the same steps are stopped in-process (the test hook raises instead of
killing), so each one is checked against the recovery of the next command and
the audit record, step by step.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from builder.core.errors import CheckFailed
from builder.host import audit
from builder.host import unseal as unseal_module
from builder.host.layout import Layout
from builder.host.request import open_request
from builder.host.state import load
from builder.host.status import describe
from builder.host.unseal import unseal
from tests import hostkit
from tests.test_host_crash import UNSEAL_POINTS

T0 = dt.datetime(2026, 11, 29, 19, 0, 0, tzinfo=dt.UTC)


class Stopped(BaseException):
    """Stands for the SIGKILL of test_host_crash.py: no handler of the code under test catches it."""


@pytest.fixture
def pending(tmp_path: Path) -> tuple[hostkit.Image, str, list[str]]:
    image = hostkit.clone(hostkit.shared_image(), tmp_path / "root")
    req = open_request(
        image.root, T0, scope="agent-backup", ttl_seconds=600, reason="r", requester="dave"
    )
    return (
        image,
        req.id,
        [hostkit.lib_approve(req, image.approvers[n], T0) for n in ("alice", "bob")],
    )


def _events(image: hostkit.Image) -> list[dict[str, object]]:
    return audit.read_events(Layout(image.root))


@pytest.mark.parametrize("point", UNSEAL_POINTS)
def test_unseal_stopped_at_each_step_is_recovered(
    pending: tuple[hostkit.Image, str, list[str]], point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, rid, approvals = pending
    reached: list[str] = []

    def stop_at(name: str) -> None:
        reached.append(name)
        if name == point:
            raise Stopped(name)

    monkeypatch.setattr(unseal_module, "crash_point", stop_at)
    with pytest.raises(Stopped):
        unseal(image.root, T0, rid, approvals)
    monkeypatch.undo()
    # the steps run in the documented order, and each one is reached
    assert reached == UNSEAL_POINTS[: UNSEAL_POINTS.index(point) + 1]
    before = [e["event"] for e in _events(image)]
    doc = describe(image.root, T0 + dt.timedelta(seconds=1))  # the next command settles
    events = _events(image)
    files = hostkit.plaintext_files(image.root)
    if point in ("unseal-after-state", "unseal-after-activated"):
        assert doc["state"] == "ACTIVE"
        assert files == sorted(load(image.root).active.files)  # type: ignore[union-attr]
    else:
        assert doc["state"] in ("PENDING", "DORMANT") and files == []
    if point in UNSEAL_POINTS[2:6]:  # plaintext was on disk: wiped, audited, scope burned
        assert events[-1]["event"] == "recovered"
        assert events[-1]["details"]["wiped"]  # type: ignore[index]
        assert load(image.root).burned == {"agent-backup": rid}
    if point == "unseal-after-intent":
        assert before[-1] == "activating"
    if point == "unseal-after-state":
        # activated but not audited: the next command writes the missing event
        assert events[-1]["event"] == "activated"
        assert events[-1]["details"]["recovered"] == "activation finished but not audited"  # type: ignore[index]
        assert events[-1]["details"]["approvers"] == ["alice", "bob"]  # type: ignore[index]
    audit.verify(Layout(image.root))


def test_activation_refused_when_the_sealed_bundle_changed(
    pending: tuple[hostkit.Image, str, list[str]],
) -> None:
    image, rid, approvals = pending
    # the copy the host reads (the image's JSON copy; sealed.yaml is for people and verify)
    bundle = Layout(image.root).bundle_json
    bundle.write_bytes(bundle.read_bytes() + b" ")
    with pytest.raises(CheckFailed) as err:
        unseal(image.root, T0, rid, approvals)
    reason = "the sealed bundle does not match the digest in the image manifest"
    assert err.value.message == reason
    event = _events(image)[-1]
    assert (event["event"], event["request_id"], event["scope"]) == (
        "activation-refused", rid, "agent-backup",
    )  # fmt: skip
    assert event["details"] == {"reason": reason}
    assert load(image.root).phase == "PENDING"
    assert hostkit.plaintext_files(image.root) == []


def test_activation_failed_when_plaintext_cannot_be_written(
    pending: tuple[hostkit.Image, str, list[str]],
) -> None:
    image, rid, approvals = pending
    # a directory where the agent overlay must go: the credential is written, then it fails
    (image.root / "run/breakglass/agents/deploy-agent/agent.toml").mkdir(parents=True)
    with pytest.raises(CheckFailed) as err:
        unseal(image.root, T0, rid, approvals)
    assert err.value.message == "activation failed: cannot write plaintext (IsADirectoryError)"
    event = _events(image)[-1]
    assert (event["event"], event["request_id"], event["scope"]) == (
        "activation-failed", rid, "agent-backup",
    )  # fmt: skip
    assert event["details"] == {"reason": "cannot write plaintext (IsADirectoryError)"}
    # what was written before the failure is gone again
    assert not (image.root / "run/breakglass/agent-backup/deploy-token").exists()
    assert load(image.root).phase == "PENDING"


def _hooked(tmp_path: Path, variant: str, argv: list[str]) -> tuple[hostkit.Image, str, list[str]]:
    image = hostkit.clone(hostkit.shared_image(variant, on_activate=argv), tmp_path / "root")
    req = open_request(
        image.root, T0, scope="ssh-emergency", ttl_seconds=600, reason="r", requester="dave"
    )
    return (
        image,
        req.id,
        [hostkit.lib_approve(req, image.approvers[n], T0) for n in ("alice", "bob")],
    )


def test_hook_output_is_kept_from_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    image, rid, approvals = _hooked(
        tmp_path, "hook-noisy", ["/bin/sh", "-c", "cat >/dev/null; echo out; echo err >&2"]
    )
    capfd.readouterr()
    assert unseal(image.root, T0, rid, approvals).phase == "ACTIVE"
    assert capfd.readouterr() == ("", "")
    event = _events(image)[-1]
    assert (event["event"], event["request_id"], event["scope"]) == (
        "hook-ok",
        rid,
        "ssh-emergency",
    )
    assert event["details"] == {"argv0": "/bin/sh", "exit": 0}


def test_hook_that_hangs_is_stopped_and_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, rid, approvals = _hooked(tmp_path, "hook-hangs", ["/bin/sleep", "30"])
    monkeypatch.setattr(unseal_module, "HOOK_TIMEOUT_SECONDS", 1)
    assert unseal(image.root, T0, rid, approvals).phase == "ACTIVE"
    event = _events(image)[-1]
    assert (event["event"], event["request_id"], event["scope"]) == (
        "hook-failed", rid, "ssh-emergency",
    )  # fmt: skip
    assert event["details"] == {"argv0": "/bin/sleep", "error": "TimeoutExpired"}


EVENT_SINK = Path(tempfile.mkdtemp(prefix="breakglass-hook-event-")) / "event.json"
atexit.register(shutil.rmtree, EVENT_SINK.parent, True)


def test_hook_gets_the_whole_activation_event(tmp_path: Path) -> None:
    image, rid, approvals = _hooked(
        tmp_path, "hook-event", ["/bin/sh", "-c", f"cat > {EVENT_SINK}; exit 3"]
    )
    assert unseal(image.root, T0, rid, approvals).phase == "ACTIVE"
    assert json.loads(EVENT_SINK.read_text()) == {
        "event": "activated",
        "request_id": rid,
        "scope": "ssh-emergency",
        "expires_at": "2026-11-29T19:10:00Z",
        "approvers": ["alice", "bob"],
        "requester": "dave",
        "reason": "r",
        "image": {"name": "hostkit", "version": "1.0.0"},
    }
    # a hook that fails is audited with its exit code, and the window stays open
    event = _events(image)[-1]
    assert (event["event"], event["details"]) == ("hook-failed", {"argv0": "/bin/sh", "exit": 3})
    assert load(image.root).phase == "ACTIVE"


def test_a_refused_approval_does_not_stop_the_next_one(
    pending: tuple[hostkit.Image, str, list[str]],
) -> None:
    image, rid, approvals = pending
    from builder.approval.request import Approval, load_approval

    stale = load_approval(approvals[1]).to_dict()
    stale["request_digest"] = "sha256:" + "0" * 64
    with pytest.raises(CheckFailed, match="approval refused: approval names a different"):
        unseal(image.root, T0, rid, [Approval.from_dict(stale).armored(), approvals[0]])
    pending_state = load(image.root).pending
    assert pending_state is not None and pending_state.approvals == ("alice",)
    # the accepted approval is kept, readable by the host only
    stored = Layout(image.root).approvals_dir(rid)
    assert stored.stat().st_mode & 0o777 == 0o700
    assert (stored / "alice.json").stat().st_mode & 0o777 == 0o644
    # and the activating event names the scope it opens
    assert unseal(image.root, T0, rid, [approvals[1]]).phase == "ACTIVE"
    activating = [e for e in _events(image) if e["event"] == "activating"][-1]
    assert (activating["request_id"], activating["scope"]) == (rid, "agent-backup")
