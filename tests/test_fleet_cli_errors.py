"""Fleet commands given bad input: one error line, exit 2, nothing written, no traceback."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli


def one_error(stderr: str, text: str) -> None:
    lines = stderr.splitlines()
    assert lines and lines[0].startswith("breakglass: error: ") and text in lines[0], stderr
    assert len(lines) <= 2 and all(x.startswith("hint: ") for x in lines[1:]), stderr
    assert "Traceback" not in stderr


def test_inventory_that_raises(tmp_path: Path) -> None:
    inv = tmp_path / "inventory.py"
    inv.write_text("web = [1 / 0]\n")
    proc = run_cli("fleet", "status", inv)
    assert proc.returncode == 2
    one_error(proc.stderr, "cannot read inventory")


def test_parallel_must_be_positive(tmp_path: Path) -> None:
    proc = run_cli("fleet", "status", "@ssh/127.0.0.1", "--parallel", "0")
    assert proc.returncode == 2
    one_error(proc.stderr, "--parallel must be at least 1")


def test_timeline_of_a_missing_store(tmp_path: Path) -> None:
    proc = run_cli("fleet", "audit", "timeline", "--store", tmp_path / "nope")
    assert proc.returncode == 2
    one_error(proc.stderr, "does not exist")


def test_enrol_spec_without_targets_changes_nothing(example_project: Path) -> None:
    before = sorted(p.name for p in example_project.parent.iterdir())
    proc = run_cli("fleet", "enrol", example_project, "@ssh/127.0.0.1")
    assert proc.returncode == 2
    one_error(proc.stderr, "no credential of the spec has an 'enrol' block")
    assert sorted(p.name for p in example_project.parent.iterdir()) == before


def test_rotate_without_a_rotation_or_old_parts(example_project: Path, tmp_path: Path) -> None:
    text = example_project.read_text().replace(
        "generate: token\n",
        "generate: token\n    enrol:\n      - {hosts: all, file: /etc/deploy/tokens}\n",
    )
    example_project.write_text(text)
    inv = tmp_path / "inventory.py"
    inv.write_text('hosts = [("h1", {"ssh_hostname": "127.0.0.1", "ssh_port": 1})]\n')
    proc = run_cli("fleet", "rotate", example_project, inv, "--connect-timeout", "2")
    assert proc.returncode == 2
    one_error(proc.stderr, "no rotation in progress; give the old public parts with --old")
    assert not example_project.with_name("example.rotate.json").exists()


def test_rotate_due_of_an_unsealed_spec(tmp_path: Path, example_project: Path) -> None:
    example_project.with_name("example.sealed.yaml").unlink()
    proc = run_cli("fleet", "rotate-due", example_project)
    assert proc.returncode == 2
    one_error(proc.stderr, "cannot read sealed bundle")
