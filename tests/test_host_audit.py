"""The audit log's hash chain finds every edit, deletion, insertion and reorder."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from builder.core.errors import CheckFailed
from builder.host import audit
from builder.host.layout import Layout
from tests import hostkit

T0 = dt.datetime(2026, 11, 29, 19, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def log(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path)
    # host commands refuse a root without an image manifest; the log tests need only its presence
    layout.manifest.parent.mkdir(parents=True)
    layout.manifest.write_text("{}")
    for n in range(6):
        audit.append(layout, T0 + dt.timedelta(seconds=n), "test-event", request_id="r" * 32,
                     details={"n": n}, who="tester")  # fmt: skip
    return layout


def _lines(layout: Layout) -> list[bytes]:
    return layout.audit.read_bytes().splitlines(keepends=True)


def _write(layout: Layout, lines: list[bytes]) -> None:
    layout.audit.write_bytes(b"".join(lines))


def test_intact_log_verifies_and_reports_its_head(log: Layout) -> None:
    result = audit.verify(log)
    assert result.events == 6
    assert result.head == "sha256:" + __import__("hashlib").sha256(_lines(log)[-1]).hexdigest()
    assert audit.verify(log, expect_head=result.head).head == result.head
    first = audit.read_events(log)[0]
    assert first["prev"] == audit.GENESIS and first["seq"] == 1


@pytest.mark.parametrize("line_no", [1, 3, 6])
def test_one_byte_edit_is_found(log: Layout, line_no: int) -> None:
    lines = _lines(log)
    target = lines[line_no - 1]
    pos = target.index(b'"n":') + 4
    lines[line_no - 1] = target[:pos] + b"9" + target[pos + 1 :]
    _write(log, lines)
    with pytest.raises(CheckFailed, match=f"line {line_no}: "):
        audit.verify(log)


@pytest.mark.parametrize("line_no", [1, 4, 6])
def test_deleted_line_is_found(log: Layout, line_no: int) -> None:
    lines = _lines(log)
    del lines[line_no - 1]
    _write(log, lines)
    with pytest.raises(CheckFailed, match="line"):
        audit.verify(log)


def test_inserted_line_is_found(log: Layout) -> None:
    lines = _lines(log)
    lines.insert(2, lines[1])
    _write(log, lines)
    with pytest.raises(CheckFailed, match="line 3: sequence number 2"):
        audit.verify(log)


def test_swapped_lines_are_found(log: Layout) -> None:
    lines = _lines(log)
    lines[2], lines[3] = lines[3], lines[2]
    _write(log, lines)
    with pytest.raises(CheckFailed, match="line 3"):
        audit.verify(log)


def test_rewritten_chain_is_found_by_the_anchored_head(log: Layout) -> None:
    anchored = audit.verify(log).head
    # an attacker rewrites the log from scratch with consistent hashes
    log.audit.unlink()
    log.audit_head.unlink()
    audit.append(log, T0, "test-event", details={"n": 0}, who="tester")
    with pytest.raises(CheckFailed, match="anchored head"):
        audit.verify(log, expect_head=anchored)


def test_cli_reports_the_first_bad_line(log: Layout) -> None:
    lines = _lines(log)
    lines[1] = lines[1].replace(b"tester", b"tasted")
    _write(log, lines)
    r = hostkit.run("host", "audit", "verify", "--root", str(log.root))
    assert r.returncode == 1
    assert r.stderr == (
        "breakglass: error: audit log line 2: edited, or lines removed or moved after it "
        "(line 3 does not chain to it)\n"
    )
    s = hostkit.run("host", "audit", "show", "--root", str(log.root), "--json")
    assert s.returncode == 0 and '"tasted"' in s.stdout


def test_audit_unwritable_refuses_activation(tmp_path: Path) -> None:
    from builder.core.errors import StateError
    from builder.host.request import open_request
    from builder.host.unseal import unseal

    image = hostkit.clone(hostkit.shared_image(), tmp_path / "root")
    req = open_request(
        image.root, T0, scope="ssh-emergency", ttl_seconds=60, reason="r", requester="dave"
    )
    approvals = [hostkit.lib_approve(req, image.approvers[n], T0) for n in ("alice", "bob")]
    unseal(image.root, T0, req.id, approvals[:1])
    audit_path = Layout(image.root).audit
    data = audit_path.read_bytes()
    audit_path.unlink()
    audit_path.mkdir()  # appends now fail (EISDIR), as on a full or read-only disk
    with pytest.raises(StateError, match="cannot write the audit log"):
        unseal(image.root, T0, req.id, approvals[1:])
    assert hostkit.plaintext_files(image.root) == []
    audit_path.rmdir()
    audit_path.write_bytes(data)
    assert unseal(image.root, T0, req.id, approvals[1:]).phase == "ACTIVE"
