"""A rebuild of an unchanged version stops before packing; base blobs are linked, not rewritten."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from builder.core.errors import CheckFailed, InputError
from builder.core.payload import PayloadFile
from builder.release import build, layer, oci
from builder.release.spec import load_spec
from tests.conftest import ROOT


def _tiny_base(dest: Path) -> None:
    files = (
        PayloadFile("etc/group", b"root:x:0:\nshadow:x:42:\n"),
        PayloadFile("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
        PayloadFile("etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o640, gid=42),
        PayloadFile("usr/share/big.bin", os.urandom(1 << 16)),
    )
    packed = layer.pack(files, source_date_epoch=0)
    oci.write_layout(oci.assemble(packed, tag="tiny", source_date_epoch=0), dest)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("images", "templates"):
        shutil.copytree(ROOT / name, tmp_path / name)
    _tiny_base(tmp_path / "base-oci")
    spec = tmp_path / "images/example.yaml"
    spec.write_text(spec.read_text() + "base: ../base-oci:tiny\n")
    return spec


def test_unchanged_rebuild_stops_before_packing(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "dist"
    first = build.build_oci(build.plan(load_spec(project)), out, None)
    assert first.changed

    def no_packing(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("packed again")

    monkeypatch.setattr(layer, "pack", no_packing)
    again = build.build_oci(build.plan(load_spec(project)), out, None)
    assert not again.changed
    assert (again.image_digest, again.manifest_digest) == (
        first.image_digest,
        first.manifest_digest,
    )
    # a different plan for the same version still reaches the full comparison and is refused
    template = tmp_path / "templates/deploy-agent/normal.toml.j2"
    template.write_text(template.read_text() + "# changed\n")
    monkeypatch.undo()
    with pytest.raises(InputError, match="already exists with different content"):
        build.build_oci(build.plan(load_spec(project)), out, None)


def test_base_blobs_are_hard_links_to_the_base(project: Path, tmp_path: Path) -> None:
    result = build.build_oci(build.plan(load_spec(project)), tmp_path / "dist", None)
    base = oci.open_layout(tmp_path / "base-oci", "tiny", load_layers=False)
    for source in base.layer_files:
        ours = result.image_dir / "oci/blobs/sha256" / source.name
        assert os.path.samefile(ours, source)
        assert ours.stat().st_mode & 0o777 == 0o644
    # and the image still reads back, every blob checked against its digest
    assert oci.open_layout(result.image_dir / "oci", load_spec(project).version).layers


def test_a_base_layer_is_read_for_the_wanted_entries_only(tmp_path: Path) -> None:
    _tiny_base(tmp_path / "base")
    base = oci.open_layout(tmp_path / "base", "tiny", load_layers=False)
    assert base.layers == []
    found = layer.read_files(base.layer_files[0], {"etc/passwd", "etc/nothing"}, name="base")
    assert found == {"etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n"}
    # a damaged blob is refused when the layout is opened, before any entry is read
    blob = base.layer_files[0]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 1
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    with pytest.raises(CheckFailed, match="does not match its digest"):
        oci.open_layout(tmp_path / "base", "tiny", load_layers=False)


def test_a_layer_packed_into_a_file_from_sources_equals_the_in_memory_one(tmp_path: Path) -> None:
    content = os.urandom(300_000)
    source = tmp_path / "big.bin"
    source.write_bytes(content)
    small = PayloadFile("etc/a", b"a\n")
    in_memory = layer.pack((small, PayloadFile("usr/big.bin", content)), source_date_epoch=7)
    streamed_file = PayloadFile.from_source("usr/big.bin", source)
    assert streamed_file.digest == PayloadFile("usr/big.bin", content).digest
    with (tmp_path / "blob").open("wb") as out:
        streamed = layer.pack((small, streamed_file), source_date_epoch=7, blob_file=out)
    assert streamed.blob == b""
    assert (tmp_path / "blob").read_bytes() == in_memory.blob
    assert (streamed.digest, streamed.diff_id, streamed.size) == (
        in_memory.digest,
        in_memory.diff_id,
        in_memory.size,
    )


def test_base_blobs_another_mode_are_copied_at_0644(project: Path, tmp_path: Path) -> None:
    # umoci writes its blobs 0600: a link would carry that mode into our layout
    blobs = tmp_path / "base-oci/blobs/sha256"
    for blob in blobs.iterdir():
        blob.chmod(0o600)
    result = build.build_oci(build.plan(load_spec(project)), tmp_path / "dist", None)
    for source in blobs.iterdir():
        ours = result.image_dir / "oci/blobs/sha256" / source.name
        if ours.exists():
            assert not os.path.samefile(ours, source)
            assert ours.stat().st_mode & 0o777 == 0o644
            assert ours.read_bytes() == source.read_bytes()
    assert oci.open_layout(result.image_dir / "oci", load_spec(project).version).layers
