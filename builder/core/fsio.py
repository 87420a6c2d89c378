"""Durable file writes: temp file in the same directory, fsync, rename."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically; readers see the old or the new file, never half."""
    with atomic_file(path, mode) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a file that replaces ``path`` when the block ends: temp file beside it, fsync,
    rename, fsync of the directory. On any failure ``path`` is untouched and the temp file gone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    import tempfile  # here: host commands that write nothing should not pay for it

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def sync_all(paths: list[Path]) -> None:
    """fsync every file and directory of ``paths`` at once, one thread each.

    One fsync after another waits for a journal commit each (ext4: milliseconds
    apiece); issued together, the filesystem commits them in one go. Returns when
    all are on disk; raises the first OSError.
    """
    import threading

    errors: list[OSError] = []

    def sync(path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=sync, args=(p,)) for p in dict.fromkeys(paths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def new_directory(final: Path) -> Iterator[Path]:
    """Yield a staging directory beside ``final``; on success it becomes ``final`` in one rename,
    world-readable (build output holds no secret), and on any failure it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    import tempfile

    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield staging
        os.chmod(staging, 0o755)  # noqa: S103 - published build output, readable by design
        fsync_dir(staging)
        os.rename(staging, final)
        fsync_dir(final.parent)
    except BaseException:
        import shutil  # only on failure: it costs the host path milliseconds at start

        shutil.rmtree(staging, ignore_errors=True)
        raise
