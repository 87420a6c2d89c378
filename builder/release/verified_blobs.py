"""Which large blobs this user has hashed before, so a build on a base does not hash it again.

A base layer is tens of megabytes; every build on that base checked its sha256
(a twentieth of a second for Debian's). After a blob matched its digest, a marker
named by the digest and the file's identity and version (device, inode, size,
mtime and ctime, in nanoseconds) goes into the user's cache; a later check of a
file whose ``fstat`` gives that same name skips the hash.

Why a matching name means the same bytes: any write to the file, any truncate or
utime, sets its ctime to the current time, and no user can set a ctime (only the
clock can, and that takes root). A replacement file is another inode, or the same
inode with a new ctime. The kernel's timestamps are coarse (a clock tick), so a
file changed within the last tick or so is not recorded (git's "racily clean"
rule): a change within the tick of the check could otherwise keep the ctime.

A build hard-links the base's blobs into its image, and a link sets the ctime
too; ``linked`` then moves the marker to the new ctime, when the link changed
nothing else (size, mtime, inode; one more link). A write in the moment between
the stats around the link, its mtime put back, would go unseen; but it would be
a write to the new image as well, which shares the inode: the base's blob is as
trusted as the image built on it.

Only files of this user's, which no one else may write, are recorded or trusted,
and only from a cache folder of this user's that no one else may write: the
cache is the user's own, as the base cache beside it is.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path

MIN_SIZE = 1 << 20  # smaller blobs cost less to hash than to look up
# How old a change must be to be recorded: a file system that keeps nanoseconds stamps
# with the kernel's coarse clock, whose tick is 10 ms at most (HZ=100): two ticks. One
# that keeps whole seconds (or two, FAT) may stamp a later change with the same time.
_SETTLED_NS = 20_000_000
_SETTLED_COARSE_NS = 2_000_000_000


def _folder() -> Path | None:
    """The markers' folder when it is this user's alone (made if missing), else None."""
    from builder.release.runtime_payload import cache_dir

    folder = cache_dir("verified-blobs")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or not _private(st):
        return None
    return folder


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _name(blob_digest: str, st: os.stat_result) -> str | None:
    """The marker's name for a blob file with ``st`` (from fstat), or None when it is no
    candidate: small, not a regular file, or writable by someone else."""
    if st.st_size < MIN_SIZE or not stat.S_ISREG(st.st_mode) or not _private(st):
        return None
    hex_digest = blob_digest.removeprefix("sha256:")
    return f"{hex_digest}.{st.st_dev}.{st.st_ino}.{st.st_size}.{st.st_mtime_ns}.{st.st_ctime_ns}"


def known(blob_digest: str, st: os.stat_result) -> bool:
    """Whether the file with ``st`` was found to hold ``blob_digest`` before, unchanged since."""
    name = _name(blob_digest, st)
    if name is None:
        return False
    folder = _folder()
    return folder is not None and (folder / name).is_file()


def remember(blob_digest: str, before: os.stat_result, after: os.stat_result) -> None:
    """Record that the file hashed to ``blob_digest``, when its stat did not change while it
    was read (``before``, ``after``) and its last change has settled; never raises."""
    name = _name(blob_digest, before)
    if name is None or _name(blob_digest, after) != name:
        return
    ctime = before.st_ctime_ns
    settled = _SETTLED_NS if ctime % 1_000_000_000 else _SETTLED_COARSE_NS
    if time.time_ns() - ctime < settled:
        return
    _mark(name)


def linked(blob_digest: str, before: os.stat_result, after: os.stat_result) -> None:
    """Move a known blob's marker past the hard link just made to it (``before`` and
    ``after`` the link): the link set the ctime and nothing else; never raises."""
    old, new = _name(blob_digest, before), _name(blob_digest, after)
    if old is None or new is None or old == new:
        return
    same = (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_dev,
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    if not same or after.st_nlink != before.st_nlink + 1:
        return
    folder = _folder()
    if folder is not None and (folder / old).is_file():
        _mark(new)


def _mark(name: str) -> bool:
    """Create the marker ``name``, dropping the file's older ones (their ctimes are past)."""
    folder = _folder()
    if folder is None:
        return False
    try:
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.close(fd)
    except OSError:
        return False  # an unwritable cache: the next build hashes the blob again
    same_file = ".".join(name.split(".")[:3]) + "."  # the digest, device and inode
    with contextlib.suppress(OSError):
        for old in os.listdir(folder):
            if old.startswith(same_file) and old != name:
                os.unlink(folder / old)
    return True
