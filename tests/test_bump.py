"""``breakglass bump`` changes the version characters and not one byte more."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.release.spec import load_spec
from tests.conftest import ROOT

EXAMPLE = (ROOT / "images" / "example.yaml").read_text(encoding="utf-8")
VERSION_LINE = "version: 1.0.0\n"
assert EXAMPLE.count(VERSION_LINE) == 1


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "builder", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def split_example(before: str, after: str, *, newline: str = "\n") -> tuple[str, str]:
    """The example spec cut around its version value: ``head`` + VALUE + ``tail``.

    ``before``/``after`` are what stands around the value on its line (quotes,
    spacing, a trailing comment); ``newline`` rewrites every line ending.
    """
    head, tail = EXAMPLE.split(VERSION_LINE)
    head = (head + "version:" + before).replace("\n", newline)
    tail = (after + "\n" + tail).replace("\n", newline)
    return head, tail


# (id, text before the value, text after it, line ending, old version)
LAYOUTS = [
    ("plain", " ", "", "\n", "1.0.0"),
    ("single-quoted", " '", "'", "\n", "1.0.0"),
    ("double-quoted", ' "', '"', "\n", "1.0.0"),
    ("trailing-comment", " ", "   # released 1.0.0 on 1.0.0 day", "\n", "1.0.0"),
    ("quoted-comment", "   '", "'  # version: 1.0.0", "\n", "1.0.0"),
    ("crlf", ' "', '"  # windows editor', "\r\n", "1.0.0"),
    ("wide-numbers", " ", "", "\n", "19.99.999"),
]
PARTS = {
    "patch": {"1.0.0": "1.0.1", "19.99.999": "19.99.1000"},
    "minor": {"1.0.0": "1.1.0", "19.99.999": "19.100.0"},
    "major": {"1.0.0": "2.0.0", "19.99.999": "20.0.0"},
}


@pytest.mark.parametrize("part", sorted(PARTS))
@pytest.mark.parametrize(
    ("before", "after", "newline", "old"),
    [layout[1:] for layout in LAYOUTS],
    ids=[layout[0] for layout in LAYOUTS],
)
def test_bump_changes_only_the_version(
    tmp_path: Path, part: str, before: str, after: str, newline: str, old: str
) -> None:
    head, tail = split_example(before, after, newline=newline)
    spec = tmp_path / "images" / "example.yaml"
    spec.parent.mkdir()
    spec.write_bytes((head + old + tail).encode("utf-8"))
    spec.chmod(0o640)
    new = PARTS[part][old]

    proc = run("bump", f"--{part}", str(spec))

    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.strip() == f"{spec}: {old} -> {new}"
    data = spec.read_bytes()
    assert data.startswith(head.encode("utf-8")), "bytes before the version changed"
    assert data.endswith(tail.encode("utf-8")), "bytes after the version changed"
    assert data == (head + new + tail).encode("utf-8")
    assert spec.stat().st_mode & 0o777 == 0o640
    assert load_spec(spec).version == new
    assert sorted(p.name for p in spec.parent.iterdir()) == ["example.yaml"], "temp file left"


def test_bump_defaults_to_patch_and_reports_json(tmp_path: Path) -> None:
    spec = tmp_path / "example.yaml"
    spec.write_text(EXAMPLE, encoding="utf-8")
    proc = run("bump", "--json", str(spec))
    assert proc.returncode == 0, proc.stderr
    assert '"new": "1.0.1"' in proc.stdout and '"old": "1.0.0"' in proc.stdout
    assert spec.read_text(encoding="utf-8") == EXAMPLE.replace(VERSION_LINE, "version: 1.0.1\n")


@pytest.mark.parametrize("separator", ["\u2028", "\x85"], ids=["u2028", "nel"])
def test_bump_finds_the_version_after_characters_python_counts_as_line_breaks(
    tmp_path: Path, separator: str
) -> None:
    # inside a quoted scalar these are no line break to YAML, but str.splitlines splits there
    head, tail = split_example(" ", "")
    head = head.replace(
        "name: example\n", f'description: "Fleet{separator}host 1.0.0"\nname: example\n'
    )
    tail = tail.replace(
        "description: Fleet host with a deploy agent and an emergency SSH account\n", ""
    )
    spec = tmp_path / "example.yaml"
    spec.write_bytes((head + "1.0.0" + tail).encode("utf-8"))
    proc = run("bump", "--minor", str(spec))
    assert proc.returncode == 0, proc.stderr
    assert spec.read_bytes() == (head + "1.1.0" + tail).encode("utf-8")


BAD = [
    ("two-part", "version: '1.2'\n", "version '1.2' is not semver", ":7:10: "),
    ("float", "version: 1.0\n", "version must be a non-empty string, got a number", ":7:10: "),
    ("prefixed", "version: v1.0.0\n", "version 'v1.0.0' is not semver", ":7:10: "),
    ("prerelease", "version: 1.0.0-rc1\n", "is not semver", ":7:10: "),
    ("empty", "version: ''\n", "version must be a non-empty string", ":7:10: "),
    ("missing", "", "spec has no version", ": "),
    ("bad-yaml", "version: [1.0.0\n", "malformed yaml", ":"),
]


@pytest.mark.parametrize(
    ("line", "message", "where"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bump_refuses_a_bad_version_and_changes_nothing(
    tmp_path: Path, line: str, message: str, where: str
) -> None:
    spec = tmp_path / "example.yaml"
    original = EXAMPLE.replace(VERSION_LINE, line).encode("utf-8")
    spec.write_bytes(original)
    for part in ("--major", "--patch"):
        proc = run("bump", part, str(spec))
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"breakglass: error: {spec}{where}"), lines[0]
        assert message in lines[0]
        assert "Traceback" not in proc.stderr
        assert spec.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["example.yaml"]


def test_bump_of_a_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    proc = run("bump", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"breakglass: error: {tmp_path / 'nope.yaml'}: file not found"
    ]
    assert list(tmp_path.iterdir()) == []
