"""The plaintext directory ``run/breakglass/``: create it private, list it, wipe it.

Wiping overwrites each file with zeros, fsyncs, then unlinks it, so the bytes
do not linger in a file system that is not tmpfs (as under ``--root`` in tests
and drills).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from builder.fsio import write_atomic
from builder.host.layout import Layout, crash_point


def ensure_runtime(layout: Layout) -> Path:
    """Create ``run/breakglass/`` with mode 0700 (and fix the mode if it drifted)."""
    layout.runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(layout.runtime, 0o700)
    return layout.runtime


def write_private(layout: Layout, path: Path, data: bytes) -> None:
    """Write one plaintext file under the runtime directory, mode 0600, parents 0700."""
    ensure_runtime(layout)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data, mode=0o600)


def runtime_files(layout: Layout) -> list[Path]:
    """Every file under ``run/breakglass/`` (temp files included), sorted."""
    if not layout.runtime.is_dir():
        return []
    found: list[Path] = []
    for base, _dirs, files in os.walk(layout.runtime):
        found.extend(Path(base) / f for f in files)
    return sorted(found)


def wipe_file(path: Path) -> None:
    """Overwrite with zeros, fsync, unlink; a file already gone is fine."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    except OSError:
        # a symlink or other oddity: nothing of ours to overwrite, just remove it
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    try:
        size = os.fstat(fd).st_size
        remaining = size
        zeros = b"\0" * 65536
        while remaining > 0:
            remaining -= os.write(fd, zeros[: min(remaining, len(zeros))])
        os.fsync(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def wipe(layout: Layout, paths: Iterable[Path], *, crash_name: str | None = None) -> list[str]:
    """Wipe ``paths`` and prune empty directories; return what was wiped, relative to the root."""
    wiped = []
    for n, path in enumerate(paths):
        wipe_file(path)
        wiped.append(str(path.relative_to(layout.root)))
        if n == 0 and crash_name:
            crash_point(crash_name)
    _prune(layout.runtime)
    return wiped


def wipe_all(
    layout: Layout, *, keep: set[Path] | None = None, crash_name: str | None = None
) -> list[str]:
    """Wipe every file under the runtime directory except ``keep``."""
    keep = keep or set()
    return wipe(layout, [p for p in runtime_files(layout) if p not in keep], crash_name=crash_name)


def _prune(runtime: Path) -> None:
    if not runtime.is_dir():
        return
    for base, dirs, _files in os.walk(runtime, topdown=False):
        for d in dirs:
            with contextlib.suppress(OSError):
                (Path(base) / d).rmdir()
