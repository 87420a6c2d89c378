"""The plaintext directory ``run/breakglass/``: create it private, list it, wipe it.

Wiping overwrites each file with zeros, fsyncs, then unlinks it, so the bytes
do not linger in a file system that is not tmpfs (as under ``--root`` in tests
and drills). Nothing under the directory is followed through a symbolic link:
listing uses ``lstat``, a link is removed (never followed) and reported, and
a link at ``run/breakglass`` itself is removed the same way.

When the system has the group ``breakglass-akc`` (the unprivileged
``AuthorizedKeysCommandUser``) and breakglass runs as root, the directory is
``0710 root:breakglass-akc`` and the activation grant ``0640``: that account
can open the grant by name and nothing else (no listing, no plaintext).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from builder.host import safepath
from builder.host.layout import Layout, crash_point

AKC_GROUP = "breakglass-akc"
LINK_NOTE = " (symbolic link, removed without following)"


def akc_gid() -> int | None:
    """The gid of ``breakglass-akc`` when it exists and we run as root (who may chgrp to it)."""
    if os.geteuid() != 0:
        return None
    import grp

    try:
        return grp.getgrnam(AKC_GROUP).gr_gid
    except KeyError:
        return None


def ensure_runtime(layout: Layout) -> Path:
    """Create or check ``run/breakglass/`` (0700, or 0710 for the AKC group) and return it.

    Raises StateError when it is unsafe (a link, another owner, group or other write).
    """
    gid = akc_gid()
    safepath.ensure_dir(
        layout.runtime, 0o710 if gid is not None else 0o700, top=layout.runtime, root=layout.root
    )
    if gid is not None:
        os.chown(layout.runtime, -1, gid, follow_symlinks=False)
    return layout.runtime


def write_private(layout: Layout, path: Path, data: bytes, *, akc_readable: bool = False) -> None:
    """Write one file under the runtime directory, mode 0600 (0640 for the AKC group), parents 0700.

    Atomic (temp file and rename) but not fsynced: on a host the runtime directory is
    a tmpfs, where fsync does nothing and which a power loss or reboot empties (crash
    recovery then reseals an ACTIVE host whose plaintext is gone). What a killed
    process wrote stays in the page cache either way, so the order of these writes
    and the state file's holds for every crash the state file survives.
    Raises StateError when a directory on the way is unsafe, OSError when the write fails.
    """
    ensure_runtime(layout)
    if path.parent != layout.runtime:
        safepath.ensure_dir(path.parent, 0o700, top=layout.runtime, root=layout.root)
    gid = akc_gid() if akc_readable else None
    safepath.write_file(path, data, 0o640 if gid is not None else 0o600, group=gid, durable=False)


def runtime_files(layout: Layout) -> list[Path]:
    """Every entry under ``run/breakglass/`` that is not a directory (files, temp files, links), sorted.

    Found with ``lstat`` only: a link to a directory is listed, not entered.
    A link (or any non-directory) at ``run/breakglass`` itself is listed too.
    """
    try:
        st = os.lstat(layout.runtime)
    except FileNotFoundError:
        return []
    if not stat.S_ISDIR(st.st_mode):
        return [layout.runtime]
    found: list[Path] = []
    stack = [layout.runtime]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    found.append(Path(entry.path))
    return sorted(found)


def wipe_file(path: Path) -> bool:
    """Overwrite with zeros, fsync, unlink; a file already gone is fine.

    Returns True when ``path`` was a symbolic link (or other non-file), which
    is unlinked without following.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    except OSError:
        # a symlink (ELOOP) or other oddity: nothing of ours to overwrite, just remove it
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return True
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            fd = -1
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return True
        size = os.fstat(fd).st_size
        remaining = size
        zeros = b"\0" * 65536
        while remaining > 0:
            remaining -= os.write(fd, zeros[: min(remaining, len(zeros))])
        os.fsync(fd)
    finally:
        if fd >= 0:
            os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return False


def wipe(layout: Layout, paths: Iterable[Path], *, crash_name: str | None = None) -> list[str]:
    """Wipe ``paths`` and prune empty directories; return what was wiped, relative to the root.

    A link is reported with ``LINK_NOTE`` after its path.
    """
    wiped = []
    for n, path in enumerate(paths):
        link = wipe_file(path)
        wiped.append(str(path.relative_to(layout.root)) + (LINK_NOTE if link else ""))
        if n == 0 and crash_name:
            crash_point(crash_name)
    _prune(layout.runtime)
    return wiped


def wipe_all(
    layout: Layout, *, keep: set[Path] | None = None, crash_name: str | None = None
) -> list[str]:
    """Wipe every entry under the runtime directory except ``keep``."""
    keep = keep or set()
    return wipe(layout, [p for p in runtime_files(layout) if p not in keep], crash_name=crash_name)


def _prune(runtime: Path) -> None:
    if not os.path.isdir(runtime) or os.path.islink(runtime):
        return
    for base, dirs, _files in os.walk(runtime, topdown=False):
        for d in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(base, d))  # a link to a directory fails here: never followed
