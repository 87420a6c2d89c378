"""The host runtime as payload files: ``breakglass host ...`` running on the image's own python3.

The image gets the ``builder`` package and the few pure-Python or abi3
libraries its host path imports, under ``usr/lib/breakglass``, plus a launcher
``usr/local/bin/breakglass``. The build-side libraries (jinja2, cryptography,
pyinfra, packer-py) stay out: a host never renders, seals or builds.

Files are read from the installed distributions, sorted, and any bytecode
found there is left out. The image gets bytecode of its own instead: a host
runs from a read-only image, where python cannot write ``__pycache__``, and
would otherwise recompile every module on every command (tens of
milliseconds on each sshd login). ``_bytecode`` compiles each ``.py`` with
the build's interpreter into ``__pycache__/NAME.<cache tag>.pyc`` with
hash-based invalidation (PEP 552: no timestamps, so builds stay
bit-identical; checked, so a source edited on the host still wins). An image
whose python3 is another version ignores these files and runs from source.
The compiler's output is cached (``_compile``) by the sources and the interpreter.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path, PurePosixPath

from builder.core.errors import CheckFailed, ToolMissing
from builder.core.payload import PayloadFile

LIB_DIR = "usr/lib/breakglass"
LAUNCHER_PATH = "usr/local/bin/breakglass"
# What `breakglass host ...` imports, directly or through builder.core.agecrypt and
# builder.core.shares. No ruamel.yaml: the host reads the image's JSON copy of the sealed
# bundle (etc/breakglass/sealed.json), which every image with this runtime carries.
RUNTIME_DISTRIBUTIONS = ("bech32", "click", "pyrage", "shamir-mnemonic")
_SKIPPED_SUFFIXES = (".pyc", ".pyo")
# The package's sources and package data (pyproject's package-data), nothing else in the tree.
_PACKAGE_SUFFIXES = (".py", ".j2", ".html", ".css", ".typed")
# dist-info files that describe the installation on the build machine, not the image.
_SKIPPED_METADATA = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")

# -IS: isolated, and no site module: the library carries everything it imports, and
# site's start-up work (site-packages, distro hooks) is most of a bare start on Debian.
LAUNCHER = """#!{python} -IS
# breakglass host runtime; the library lives in /{lib}, outside the system's site-packages.
import sys

sys.path.insert(0, "/{lib}")
from builder.entry import main

main()
"""


def host_runtime_files(python: str = "/usr/bin/python3") -> tuple[PayloadFile, ...]:
    """Every file the image needs to run ``breakglass host ...`` with ``python``, sorted.

    Raises ToolMissing when a runtime library is not installed here.
    """
    files = {f.path: f for f in _builder_package()}
    for name in RUNTIME_DISTRIBUTIONS:
        for f in _distribution(name):
            files.setdefault(f.path, f)
    for f in _bytecode([f for f in files.values() if f.path.endswith(".py")]):
        files.setdefault(f.path, f)
    launcher = LAUNCHER.format(python=python, lib=LIB_DIR).encode()
    files[LAUNCHER_PATH] = PayloadFile(LAUNCHER_PATH, launcher, 0o755)
    return tuple(sorted(files.values()))


# Runs in a fresh `python -I -S` with PYTHONHASHSEED=0: marshal's output depends on the
# process (set order follows string hashes; references follow refcounts), so every build
# compiles in the same clean process state, in the same order. Reads length-prefixed
# (image path, source) pairs on stdin, writes a length-prefixed pyc (or nothing when the
# source does not compile on this interpreter) for each.
_COMPILER = """
import importlib.util, struct, sys
from importlib._bootstrap_external import _code_to_hash_pyc
data = sys.stdin.buffer.read()
out, pos = [], 0
def take():
    global pos
    (n,) = struct.unpack_from("<Q", data, pos)
    pos += 8 + n
    return data[pos - n : pos]
while pos < len(data):
    name, source = take().decode(), take()
    try:
        code = compile(source, name, "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError):
        pyc = b""
    else:
        pyc = bytes(_code_to_hash_pyc(code, importlib.util.source_hash(source), True))
    out.append(struct.pack("<Q", len(pyc)) + pyc)
sys.stdout.buffer.write(b"".join(out))
"""


def _frame(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data


def _bytecode(sources: list[PayloadFile]) -> list[PayloadFile]:
    """A checked hash-based ``.pyc`` for every source that compiles here, sorted like ``sources``.

    Each is compiled under its path in the image (what tracebacks show) and
    placed where that path's import looks for it. Raises CheckFailed when the
    compiler process fails.
    """
    sources = sorted(sources)
    tag = sys.implementation.cache_tag
    if tag is None:
        return []  # an interpreter without bytecode caching: the image runs from source
    feed = b"".join(_frame(f"/{f.path}".encode()) + _frame(f.data) for f in sources)
    compiled = _compile(feed)
    out, pos = [], 0
    for f in sources:
        (n,) = struct.unpack_from("<Q", compiled, pos)
        pyc = compiled[pos + 8 : pos + 8 + n]
        pos += 8 + n
        if pyc:
            path = PurePosixPath(f.path)
            cached = path.parent / "__pycache__" / f"{path.stem}.{tag}.pyc"
            out.append(PayloadFile(str(cached), pyc))
    return out


def sources() -> tuple[str, tuple[str, ...], list[str]]:
    """What ``host_runtime_files`` reads, for the build's record of its inputs: the package
    folder, the suffixes taken from it, and every file of the runtime's libraries (their
    installation records included, which a reinstall rewrites)."""
    import importlib.metadata

    files = []
    for name in RUNTIME_DISTRIBUTIONS:
        dist = importlib.metadata.distribution(name)
        for entry in dist.files or []:
            rel = PurePosixPath(str(entry).replace("\\", "/"))
            path = Path(str(dist.locate_file(entry)))
            if ".." not in rel.parts and _wanted(rel) and path.is_file():
                files.append(str(path))
    return str(_package_root()), _PACKAGE_SUFFIXES, sorted(files)


def _package_root() -> Path:
    return Path(__file__).resolve().parents[1]  # the builder package


def _compile(feed: bytes) -> bytes:
    """The compiler process's answer to ``feed``, from the cache when this interpreter has
    compiled these very sources before.

    The answer is a function of the sources, their image paths, this interpreter
    and the compiler script, which the cache key covers; the entry holds the
    exact bytes the process wrote (and their digest, checked on reading), so a
    build from the cache is bit-identical to one without. A missing, damaged or
    unwritable cache only means compiling.
    """
    import hashlib

    key = hashlib.sha256(
        repr((sys.version, sys.executable, sys.implementation.cache_tag, _COMPILER)).encode()
        + hashlib.sha256(feed).digest()
    ).hexdigest()
    entry = cache_dir("bytecode") / f"{key}.pyc-set"
    try:
        data = entry.read_bytes()
        if hashlib.sha256(data[32:]).digest() == data[:32] and _complete(data[32:], feed):
            return data[32:]
    except OSError:
        pass
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _COMPILER],
        input=feed,
        capture_output=True,
        env={"PYTHONHASHSEED": "0", "PATH": os.environ.get("PATH", "")},
        check=False,
    )
    if proc.returncode != 0 or not _complete(proc.stdout, feed):
        raise CheckFailed("cannot compile the host runtime to bytecode")
    try:
        entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
        tmp.write_bytes(hashlib.sha256(proc.stdout).digest() + proc.stdout)
        os.replace(tmp, entry)
    except OSError:
        pass  # a read-only home: compile every time
    return proc.stdout


def _complete(compiled: bytes, feed: bytes) -> bool:
    """Whether ``compiled`` holds one framed answer for each source framed in ``feed``."""
    pos = count = 0
    while pos < len(feed):
        (n,) = struct.unpack_from("<Q", feed, pos)
        pos += 8 + n
        count += 1
    sources, pos = count // 2, 0
    for _ in range(sources):
        if pos + 8 > len(compiled):
            return False
        (n,) = struct.unpack_from("<Q", compiled, pos)
        pos += 8 + n
    return pos == len(compiled)


def cache_dir(name: str) -> Path:
    """``$BREAKGLASS_CACHE/NAME``, or ``~/.cache/breakglass/NAME`` (beside the base's cache)."""
    root = os.environ.get("BREAKGLASS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "breakglass") / name


def _builder_package() -> list[PayloadFile]:
    root = _package_root()
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root.parent)
        if (
            path.is_file()
            and path.suffix in _PACKAGE_SUFFIXES
            and _wanted(PurePosixPath(rel.as_posix()))
        ):
            out.append(PayloadFile(f"{LIB_DIR}/{rel.as_posix()}", path.read_bytes()))
    return out


def _distribution(name: str) -> list[PayloadFile]:
    """The installed files of distribution ``name``, as its ``RECORD`` lists them.

    What ``importlib.metadata.distribution(name).files`` gives, read directly:
    importing ``importlib.metadata`` (and the ``email`` package it parses with)
    cost a tenth of a build's time on a base."""
    found = _dist_info(name)
    if found is None:
        raise ToolMissing(f"python package {name} is not installed (needed in the image)")
    site, record = found
    out = []
    for entry in sorted(record):
        rel = PurePosixPath(entry.replace("\\", "/"))
        # Scripts and data installed outside site-packages (../../bin/...) are not for the image.
        if ".." in rel.parts or not _wanted(rel):
            continue
        if rel.parts[0].endswith(".dist-info") and rel.name in _SKIPPED_METADATA:
            continue
        data = (site / entry).read_bytes()
        mode = 0o755 if rel.suffix == ".so" else 0o644
        out.append(PayloadFile(f"{LIB_DIR}/{rel}", data, mode))
    return out


def _dist_info(name: str) -> tuple[Path, list[str]] | None:
    """The folder holding distribution ``name`` and the paths its ``RECORD`` names, from the
    first entry of ``sys.path`` that has it (as ``importlib.metadata`` searches); None when
    none has. Names compare normalized (PEP 503: case, and runs of ``-_.``)."""
    import csv
    import re

    def normal(text: str) -> str:
        return re.sub(r"[-_.]+", "-", text).lower()

    wanted = normal(name)
    for folder in sys.path:
        site = Path(folder or ".")
        try:
            names = sorted(os.listdir(site))
        except OSError:
            continue
        for info in names:
            if (
                info.endswith(".dist-info")
                and normal(info[: -len(".dist-info")].split("-")[0]) == wanted
            ):
                try:
                    text = (site / info / "RECORD").read_text(encoding="utf-8")
                except OSError:
                    return site, []
                return site, [row[0] for row in csv.reader(text.splitlines()) if row]
    return None


def _wanted(rel: PurePosixPath) -> bool:
    return "__pycache__" not in rel.parts and not rel.name.endswith(_SKIPPED_SUFFIXES)
