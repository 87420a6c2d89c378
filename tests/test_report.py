"""The drill report: same data in Markdown, HTML and JSON; the HTML renders in headless Chromium."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import zlib
from pathlib import Path

from builder.drill.report import DrillResult, Holder, Step, html_page, markdown, write_report
from tests.conftest import require_tool

STEPS = (
    Step("normal mode", True, 0.0, 0.4, "agent=deploy-agent route=normal outcome=ok"),
    Step("outage", True, 0.4, 0.9, "identity provider stopped; agent failed as expected"),
    Step("request, approve, unseal", True, 0.9, 3.1, "2 of 3 approvals; scope agent-backup active"),
    Step("break-glass access", True, 3.1, 4.0, "agent route=breakglass ok; ssh login ok"),
    Step("expiry", False, 4.0, 15.2, "agent still reached the service <after> expiry"),
)


def result(steps: tuple[Step, ...] = STEPS) -> DrillResult:
    return DrillResult(
        image="example",
        started_at="2026-11-29T19:00:00Z",
        steps=steps,
        time_to_access_seconds={"agent-backup": 3.6, "ssh-emergency": 0.634},
        time_to_revoke_seconds={"agent-backup": 0.51},
        audit_head="sha256:" + "ab" * 32,
        scopes=("agent-backup", "ssh-emergency"),
        holders=(Holder("alice", "2026-11-28T10:00:00Z"), Holder("bob", None)),
        drift=({"scope": "agent-backup", "name": "deploy-token", "status": "in-sync"},),
    )


def test_three_files_carry_the_same_data(tmp_path: Path) -> None:
    paths = write_report(result(), tmp_path)
    doc = json.loads(paths["json"].read_text())
    assert doc["ok"] is False
    assert [s["name"] for s in doc["steps"]] == [s.name for s in STEPS]
    # one headline value per scope; a scope the drill never revoked says so
    assert doc["time_to_access_seconds"] == {"agent-backup": 3.6, "ssh-emergency": 0.634}
    assert doc["time_to_revoke_seconds"] == {"agent-backup": 0.51}
    assert doc["scopes"] == ["agent-backup", "ssh-emergency"]
    md = paths["md"].read_text()
    assert (
        "- Time from outage to access: **3.60 s** (agent-backup), **0.63 s** (ssh-emergency)" in md
    )
    assert (
        "- Time from expiry to revoked access: **0.51 s** (agent-backup), **not reached** (ssh-emergency)"
        in md
    )
    assert "**FAILED**" in md and "| 5 | expiry | FAIL |" in md and "bob: **not checked in**" in md
    page = paths["html"].read_text()
    assert "sha256:" + "ab" * 32 in page and "<b>3.60 s</b><small>agent-backup</small>" in page
    assert "<b>0.63 s</b><small>ssh-emergency</small>" in page
    assert "&lt;after&gt;" in page  # details are escaped
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # no external assets


def test_timeline_has_one_bar_per_step() -> None:
    page = html_page(result())
    svg = page[page.index('<svg id="timeline"') : page.index("</svg>")]
    assert svg.count('<rect class="step"') == len(STEPS)
    assert svg.count('fill="#cf222e"') == 1  # the failed step is red
    assert "PASSED" in markdown(result(STEPS[:4]))


def _png_is_not_blank(path: Path) -> bool:
    """Decode the PNG (8-bit RGB/RGBA, as Chromium writes it) and look for more than one colour."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and color in (2, 6)
    raw = zlib.decompress(idat)
    stride = width * (3 if color == 2 else 4) + 1
    # filter bytes aside, a blank page compresses to rows that are all identical or all zero deltas
    rows = {raw[i * stride + 1 : (i + 1) * stride] for i in range(0, height, 7)}
    return len(rows) > 3


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = require_tool("chromium")
    argv = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", *args,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    paths = write_report(result(), tmp_path)
    shot = tmp_path / "report.png"
    proc = _chromium(
        tmp_path, f"--screenshot={shot}", "--window-size=1200,900", paths["html"].as_uri()
    )
    assert shot.exists(), proc.stderr[-2000:]
    assert _png_is_not_blank(shot)
    dom = _chromium(tmp_path, "--dump-dom", paths["html"].as_uri()).stdout
    m = re.search(r'<svg id="timeline".*?</svg>', dom, re.S)
    assert m, "the rendered DOM has no #timeline svg"
    assert m.group(0).count("<rect") >= len(STEPS)
