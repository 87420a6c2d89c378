"""The host runtime as payload files: ``breakglass host ...`` running on the image's own python3.

The image gets the ``builder`` package and the few pure-Python or abi3
libraries its host path imports, under ``usr/lib/breakglass``, plus a launcher
``usr/local/bin/breakglass``. The build-side libraries (jinja2, cryptography,
pyinfra, packer-py) stay out: a host never renders, seals or builds.

Files are read from the installed distributions, sorted, without bytecode, so
the same environment gives the same bytes on every run.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path, PurePosixPath

from builder.errors import ToolMissing
from builder.payload import PayloadFile

LIB_DIR = "usr/lib/breakglass"
LAUNCHER_PATH = "usr/local/bin/breakglass"
# What `breakglass host ...` imports, directly or through builder.agecrypt,
# builder.shares and builder.yamlfile.
RUNTIME_DISTRIBUTIONS = ("bech32", "click", "pyrage", "ruamel.yaml", "shamir-mnemonic")
_SKIPPED_SUFFIXES = (".pyc", ".pyo")
# The package's sources and package data (pyproject's package-data), nothing else in the tree.
_PACKAGE_SUFFIXES = (".py", ".j2", ".html", ".css", ".typed")
# dist-info files that describe the installation on the build machine, not the image.
_SKIPPED_METADATA = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")

LAUNCHER = """#!{python} -I
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
    launcher = LAUNCHER.format(python=python, lib=LIB_DIR).encode()
    files[LAUNCHER_PATH] = PayloadFile(LAUNCHER_PATH, launcher, 0o755)
    return tuple(sorted(files.values()))


def _builder_package() -> list[PayloadFile]:
    root = Path(__file__).resolve().parent
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
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise ToolMissing(f"python package {name} is not installed (needed in the image)") from None
    out = []
    for entry in sorted(dist.files or [], key=str):
        rel = PurePosixPath(str(entry).replace("\\", "/"))
        # Scripts and data installed outside site-packages (../../bin/...) are not for the image.
        if ".." in rel.parts or not _wanted(rel):
            continue
        if rel.parts[0].endswith(".dist-info") and rel.name in _SKIPPED_METADATA:
            continue
        data = Path(str(dist.locate_file(entry))).read_bytes()
        mode = 0o755 if rel.suffix == ".so" else 0o644
        out.append(PayloadFile(f"{LIB_DIR}/{rel}", data, mode))
    return out


def _wanted(rel: PurePosixPath) -> bool:
    return "__pycache__" not in rel.parts and not rel.name.endswith(_SKIPPED_SUFFIXES)
