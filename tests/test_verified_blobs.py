"""A base blob hashed once is not hashed again while its file is unchanged, and only then."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from builder.core.canonical import digest
from builder.core.errors import CheckFailed
from builder.release import oci, verified_blobs


@pytest.fixture
def blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, object]]:
    monkeypatch.setenv("BREAKGLASS_CACHE", str(tmp_path / "cache"))
    data = os.urandom(verified_blobs.MIN_SIZE + 10)
    d = digest(data)
    path = tmp_path / "layout" / "blobs" / "sha256" / d.removeprefix("sha256:")
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    path.chmod(0o644)
    settled = path.stat().st_mtime_ns - 10_000_000_000
    os.utime(path, ns=(settled, settled))  # ctime is now, whatever the utime
    monkeypatch.setattr(verified_blobs, "_SETTLED_NS", 0)
    return path, {"digest": d, "size": len(data)}


def _hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import hashlib

    calls: list[int] = []
    real = hashlib.sha256

    def counting(*args: bytes) -> object:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(hashlib, "sha256", counting)
    return calls


def test_a_blob_checked_before_is_not_hashed_again(
    blob: tuple[Path, dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, descriptor = blob
    layout = path.parents[2]
    oci._check_blob_file(layout, descriptor)
    calls = _hashed(monkeypatch)
    oci._check_blob_file(layout, descriptor)
    assert calls == [1]  # the check itself makes the hasher, unused
    assert len(os.listdir(Path(os.environ["BREAKGLASS_CACHE"]) / "verified-blobs")) == 1


def test_a_changed_blob_is_hashed_and_refused(
    blob: tuple[Path, dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, descriptor = blob
    layout = path.parents[2]
    oci._check_blob_file(layout, descriptor)
    before = path.stat()
    time.sleep(0.05)  # past the clock tick of the fixture's change, which _SETTLED_NS=0 trusts
    data = bytearray(path.read_bytes())
    data[5] ^= 1
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size and mtime
    with pytest.raises(CheckFailed, match="content does not match its digest"):
        oci._check_blob_file(layout, descriptor)


def test_a_blob_changed_just_now_is_not_recorded(
    blob: tuple[Path, dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # timestamps tick coarsely: a change in the same tick could keep the ctime
    path, descriptor = blob
    monkeypatch.setattr(verified_blobs, "_SETTLED_NS", 3600 * 10**9)
    oci._check_blob_file(path.parents[2], descriptor)
    assert not (Path(os.environ["BREAKGLASS_CACHE"]) / "verified-blobs").exists() or not os.listdir(
        Path(os.environ["BREAKGLASS_CACHE"]) / "verified-blobs"
    )


def test_a_blob_others_may_write_is_never_trusted(
    blob: tuple[Path, dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, descriptor = blob
    path.chmod(0o666)
    oci._check_blob_file(path.parents[2], descriptor)
    assert not verified_blobs.known(str(descriptor["digest"]), os.stat(path))


def test_a_link_to_a_known_blob_keeps_it_known(
    blob: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    # the build links base blobs into its image, which sets their ctime
    path, descriptor = blob
    blob_digest = str(descriptor["digest"])
    oci._check_blob_file(path.parents[2], descriptor)
    before = os.stat(path)
    time.sleep(0.05)
    os.link(path, tmp_path / "image-blob")
    after = os.stat(path)
    assert not verified_blobs.known(blob_digest, after)
    verified_blobs.linked(blob_digest, before, after)
    assert verified_blobs.known(blob_digest, after)
    assert not verified_blobs.known(blob_digest, before)  # the old marker is gone


def test_a_change_beside_the_link_forgets_the_blob(
    blob: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    path, descriptor = blob
    blob_digest = str(descriptor["digest"])
    oci._check_blob_file(path.parents[2], descriptor)
    before = os.stat(path)
    time.sleep(0.05)
    os.link(path, tmp_path / "image-blob")
    with path.open("r+b") as f:
        f.write(b"x")
    verified_blobs.linked(blob_digest, before, os.stat(path))
    assert not verified_blobs.known(blob_digest, os.stat(path))
