"""Directories and files under ``run/breakglass`` and ``var/lib/breakglass``, never through a link.

Whoever can plant a symbolic link in these directories could make plaintext
land elsewhere, or make a wipe miss it. So every directory of ours is
created level by level with an explicit mode (``chmod`` after ``mkdir``,
whatever the umask), and an existing one must be a real directory owned by
the running user with no group or other write: then nobody else can swap
its entries between the check and the use. Files are opened relative to
their directory's descriptor with ``O_NOFOLLOW``; an atomic write creates
its temp file with ``O_EXCL`` and renames it over the name (a rename
replaces a link, it never writes through it).
"""

from __future__ import annotations

import os
import stat

from builder.core.errors import StateError

TYPE_CHECKING = False  # typing and pathlib cost the start of every host command
if TYPE_CHECKING:
    from os import PathLike
    from pathlib import Path

_FORBIDDEN_WRITE = stat.S_IWGRP | stat.S_IWOTH
_CHUNK = 1 << 16  # how much one read asks for


def unsafe_reason(path: Path) -> str | None:
    """Why ``path`` is not a safe directory of ours, or None when it is (or does not exist)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid != os.geteuid():
        return f"it is owned by uid {st.st_uid}, not by the user running breakglass"
    if st.st_mode & _FORBIDDEN_WRITE:
        return f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def ensure_dir(path: Path, mode: int, *, top: Path, root: Path) -> Path:
    """Create or check ``path`` (mode ``mode``) and every level from ``top`` down to it.

    A level above ``path`` that is missing is created 0700; one that exists
    keeps its mode, once checked.
    ``top`` is the first directory of ours (``run/breakglass`` or
    ``var/lib/breakglass``); its parent belongs to the image and is created
    plainly when missing. Raises StateError naming the level and why it is
    unsafe (a symbolic link, not a directory, another owner, group or other
    write).
    """
    top.parent.mkdir(parents=True, exist_ok=True)
    current = top.parent
    for part in path.relative_to(top.parent).parts:
        current = current / part
        # a missing level above ``path`` is made private; an existing one keeps its (checked) mode
        level_mode = mode if current == path else 0o700
        try:
            os.mkdir(current, level_mode)
        except FileExistsError:
            pass
        else:
            os.chmod(current, level_mode)  # mkdir's mode is cut by the umask
        why = unsafe_reason(current)
        if why is not None:
            raise StateError(
                f"unsafe directory {current.relative_to(root)}: {why}",
                hint="remove it (breakglass creates it) or fix its owner and mode",
            )
    if stat.S_IMODE(os.lstat(path).st_mode) != mode:
        os.chmod(path, mode)
    return path


def _open_dir(directory: Path) -> int:
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)


def write_file(
    path: Path, data: bytes, mode: int, *, group: int | None = None, durable: bool = True
) -> None:
    """Replace ``path`` atomically with ``data``, mode exactly ``mode``, inside its checked directory.

    ``group`` also sets the file's group (root only). ``durable`` (the default) fsyncs
    the file before the rename and the directory after it; without it the replacement
    is atomic for every process but may not survive a power loss (for the runtime
    directory, a tmpfs that a power loss empties anyway).
    The caller has checked the directory with ``ensure_dir``. Raises OSError.
    """
    dfd = _open_dir(path.parent)
    try:
        tmp = f".{path.name}.{os.urandom(6).hex()}.tmp"  # secrets.token_hex(6), without its imports
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
        try:
            if group is not None:
                os.fchown(fd, -1, group)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp, dir_fd=dfd)
            raise
        os.close(fd)
        os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        if durable:
            os.fsync(dfd)
    finally:
        os.close(dfd)


def read_file(path: str | PathLike[str], *, limit: int | None = None) -> bytes:
    """The bytes of a regular file, refusing a symbolic link at its name. Raises OSError.

    With ``limit``, at most ``limit + 1`` bytes: enough for the caller's size
    cap (``builder.core.bounded``) to refuse a larger file without reading it all.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{os.path.basename(path)} is not a regular file")
        chunks = []
        size = 0
        while limit is None or size <= limit:
            chunk = os.read(fd, _CHUNK if limit is None else min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
