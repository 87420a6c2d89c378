"""The payload layer: deterministic bytes, pinned metadata, and a reader that fails closed."""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.core.canonical import digest
from builder.core.errors import CheckFailed, InputError
from builder.core.payload import PayloadFile
from builder.release.layer import Layer, pack, read_layer

EPOCH = 1_700_000_000
FILES = (
    PayloadFile("etc/ssh/sshd_config.d/50-breakglass.conf", b"AuthorizedKeysCommand x\n"),
    PayloadFile("etc/sudoers.d/breakglass", b"x\n", mode=0o440),
    PayloadFile("etc/breakglass-a", b"sorts between etc and etc/...\n"),
)


def _members(blob: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:") as t:
        return t.getmembers()


def test_layer_metadata_is_pinned() -> None:
    layer = pack(FILES, source_date_epoch=EPOCH, dirs={"run/breakglass": 0o700})
    members = _members(layer.blob)
    assert [m.name for m in members] == [
        "etc",
        "etc/ssh",
        "etc/ssh/sshd_config.d",
        "etc/sudoers.d",
        "run",
        "run/breakglass",
        "etc/breakglass-a",
        "etc/ssh/sshd_config.d/50-breakglass.conf",
        "etc/sudoers.d/breakglass",
    ]
    assert {(m.mtime, m.uname, m.gname, m.uid, m.gid) for m in members} == {(EPOCH, "", "", 0, 0)}
    assert {m.name: m.mode for m in members if m.isdir()}["run/breakglass"] == 0o700
    assert all(not m.pax_headers for m in members)
    # gzip header: no name, mtime 0, fixed flags and OS byte; the body is zlib at level 6,
    # as python's gzip module writes it at that level
    assert layer.blob[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    tar = gzip.decompress(layer.blob)
    assert (
        layer.blob == gzip.compress(tar, compresslevel=6, mtime=0)[:9] + b"\xff" + layer.blob[10:]
    )
    assert layer.digest == digest(layer.blob)
    assert layer.diff_id == digest(gzip.decompress(layer.blob))
    assert layer.size == len(layer.blob)


def test_layer_is_independent_of_input_order() -> None:
    forward = pack(FILES, source_date_epoch=EPOCH)
    backward = pack(tuple(reversed(FILES)), source_date_epoch=EPOCH)
    assert forward == backward
    assert pack(FILES, source_date_epoch=EPOCH + 1).digest != forward.digest


@pytest.mark.parametrize(
    ("files", "dirs", "message"),
    [
        ((PayloadFile("a/b", b""), PayloadFile("a/b", b"")), {}, "lists a/b twice"),
        ((PayloadFile("a/b", b""), PayloadFile("a", b"")), {}, "both a file and a directory"),
        ((PayloadFile("a", b""),), {"a": 0o700}, "both a file and a directory"),
        ((PayloadFile("a//b", b""),), {}, "clean relative path"),
        ((PayloadFile("a/./b", b""),), {}, "clean relative path"),
        ((PayloadFile("etc/.wh.passwd", b""),), {}, "whiteout"),
        ((PayloadFile("a", b"", mode=0o10000),), {}, "out of range"),
        ((), {"../x": 0o700}, "clean relative path"),
    ],
)
def test_bad_payload_is_input_error(
    files: tuple[PayloadFile, ...], dirs: dict[str, int], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        pack(files, source_date_epoch=EPOCH, dirs=dirs)


def test_corrupt_blobs_raise_check_failed_naming_the_blob() -> None:
    layer = pack(FILES, source_date_epoch=EPOCH)
    flipped = bytearray(layer.blob)
    flipped[len(flipped) // 2] ^= 0xFF
    with pytest.raises(CheckFailed, match="layer payload-layer is not valid gzip"):
        read_layer(bytes(flipped), name="payload-layer")
    with pytest.raises(CheckFailed, match=digest(layer.blob[:-9])):
        read_layer(layer.blob[:-9])
    not_tar = gzip.compress(b"\x01" * 1024, mtime=0)
    with pytest.raises(CheckFailed, match="is not a valid tar"):
        read_layer(not_tar, name="x")
    bad_header = bytearray(gzip.decompress(layer.blob))
    bad_header[2 * 512 + 3] ^= 0x01  # third entry's name: its header checksum no longer holds
    with pytest.raises(CheckFailed, match="bad or truncated header at offset 1024"):
        read_layer(zlib.compress(bytes(bad_header), wbits=31), name="x")
    truncated_tar = gzip.decompress(layer.blob)[:700]
    with pytest.raises(CheckFailed, match="is not a valid tar"):
        read_layer(zlib.compress(truncated_tar, wbits=31), name="x")


_segment = st.text(alphabet="abcxyz-_.0", min_size=1, max_size=6).filter(
    lambda s: s not in (".", "..") and not s.startswith(".wh.")
)
_paths = st.lists(_segment, min_size=1, max_size=3).map("/".join)


@st.composite
def _payloads(draw: st.DrawFn) -> tuple[PayloadFile, ...]:
    paths = draw(st.lists(_paths, max_size=8, unique=True))
    # a path cannot be both a file and the parent of another file
    files = [p for p in paths if not any(q.startswith(p + "/") for q in paths)]
    return tuple(
        PayloadFile(
            p,
            draw(st.binary(max_size=64)),
            mode=draw(st.integers(0, 0o7777)),
            uid=draw(st.integers(0, 70000)),
            gid=draw(st.integers(0, 70000)),
        )
        for p in files
    )


@settings(max_examples=60, deadline=None)
@given(_payloads())
def test_pack_read_round_trip(files: tuple[PayloadFile, ...]) -> None:
    entries = read_layer(pack(files, source_date_epoch=EPOCH).blob)
    for f in files:
        e = entries[f.path]
        assert (e.type, e.data, e.mode, e.uid, e.gid) == ("file", f.data, f.mode, f.uid, f.gid)
    dirs = {p for p, e in entries.items() if e.type == "dir"}
    assert dirs == {
        "/".join(f.path.split("/")[:i]) for f in files for i in range(1, f.path.count("/") + 1)
    }
    assert all(entries[d].mode == 0o755 for d in dirs)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_give_a_clean_error(data: bytes) -> None:
    try:
        read_layer(data, name="fuzz")
    except CheckFailed as e:
        assert "fuzz" in str(e)


def test_a_cached_segment_gives_the_same_blob_from_the_cache_and_without_it(
    tmp_path: Path,
) -> None:
    import hashlib
    import os as _os

    cache = tmp_path / "cache"
    runtime = tuple(
        PayloadFile(f"usr/lib/rt/m{i:03}.py", _os.urandom(50) + b"x = 1\n" * (i * 40))
        for i in range(120)
    )
    others = (
        PayloadFile("etc/a.conf", b"a" * 30000),
        PayloadFile("var/z.bin", _os.urandom(70000)),
    )

    def packed(extra: bytes = b"") -> Layer:
        files = (*runtime, *others, PayloadFile("etc/extra", extra))
        return pack(tuple(sorted(files)), source_date_epoch=7, cached=("usr/lib/rt/", cache))

    cold = packed()
    (entry,) = cache.iterdir()
    warm = packed()
    assert warm == cold
    plain = pack(tuple(sorted((*runtime, *others, PayloadFile("etc/extra", b"")))),
                       source_date_epoch=7)  # fmt: skip
    # the same tar inside, whatever the segments
    assert cold.diff_id == plain.diff_id
    assert "sha256:" + hashlib.sha256(gzip.decompress(cold.blob)).hexdigest() == cold.diff_id
    # other data before the segment: the cached bytes serve it too, as compressing would
    other = packed(b"different " * 5000)
    entry.unlink()
    assert packed(b"different " * 5000) == other
    # a damaged entry is not used
    entry.write_bytes(entry.read_bytes()[:-3] + b"xyz")
    assert packed() == cold
    entry.write_bytes(b"")
    assert packed() == cold
