"""Shared fixtures. A test that needs an external tool skips locally when it is absent,
and fails under CI (CI=true), so a missing install step can never pass unnoticed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from builder.vm.base import BaseImage

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def require_tool(name: str) -> str:
    """Return the path of ``name``; skip locally, fail under CI, when it is missing."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    if path:
        return path
    missing(f"the tool {name!r}")


def missing(what: str) -> NoReturn:
    """Skip locally, fail under CI (which must install everything): ``what`` is not installed."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is not installed (CI must install it)")
    pytest.skip(f"{what} is not installed")


def require_root(why: str) -> None:
    """Skip locally, fail under CI, when not root."""
    if os.geteuid() == 0:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"this test must run as root in CI ({why})")
    pytest.skip(f"needs root: {why}")


@pytest.fixture(autouse=True, scope="session")
def _receipts_stay_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``approve`` keeps receipts under $XDG_STATE_HOME: never in the real home during tests."""
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))


DEMO_KEYS = ROOT / "examples" / "keys"
BREAKGLASS = [sys.executable, "-m", "builder"]


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``breakglass`` CLI in a subprocess; never raises on a non-zero exit."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run(
        [*BREAKGLASS, *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture
def demo_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/keys with private keys at 0600 (git does not keep modes)."""
    dest = tmp_path_factory.mktemp("keys")
    for src in DEMO_KEYS.iterdir():
        shutil.copy(src, dest / src.name)
        public = src.suffix == ".pub" or src.name in ("allowed_signers", "README.md")
        os.chmod(dest / src.name, 0o644 if public else 0o600)
    return dest


@pytest.fixture
def example_project(tmp_path: Path) -> Path:
    """A copy of images/ and templates/ in a temp dir; returns the example spec's path."""
    shutil.copytree(ROOT / "images", tmp_path / "images")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    return tmp_path / "images" / "example.yaml"


@pytest.fixture(scope="session")
def debian_base_image(tmp_path_factory: pytest.TempPathFactory) -> BaseImage:
    """The Debian base OCI layout (``builder.vm.base.BaseImage``), built once into the cache
    (``breakglass base debian``, about 90 s on a fresh machine) and copied once per session."""
    from builder.vm.base import debian_base

    for tool in ("debootstrap", "umoci"):
        require_tool(tool)
    return debian_base(tmp_path_factory.mktemp("base") / "oci")


@pytest.fixture(scope="session")
def base_rootfs(debian_base_image: BaseImage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Debian base unpacked with umoci, once per session (read-only: copy it with ``rootfs``)."""
    bundle = tmp_path_factory.mktemp("base-bundle") / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", debian_base_image.reference, str(bundle)],
        check=True,
        capture_output=True,
    )
    return bundle / "rootfs"


@pytest.fixture
def rootfs(base_rootfs: Path, tmp_path: Path) -> Path:
    """A fresh copy of the Debian rootfs (owners, modes and links kept) for one test to change."""
    dest = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", str(base_rootfs), str(dest)], check=True)
    return dest


@pytest.fixture(autouse=True)
def _mutation_bookkeeping_in_process_only() -> None:
    """Under `make mutate`, mutmut first records which tests call which functions, by an
    environment value that child processes inherit; a child `breakglass` started from a
    scratch directory cannot find mutmut's configuration there and fails. The recording
    only needs this process (mutmut keeps its own copy of the value), so the children run
    the code unrecorded. A mutant's name, which children must see, is left alone."""
    if os.environ.get("MUTANT_UNDER_TEST") in ("stats", "list_all_tests"):
        del os.environ["MUTANT_UNDER_TEST"]
