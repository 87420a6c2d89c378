"""The README's "Try it on a dev machine" block, pasted into bash as a new user would."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.conftest import ROOT, missing, require_tool

HEADING = "### Try it on a dev machine"


def walkthrough() -> str:
    """The first ``sh`` block after the walkthrough's heading; fails if either is gone."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert HEADING in text, "the README lost its walkthrough heading"
    block = re.search(r"```sh\n(.*?)```", text[text.index(HEADING) :], re.S)
    assert block is not None, "no sh block under the walkthrough heading"
    return block.group(1)


def test_readme_walkthrough_runs_top_to_bottom(tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    if not (ROOT / ".venv/bin/breakglass").exists():
        missing("the .venv that `make demo` and `make test` create (the walkthrough runs it)")
    script = walkthrough()
    assert "host install" in script and "host unseal" in script  # the flow, not an empty block
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # mktemp -d lands under tmp_path
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "installed example 1.0.0" in out and "signed by release" in out
    assert "ACTIVE: scope ssh-emergency open until" in out
    keys = [line for line in out.splitlines() if line.startswith("ssh-ed25519 ")]
    assert len(keys) == 1 and "breakglass" in keys[0]  # once while ACTIVE, not after reseal
    assert "DORMANT (was ACTIVE)" in out
    assert re.search(r"^ok: \d+ events\nhead: sha256:[0-9a-f]{64}$", out, re.M)
    assert "request id: " not in out  # --json: the id came from the JSON, stdout stays clean
    (work,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert not any((work / "host/run/breakglass").iterdir())  # nothing left after reseal
