"""docs/recovery.md, run as written: stock tools only recover a freshly sealed credential.

The recipe's blocks run in bash with ``age``, ``age-keygen``, the SLIP-39
reference CLI (``shamir``) and a Python snippet that imports only ``bech32``;
breakglass is used only to seal the bundle beforehand and never in the recipe.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEMO_KEYS, ROOT, missing, require_tool, run_cli

DOC = ROOT / "docs/recovery.md"
VENV_BIN = Path(sys.executable).parent  # where pip put the `shamir` console script


def blocks() -> dict[str, str]:
    """The recipe's ``sh`` blocks by their first line (``# the extractor``, ...)."""
    found = {}
    for body in re.findall(r"```sh\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        first, _, rest = body.partition("\n")
        found[first.removeprefix("# ")] = rest
    assert set(found) == {"your settings", "the extractor", "each approver", "the recovery"}
    return found


def _shamir() -> str:
    path = shutil.which("shamir") or str(VENV_BIN / "shamir")
    if not Path(path).exists():
        missing("the SLIP-39 reference CLI (shamir, from shamir-mnemonic[cli])")
    return path


def _python_with_bech32(bin_dir: Path) -> None:
    """``python3`` for the recipe: this interpreter, whose packages include bech32."""
    wrapper = bin_dir / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)


@pytest.mark.parametrize(
    ("scope", "credential", "approvers"),
    [("ssh-emergency", "emergency-ssh-key", ("alice", "bob")),
     ("agent-backup", "deploy-token", ("carol", "bob"))],
)  # fmt: skip
def test_recovery_recipe_with_stock_tools(
    scope: str, credential: str, approvers: tuple[str, ...], example_project: Path, tmp_path: Path
) -> None:
    for tool in ("age", "age-keygen", "ssh-keygen", "bash", "awk"):
        require_tool(tool)
    shamir = _shamir()
    sealed = run_cli("seal", example_project, "--rotate", "--json")  # fresh credentials, fresh U
    assert sealed.returncode == 0, sealed.stderr
    bundle = Path(json.loads(sealed.stdout)["bundle"])
    enrolment = json.loads(Path(json.loads(sealed.stdout)["enrolment"]).read_bytes())
    public = next(c["public"] for c in enrolment["credentials"] if c["name"] == credential)

    recipe = blocks()
    assert "builder" not in "".join(recipe.values())  # the recipe never calls breakglass
    # PATH: the stock tools, and a python3 that has the bech32 package; no PYTHONPATH to ours
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "shamir").symlink_to(shamir)
    _python_with_bech32(bin_dir)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "LC_ALL": "C.UTF-8",
           "BUNDLE": str(bundle), "SCOPE": scope, "CREDENTIAL": credential}  # fmt: skip

    def bash(script: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env={**env, **extra},
            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc

    combiner = tmp_path / "combiner"
    combiner.mkdir()
    for name in approvers:
        machine = tmp_path / name  # each approver on their own machine, with only their identity
        machine.mkdir()
        shutil.copy(DEMO_KEYS / f"{name}.age", machine / f"{name}.age")
        script = recipe["the extractor"] + recipe["each approver"].replace(
            "ME=alice IDENTITY=alice.age", f"ME={name} IDENTITY={name}.age"
        )
        shown = bash(script, machine)
        words = (machine / f"{name}.share").read_text().split()
        assert len(words) == 33 and shown.stdout.split() == words
        shutil.copy(machine / f"{name}.share", combiner / f"{name}.share")

    done = bash(recipe["the extractor"] + recipe["the recovery"], combiner)
    assert done.stdout.endswith(f"recovered {credential}\n"), done.stderr
    recovered = combiner / credential
    assert recovered.stat().st_mode & 0o777 == 0o600  # umask 077
    assert sorted(p.name for p in combiner.iterdir()) == [credential, "unseal.key"]
    if credential == "emergency-ssh-key":
        derived = subprocess.run(["ssh-keygen", "-y", "-f", str(recovered)],
                                 capture_output=True, text=True, check=True)  # fmt: skip
        assert derived.stdout.split()[:2] == public.split()[:2]
    else:
        assert "sha256:" + hashlib.sha256(recovered.read_bytes().strip()).hexdigest() == public


def test_too_few_shares_recover_nothing(example_project: Path, tmp_path: Path) -> None:
    for tool in ("age", "age-keygen", "bash", "awk"):
        require_tool(tool)
    shamir = _shamir()
    sealed = run_cli("seal", example_project, "--rotate", "--json")
    assert sealed.returncode == 0, sealed.stderr
    bundle = json.loads(sealed.stdout)["bundle"]
    recipe = blocks()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "shamir").symlink_to(shamir)
    _python_with_bech32(bin_dir)
    shutil.copy(DEMO_KEYS / "alice.age", tmp_path / "alice.age")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "BUNDLE": bundle,
           "SCOPE": "ssh-emergency", "CREDENTIAL": "emergency-ssh-key"}  # fmt: skip
    script = recipe["the extractor"] + recipe["each approver"] + recipe["the recovery"]
    proc = subprocess.run(["bash", "-uo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
                          check=False)  # fmt: skip
    assert "recovered" not in proc.stdout
    assert "the shares do not give the unseal key of ssh-emergency" in proc.stderr
    assert not (tmp_path / "emergency-ssh-key").exists()
