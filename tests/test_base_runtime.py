"""The host runtime payload: deterministic, with its own reproducible bytecode, runnable by a bare python3."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from builder.core.payload import PayloadFile
from builder.release.runtime_payload import LAUNCHER_PATH, LIB_DIR, host_runtime_files
from builder.vm.deploy import provision, stage_payload
from tests.conftest import require_tool
from tests.deploy_fixtures import DIRS

SYSTEM_PYTHON = Path("/usr/bin/python3")


def _install(files: tuple[PayloadFile, ...], root: Path) -> None:
    for f in files:
        path = root / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f.data)
        os.chmod(path, f.mode)


def test_runtime_files_are_deterministic_with_hash_checked_bytecode_only() -> None:
    files = host_runtime_files()
    assert files == host_runtime_files()
    assert [f.path for f in files] == sorted(f.path for f in files)
    paths = [f.path for f in files]
    tag = sys.implementation.cache_tag
    pyc = [f for f in files if f.path.endswith(".pyc")]
    sources = {p for p in paths if p.endswith(".py")}
    assert len(pyc) >= len([p for p in sources if p.startswith(f"{LIB_DIR}/builder/")])
    for f in pyc:
        # only ours: next to its source, for this interpreter, hash-based and checked (PEP 552)
        parent, cache, name = f.path.rsplit("/", 2)
        assert cache == "__pycache__" and name.endswith(f".{tag}.pyc"), f.path
        assert f"{parent}/{name.removesuffix(f'.{tag}.pyc')}.py" in sources
        assert f.data[:4] == importlib.util.MAGIC_NUMBER
        assert int.from_bytes(f.data[4:8], "little") == 0b11
    assert all(p.startswith(f"{LIB_DIR}/") or p == LAUNCHER_PATH for p in paths)
    for needed in (
        "builder/cli/__init__.py",
        "click/__init__.py",
        "pyrage/__init__.py",
        "bech32/__init__.py",
    ):
        assert f"{LIB_DIR}/{needed}" in paths, needed
    for build_only in ("jinja2/", "ruamel/", "cryptography/", "pyinfra/", "packerpy/"):
        assert not [p for p in paths if p.startswith(f"{LIB_DIR}/{build_only}")], build_only


def test_launcher_runs_the_cli_with_an_isolated_interpreter() -> None:
    launcher = next(f for f in host_runtime_files("/opt/py/bin/python3") if f.path == LAUNCHER_PATH)
    assert launcher.mode == 0o755
    text = launcher.data.decode()
    assert text.startswith("#!/opt/py/bin/python3 -IS\n")
    assert f'sys.path.insert(0, "/{LIB_DIR}")' in text and "main()" in text


def test_bare_system_python_imports_the_host_path_from_the_payload(tmp_path: Path) -> None:
    require_tool(str(SYSTEM_PYTHON))
    _install(host_runtime_files(), tmp_path)
    lib = tmp_path / LIB_DIR
    # -S: no site-packages at all, so only what the payload carries can be imported.
    probe = (
        f"import sys, pkgutil, importlib; sys.path.insert(0, {str(lib)!r}); import builder.host; "
        "[importlib.import_module('builder.host.' + m.name) for m in pkgutil.iter_modules(builder.host.__path__)]; "
        "import builder.core.agecrypt, builder.core.shares, builder.core.yamlfile, builder.cli; "
        "print(builder.__file__)"
    )
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-S", "-c", probe], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(lib / "builder/__init__.py")


def test_the_image_bytecode_is_what_python_loads(tmp_path: Path) -> None:
    """With the payload's __pycache__ present, python runs the host path without compiling."""
    _install(host_runtime_files(), tmp_path)
    lib = tmp_path / LIB_DIR
    probe = f"import sys; sys.path.insert(0, {str(lib)!r}); import builder.host.commands"
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-v", "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    cached = f"{lib}/builder/host/__pycache__/commands.{sys.implementation.cache_tag}.pyc"
    assert f"code object from '{cached}'" in proc.stderr


@pytest.mark.e2e
def test_image_runs_breakglass_with_its_own_python(rootfs: Path, tmp_path: Path) -> None:
    staged = stage_payload(host_runtime_files(), DIRS, tmp_path / "staged", users=[])
    assert provision(f"@chroot/{rootfs}", staged).changed > 0
    proc = subprocess.run(
        ["chroot", str(rootfs), "/usr/local/bin/breakglass", "--version"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("breakglass, version ")


def test_runtime_bytecode_from_the_cache_is_what_compiling_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from builder.release import runtime_payload

    monkeypatch.setenv("BREAKGLASS_CACHE", str(tmp_path))
    sources = [
        PayloadFile("usr/lib/breakglass/a.py", b"A = {'x', 'y'}\n"),
        PayloadFile("usr/lib/breakglass/b.py", b"def broken(:\n"),
    ]
    compiled = runtime_payload._bytecode(sources)
    assert [f.path for f in compiled] == [
        f"usr/lib/breakglass/__pycache__/a.{sys.implementation.cache_tag}.pyc"
    ]
    (entry,) = (tmp_path / "bytecode").iterdir()

    def no_compiler(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr(subprocess, "run", no_compiler)
    assert runtime_payload._bytecode(sources) == compiled
    # a damaged entry is not used: compiled again, to the same bytes
    entry.write_bytes(entry.read_bytes()[:-1])
    monkeypatch.undo()
    monkeypatch.setenv("BREAKGLASS_CACHE", str(tmp_path))
    assert runtime_payload._bytecode(sources) == compiled
    # another source is another entry
    runtime_payload._bytecode([PayloadFile("usr/lib/breakglass/a.py", b"A = 2\n")])
    assert len(list((tmp_path / "bytecode").iterdir())) == 2


@pytest.mark.parametrize(
    "name", ["bech32", "click", "pyrage", "shamir-mnemonic", "Shamir_Mnemonic"]
)
def test_a_distribution_is_read_as_importlib_metadata_reads_it(name: str) -> None:
    # the payload reads each RECORD itself (importlib.metadata costs a build on a base
    # a tenth of its time); the files and bytes must be those importlib.metadata finds
    import importlib.metadata

    from builder.release import runtime_payload

    dist = importlib.metadata.distribution(name)
    expected = {
        str(entry): Path(str(dist.locate_file(entry))).read_bytes()
        for entry in dist.files or []
        if ".." not in entry.parts and runtime_payload._wanted(PurePosixPath(str(entry)))
        and not (entry.parts[0].endswith(".dist-info") and entry.name in runtime_payload._SKIPPED_METADATA)
    }  # fmt: skip
    got = runtime_payload._distribution(name)
    assert {f.path.removeprefix(f"{LIB_DIR}/"): f.data for f in got} == expected
    assert [f.path for f in got] == sorted(f.path for f in got) and len(expected) > 3


def test_a_distribution_that_is_not_installed_is_named() -> None:
    from builder.core.errors import ToolMissing
    from builder.release import runtime_payload

    with pytest.raises(ToolMissing, match="python package no-such-dist is not installed"):
        runtime_payload._distribution("no-such-dist")
