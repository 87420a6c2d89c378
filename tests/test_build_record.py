"""A no-op rebuild answered from the build's record: the same answer as the full build, and
never a stale one (any changed input or output goes to the full build)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.release import build, build_record
from builder.release.runtime_payload import cache_dir
from builder.release.spec import load_spec
from tests.conftest import ROOT, require_tool

# the entry point, then which heavy libraries the process loaded (none when the record answered)
ENTRY = """
import sys
from builder.entry import main
sys.argv = ["breakglass", *sys.argv[1:]]
try:
    main()
finally:
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"click", "jinja2", "ruamel"})
    sys.stderr.write("heavy: " + ",".join(heavy) + "\\n")
"""
FULL = "import sys; sys.argv[0] = 'breakglass'; from builder.cli import main; main()"


class Run:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.stdout = proc.stdout
        lines = proc.stderr.splitlines()
        self.heavy = lines[-1] != "heavy: " if lines and lines[-1].startswith("heavy:") else None
        self.stderr = "\n".join(line for line in lines if not line.startswith("heavy:"))


def _run(code: str, *args: str | Path) -> Run:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    return Run(proc)


@pytest.fixture
def built(example_project: Path, demo_keys: Path, tmp_path: Path) -> tuple[list[str], Path]:
    require_tool("ssh-keygen")
    args = ["build", str(example_project), "--out", str(tmp_path / "dist")]
    args += ["--sign-key", str(demo_keys / "release")]
    first = _run(ENTRY, *args)
    assert first.code == 0 and first.stdout.startswith("built: "), first.stderr
    return args, tmp_path / "dist" / "example" / "1.0.0"


def test_noop_rebuild_is_answered_from_the_record_as_the_full_build_answers(
    built: tuple[list[str], Path],
) -> None:
    args, _ = built
    for extra in ([], ["--json"]):
        fast = _run(ENTRY, *args, *extra)
        assert fast.code == 0 and fast.heavy is False, fast.stderr
        full = _run(FULL, *args, *extra)
        assert full.code == 0, full.stderr
        assert fast.stdout == full.stdout
        assert "unchanged" in fast.stdout or '"changed": false' in fast.stdout


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "# changed\n")


def _template(project: Path) -> None:
    _edit(project / "templates/deploy-agent/normal.toml.j2")


def _new_template(project: Path) -> None:
    (project / "templates/deploy-agent/extra.j2").write_text("unused\n")


def _spec(project: Path) -> None:
    _edit(project / "images/example.yaml")


def _bundle(project: Path) -> None:
    _edit(project / "images/example.sealed.yaml")


def _deleted_signature(image: Path) -> None:
    (image / "breakglass-manifest.json.sig").unlink()


def _deleted_blob(image: Path) -> None:
    max((image / "oci/blobs/sha256").iterdir(), key=lambda p: p.stat().st_size).unlink()


def _tampered_blob(image: Path) -> None:
    """One byte of the layer changed in place, its size and mtime kept."""
    blob = max((image / "oci/blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
    st = blob.stat()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))


def _extra_output(image: Path) -> None:
    (image / "oci/stray").write_text("x")


INPUTS: dict[str, Callable[[Path], None]] = {
    "template": _template,
    "new template": _new_template,
    "spec": _spec,
    "bundle": _bundle,
}
OUTPUTS: dict[str, Callable[[Path], None]] = {
    "deleted signature": _deleted_signature,
    "deleted blob": _deleted_blob,
    "tampered blob": _tampered_blob,
    "extra file": _extra_output,
}


@pytest.mark.parametrize("change", sorted(INPUTS))
def test_a_changed_input_goes_to_the_full_build(
    change: str, built: tuple[list[str], Path], example_project: Path
) -> None:
    args, _ = built
    INPUTS[change](example_project.parent.parent)
    fast = _run(ENTRY, *args)
    assert fast.heavy is True
    # the same version with other content: refused, as the full build refuses it
    assert fast.code == 2, fast.stdout + fast.stderr
    assert "already exists with different content" in fast.stderr
    full = _run(FULL, *args)
    assert (full.code, full.stderr) == (fast.code, fast.stderr)


@pytest.mark.parametrize("change", sorted(OUTPUTS))
def test_a_changed_output_goes_to_the_full_build(
    change: str, built: tuple[list[str], Path]
) -> None:
    args, image = built
    OUTPUTS[change](image)
    fast = _run(ENTRY, *args)
    assert fast.heavy is True
    full = _run(FULL, *args)
    assert (full.code, full.stdout, full.stderr) == (fast.code, fast.stdout, fast.stderr)
    # and no record says the damaged output is fine: the next run goes to the full build too
    assert _run(ENTRY, *args).heavy is True


def test_another_signing_key_or_none_goes_to_the_full_build(
    built: tuple[list[str], Path], demo_keys: Path
) -> None:
    args, _ = built
    unsigned = _run(ENTRY, *args[:-2])
    assert unsigned.heavy is True and unsigned.code == 2, unsigned.stderr
    other = _run(ENTRY, *args[:-1], demo_keys / "alice")
    assert other.heavy is True and other.code == 2, other.stderr


def test_a_key_that_signs_differently_each_time_is_never_recorded(
    example_project: Path, tmp_path: Path
) -> None:
    key = tmp_path / "ecdsa"
    keygen = require_tool("ssh-keygen")
    subprocess.run([keygen, "-q", "-t", "ecdsa", "-N", "", "-f", str(key)], check=True)
    args = ["build", str(example_project), "--out", str(tmp_path / "dist"), "--sign-key", str(key)]
    assert _run(ENTRY, *args).code == 0
    assert not (tmp_path / "dist" / build_record.RECORD_DIR).exists()
    assert build_record.public_key(key) is not None
    assert build_record.public_key(key)[0] == "ecdsa-sha2-nistp256"  # type: ignore[index]


def test_a_changed_module_of_the_tool_goes_to_the_full_build(
    example_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "part_of_the_tool.py"
    module.write_text("VALUE = 1\n")
    fake = type(sys)("part_of_the_tool")
    fake.__file__ = str(module)
    monkeypatch.setitem(sys.modules, "part_of_the_tool", fake)
    out = tmp_path / "dist"
    planned = build.plan(load_spec(example_project))
    result = build.build_oci(planned, out, None)
    assert build_record.write(planned, result, out, None) is not None
    assert build_record.unchanged(out, example_project, None) is not None
    module.write_text("VALUE = 22\n")
    assert build_record.unchanged(out, example_project, None) is None


def test_another_source_date_epoch_goes_to_the_full_build(
    built: tuple[list[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    args, _ = built
    out, spec = Path(args[3]), Path(args[1])
    key = Path(args[5])
    assert build_record.unchanged(out, spec, key) is not None
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1")
    assert build_record.unchanged(out, spec, key) is None


# Every file a build opens, from the interpreter's audit events; what the record must cover.
AUDIT = """
import os, sys, json
opened = set()
def hook(event, args):
    if event == "open" and isinstance(args[0], str) and (args[1] in (None, "r", "rb")):
        opened.add(os.path.realpath(args[0]))
sys.addaudithook(hook)
from pathlib import Path
from builder.release import build_record
spec, out = Path(sys.argv[1]), Path(sys.argv[2])
build_record.full_build(spec, out, None, False)
json.dump(sorted(opened), sys.stdout)
"""


def test_the_record_names_every_file_the_build_reads(example_project: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-c", AUDIT, str(example_project), str(out)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
    )  # fmt: skip
    record_file = build_record.record_path(out, example_project, None)
    record = json.loads(record_file.read_text())
    covered = {os.path.realpath(p) for p in record["inputs"]}
    modules = {os.path.realpath(p) for p, _, _ in record["modules"]}
    prefixes = tuple(os.path.realpath(p) + os.sep for p in {sys.prefix, sys.base_prefix})
    missed = [
        p
        for p in json.loads(proc.stdout)
        if os.path.isfile(p)
        and p not in covered
        and p not in modules
        and not p.startswith((str(out.resolve()) + os.sep, *prefixes))
        and "__pycache__" not in p  # bytecode of a module the record names by its source
        and not p.startswith(("/proc/", "/dev/", "/etc/"))
        # compiled templates, found by their template's path and checksum: no input
        and not p.startswith(str(cache_dir("templates")) + os.sep)
    ]
    assert missed == []
    assert str(example_project.resolve()) in covered
