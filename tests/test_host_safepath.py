"""``builder.host.safepath``: our directories and files, never through a link, modes whatever the umask.

The attacks on a whole host (a link planted at the runtime directory, a
world-writable state directory) are in tests/test_host_trust.py; these pin
each function's own promise.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.core.errors import StateError
from builder.host import safepath
from tests.conftest import require_root


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@contextlib.contextmanager
def _no_blocking(seconds: int = 5) -> Iterator[None]:
    """Turn a call that blocks (opening a FIFO with no writer) into a TimeoutError."""

    def _alarm(*_: object) -> None:
        raise TimeoutError("blocked")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---- unsafe_reason -----------------------------------------------------------------------


def test_unsafe_reason_names_each_fault(tmp_path: Path) -> None:
    assert safepath.unsafe_reason(tmp_path / "missing") is None
    good = tmp_path / "good"
    good.mkdir(mode=0o700)
    os.chmod(good, 0o755)  # noqa: S103 - others may read and enter, not write
    assert safepath.unsafe_reason(good) is None
    (tmp_path / "link").symlink_to(good)
    assert safepath.unsafe_reason(tmp_path / "link") == "it is a symbolic link"
    (tmp_path / "file").write_bytes(b"")
    assert safepath.unsafe_reason(tmp_path / "file") == "it is not a directory"
    for mode in (0o770, 0o702, 0o1777):
        os.chmod(good, mode)
        assert safepath.unsafe_reason(good) == (
            f"it is writable by group or others (mode {mode:04o})"
        )


def test_unsafe_reason_refuses_another_owner(tmp_path: Path) -> None:
    require_root("chown to another user")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 4321, -1)
    assert safepath.unsafe_reason(theirs) == (
        "it is owned by uid 4321, not by the user running breakglass"
    )


# ---- ensure_dir --------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_ensure_dir_creates_every_level_with_its_mode(tmp_path: Path, umask: int) -> None:
    root = tmp_path / "root"
    top = root / "var/lib/breakglass"
    path = top / "requests/ab.approvals"
    with _umask(umask):
        assert safepath.ensure_dir(path, 0o750, top=top, root=root) == path
    assert path.is_dir() and not (root / "var").is_symlink()
    # the levels from top down to path's parent are private, path has the mode asked for
    assert _mode(top) == 0o700 and _mode(top / "requests") == 0o700
    assert _mode(path) == 0o750
    # asked again with another mode: path gets it, the levels above keep theirs
    os.chmod(top / "requests", 0o711)  # noqa: S103
    safepath.ensure_dir(path, 0o700, top=top, root=root)
    assert _mode(path) == 0o700 and _mode(top / "requests") == 0o711
    safepath.ensure_dir(top, 0o710, top=top, root=root)
    assert _mode(top) == 0o710


@pytest.mark.parametrize("what", ["link", "file", "writable"])
def test_ensure_dir_refuses_an_unsafe_level(tmp_path: Path, what: str) -> None:
    root = tmp_path / "root"
    top = root / "run/breakglass"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    top.parent.mkdir(parents=True)
    if what == "link":
        top.symlink_to(elsewhere)
        why = "it is a symbolic link"
    elif what == "file":
        top.write_bytes(b"")
        why = "it is not a directory"
    else:
        top.mkdir()
        os.chmod(top, 0o777)  # noqa: S103 - the attack
        why = "it is writable by group or others (mode 0777)"
    with pytest.raises(
        StateError, match=f"^{re.escape(f'unsafe directory run/breakglass: {why}')}$"
    ) as e:
        safepath.ensure_dir(top / "agents", 0o700, top=top, root=root)
    assert e.value.hint == "remove it (breakglass creates it) or fix its owner and mode"
    assert list(elsewhere.iterdir()) == []
    assert not (top / "agents").exists() or what == "writable"


# ---- write_file --------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_write_file_replaces_with_the_exact_mode(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "state.json"
    data = os.urandom(200_000)  # more than one write may take
    with _umask(umask):
        safepath.write_file(path, data, 0o640)
    assert path.read_bytes() == data and _mode(path) == 0o640
    safepath.write_file(path, b"second", 0o600)
    assert path.read_bytes() == b"second" and _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temp file left


def test_write_file_replaces_a_link_and_never_writes_through_it(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"theirs")
    room = tmp_path / "room"
    room.mkdir()
    (room / "state.json").symlink_to(target)
    safepath.write_file(room / "state.json", b"ours", 0o600)
    assert target.read_bytes() == b"theirs"
    assert not (room / "state.json").is_symlink() and (room / "state.json").read_bytes() == b"ours"


def test_write_file_refuses_a_parent_that_is_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OSError):
        safepath.write_file(tmp_path / "link" / "f", b"x", 0o600)
    assert list(real.iterdir()) == []


def test_write_file_refuses_a_parent_that_is_not_a_directory(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe", 0o600)
    with _no_blocking(), pytest.raises(NotADirectoryError):
        safepath.write_file(tmp_path / "pipe" / "f", b"x", 0o600)


def test_write_file_never_writes_through_a_planted_temp_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the temp name is random; with a known one, what sits there is refused, never followed
    monkeypatch.setattr(os, "urandom", lambda n: bytes(n))
    target = tmp_path / "target"
    target.write_bytes(b"theirs")
    room = tmp_path / "room"
    room.mkdir()
    tmp = room / f".f.{'0' * 12}.tmp"
    tmp.symlink_to(target)
    with pytest.raises(FileExistsError):
        safepath.write_file(room / "f", b"ours", 0o600)
    assert target.read_bytes() == b"theirs"
    assert not (room / "f").exists()


def test_write_file_sets_the_group_and_keeps_the_owner(tmp_path: Path) -> None:
    require_root("chown to another group")
    path = tmp_path / ".grant.json"
    safepath.write_file(path, b"{}", 0o640, group=4321)
    st = path.lstat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 4321, 0o640)
    safepath.write_file(path, b"{}", 0o600)
    assert path.lstat().st_gid == os.getegid()


def test_write_file_removes_its_temp_file_when_the_write_fails(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"before")
    with pytest.raises(TypeError):
        safepath.write_file(path, "not bytes", 0o600)  # type: ignore[arg-type]
    assert path.read_bytes() == b"before"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


# ---- read_file ---------------------------------------------------------------------------


def test_read_file_reads_a_regular_file_and_nothing_else(tmp_path: Path) -> None:
    data = os.urandom(3 * 65536 + 7)  # several reads
    (tmp_path / "f").write_bytes(data)
    assert safepath.read_file(tmp_path / "f") == data
    (tmp_path / "empty").write_bytes(b"")
    assert safepath.read_file(tmp_path / "empty") == b""
    (tmp_path / "link").symlink_to(tmp_path / "f")
    with pytest.raises(OSError):
        safepath.read_file(tmp_path / "link")
    with pytest.raises(OSError, match=r"^d is not a regular file$"):
        (tmp_path / "d").mkdir()
        safepath.read_file(tmp_path / "d")
    os.mkfifo(tmp_path / "pipe", 0o600)
    with _no_blocking(), pytest.raises(OSError):
        safepath.read_file(tmp_path / "pipe")


@pytest.mark.parametrize("limit", [0, 1, 100, 65535, 65536, 65537, 200_000])
@pytest.mark.parametrize("extra", [-1, 0, 1, 65536 * 3])
def test_read_file_with_a_limit_reads_one_byte_past_it(
    tmp_path: Path, limit: int, extra: int
) -> None:
    size = max(0, limit + extra)
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    # enough for the caller's cap to see that the file is larger, and no more
    assert safepath.read_file(tmp_path / "f", limit=limit) == data[: limit + 1]
