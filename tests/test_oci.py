"""The OCI backend: our layouts are read by skopeo and umoci, are bit-identical across
machines' directories and umasks, extend a base image, and fail closed when tampered with."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.core.errors import CheckFailed, InputError, StateError
from builder.core.payload import PayloadFile
from builder.release.layer import Layer, pack
from builder.release.oci import Layout, assemble, export_tar, open_layout, write_layout
from tests.conftest import require_tool

EPOCH = 1_700_000_000
CREATED = "2023-11-14T22:13:20Z"
FILES = (
    PayloadFile("etc/breakglass/manifest.json", b'{"format":"breakglass-manifest/1"}\n'),
    PayloadFile("etc/breakglass/sealed.yaml", b"format: breakglass-sealed-bundle/1\n"),
    PayloadFile("etc/sudoers.d/breakglass", b"breakglass ALL=(root) /bin/true\n", mode=0o440),
    PayloadFile("usr/local/bin/hook", b"#!/bin/sh\nexit 0\n", mode=0o755, uid=1000, gid=1000),
)
BASE_CONFIG = ("--config.env", "PATH=/usr/bin:/bin", "--config.cmd", "/bin/sh")
DIRS = {"run/breakglass": 0o700, "var/lib/breakglass": 0o700}


def _layer() -> Layer:
    return pack(FILES, source_date_epoch=EPOCH, dirs=DIRS)


def _build(dest: Path, *, tag: str = "1.0.0", **kwargs: object) -> Layout:
    layout = assemble(_layer(), tag=tag, source_date_epoch=EPOCH, **kwargs)  # type: ignore[arg-type]
    write_layout(layout, dest)
    return layout


def _umoci_unpack(image: str, bundle: Path) -> Path:
    umoci = require_tool("umoci")
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    subprocess.run(
        [umoci, "unpack", *rootless, "--image", image, str(bundle)],
        check=True,
        capture_output=True,
    )
    return bundle / "rootfs"


def _skopeo_inspect(ref: str) -> dict[str, object]:
    skopeo = require_tool("skopeo")
    out = subprocess.run([skopeo, "inspect", ref], check=True, capture_output=True, text=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every path under ``root`` with its permission bits and (for files) content."""
    tree: dict[str, tuple[int, bytes]] = {}
    for p in sorted(root.rglob("*")):
        data = p.read_bytes() if p.is_file() else b""
        tree[p.relative_to(root).as_posix()] = (stat.S_IMODE(p.lstat().st_mode), data)
    return tree


def test_skopeo_inspects_layout_and_exported_tar(tmp_path: Path) -> None:
    layout = _build(tmp_path / "oci", labels={"org.example.team": "sre"})
    layer = _layer()
    for ref in (f"oci:{tmp_path / 'oci'}:1.0.0", f"oci-archive:{tmp_path / 'oci.tar'}:1.0.0"):
        if ref.startswith("oci-archive"):
            export_tar(tmp_path / "oci", tmp_path / "oci.tar")
        info = _skopeo_inspect(ref)
        assert info["Digest"] == layout.manifest_digest
        assert info["Layers"] == [layer.digest]
        assert info["Architecture"] == "amd64"
        assert info["Os"] == "linux"
        assert info["Created"] == CREATED
        assert info["Labels"] == {"org.example.team": "sre"}


def test_umoci_unpacks_payload_with_modes_and_owners(tmp_path: Path) -> None:
    _build(tmp_path / "oci")
    rootfs = _umoci_unpack(f"{tmp_path / 'oci'}:1.0.0", tmp_path / "bundle")
    for f in FILES:
        p = rootfs / f.path
        assert p.read_bytes() == f.data
        assert stat.S_IMODE(p.stat().st_mode) == f.mode
        if os.geteuid() == 0:
            assert (p.stat().st_uid, p.stat().st_gid) == (f.uid, f.gid)
    for d, mode in DIRS.items():
        assert stat.S_IMODE((rootfs / d).stat().st_mode) == mode
    assert stat.S_IMODE((rootfs / "etc/breakglass").stat().st_mode) == 0o755


def test_layouts_are_bit_identical_across_directories_and_umasks(
    tmp_path: Path, umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    trees = []
    for i, mask in enumerate((0o022, 0o077, 0o000)):
        os.umask(mask)
        work = Path(tmp_path, f"run{i}", *["nested"] * i)
        work.mkdir(parents=True)
        monkeypatch.chdir(work)
        _build(work / "oci")
        export_tar(work / "oci", work / "oci.tar")
        trees.append((_tree(work / "oci"), (work / "oci.tar").read_bytes()))
    assert trees[0] == trees[1] == trees[2]
    modes = {mode for mode, _ in trees[0][0].values()}
    assert modes == {0o755, 0o644}
    assert "oci-layout" in trees[0][0] and "index.json" in trees[0][0]


def test_assemble_plans_the_spec_documents(tmp_path: Path) -> None:
    layout = assemble(
        _layer(),
        tag="2.1.0",
        source_date_epoch=EPOCH,
        annotations={"org.opencontainers.image.version": "2.1.0"},
    )
    index = json.loads(layout.files["index.json"])
    assert index["manifests"][0]["annotations"] == {"org.opencontainers.image.ref.name": "2.1.0"}
    assert index["manifests"][0]["digest"] == layout.manifest_digest
    manifest = json.loads(layout.files["blobs/sha256/" + layout.manifest_digest[7:]])
    assert manifest["annotations"] == {
        "org.opencontainers.image.created": CREATED,
        "org.opencontainers.image.version": "2.1.0",
    }
    config = json.loads(layout.files["blobs/sha256/" + layout.config_digest[7:]])
    assert config["rootfs"] == {"type": "layers", "diff_ids": [_layer().diff_id]}
    assert config["history"] == [{"created": CREATED, "created_by": "breakglass build"}]
    assert json.loads(layout.files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    # deterministic encoding: sorted keys, no whitespace
    assert (
        layout.files["index.json"]
        == json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    )


@pytest.mark.parametrize("which", ["manifest", "config", "layer"])
def test_flipped_byte_in_any_blob_is_named(tmp_path: Path, which: str) -> None:
    layout = _build(tmp_path / "oci")
    blob_digest = {
        "manifest": layout.manifest_digest,
        "config": layout.config_digest,
        "layer": _layer().digest,
    }[which]
    blob = tmp_path / "oci" / "blobs" / "sha256" / blob_digest[7:]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(CheckFailed, match=blob_digest[7:]) as e:
        open_layout(tmp_path / "oci", "1.0.0")
    assert "does not match its digest" in str(e.value)


def test_missing_truncated_and_malformed_files_fail_closed(tmp_path: Path) -> None:
    layout = _build(tmp_path / "oci")
    root = tmp_path / "oci"
    layer_file = root / "blobs" / "sha256" / _layer().digest[7:]
    layer_file.write_bytes(layer_file.read_bytes()[:-1])
    with pytest.raises(CheckFailed, match=re.escape(f"{layer_file}: size differs")):
        open_layout(root, "1.0.0")
    layer_file.unlink()
    with pytest.raises(CheckFailed, match=re.escape(f"{layer_file}: blob missing")):
        open_layout(root, "1.0.0")
    with pytest.raises(CheckFailed, match=re.escape("no image tagged 9.9.9")):
        open_layout(root, "9.9.9")
    (root / "index.json").write_bytes(layout.files["index.json"][:-3])
    with pytest.raises(CheckFailed, match=re.escape("index.json: malformed json")):
        open_layout(root, "1.0.0")
    with pytest.raises(InputError, match="no oci layout directory"):
        open_layout(tmp_path / "absent", "1.0.0")


def test_open_layout_returns_the_image(tmp_path: Path) -> None:
    layout = _build(tmp_path / "oci")
    image = open_layout(tmp_path / "oci", "1.0.0")
    assert image.manifest_digest == layout.manifest_digest
    assert image.layers == [_layer().blob]
    assert image.config["created"] == CREATED


def test_write_layout_refuses_existing_and_leaves_nothing_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "oci"
    layout = _build(dest)
    before = _tree(dest)
    with pytest.raises(StateError, match="already exists"):
        write_layout(layout, dest)
    assert _tree(dest) == before

    def disk_full(_: list[Path]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("builder.release.oci.sync_all", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_layout(layout, tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oci"]


def test_bad_tag_and_annotations_are_input_errors() -> None:
    with pytest.raises(InputError, match="not a valid tag"):
        assemble(_layer(), tag="a:b", source_date_epoch=EPOCH)
    with pytest.raises(InputError, match="must map"):
        assemble(_layer(), tag="1", source_date_epoch=EPOCH, annotations={"": "x"})


def _umoci_base(tmp_path: Path) -> Path:
    """A base image made by umoci itself: one layer with a file, an env and a command."""
    umoci = require_tool("umoci")
    base = tmp_path / "base"
    subprocess.run([umoci, "init", "--layout", str(base)], check=True)
    subprocess.run([umoci, "new", "--image", f"{base}:stable"], check=True)
    src = tmp_path / "base-os-release"
    src.write_text("ID=base\n")
    subprocess.run(
        [umoci, "insert", "--image", f"{base}:stable", str(src), "/etc/os-release"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [umoci, "config", "--image", f"{base}:stable", *BASE_CONFIG],
        check=True,
        capture_output=True,
    )
    return base


def test_extends_a_base_image(tmp_path: Path) -> None:
    base = _umoci_base(tmp_path)
    base_image = open_layout(base, "stable")
    layout = _build(tmp_path / "oci", base=base, base_tag="stable")
    image = open_layout(tmp_path / "oci", "1.0.0")
    ours = _layer()
    assert [d["digest"] for d in image.manifest["layers"]] == [
        *(d["digest"] for d in base_image.manifest["layers"]),
        ours.digest,
    ]
    assert image.config["rootfs"]["diff_ids"] == [
        *base_image.config["rootfs"]["diff_ids"],
        ours.diff_id,
    ]
    assert image.config["config"]["Env"] == ["PATH=/usr/bin:/bin"]
    assert image.config["config"]["Cmd"] == ["/bin/sh"]
    assert image.config["history"][-1] == {"created": CREATED, "created_by": "breakglass build"}
    assert len(image.config["history"]) == len(base_image.config.get("history", [])) + 1
    assert image.manifest["annotations"]["org.opencontainers.image.base.digest"] == (
        base_image.manifest_digest
    )
    assert _skopeo_inspect(f"oci:{tmp_path / 'oci'}:1.0.0")["Digest"] == layout.manifest_digest

    rootfs = _umoci_unpack(f"{tmp_path / 'oci'}:1.0.0", tmp_path / "bundle")
    assert (rootfs / "etc/os-release").read_text() == "ID=base\n"
    assert (rootfs / "etc/breakglass/sealed.yaml").read_bytes() == FILES[1].data


def test_extends_our_own_layout_as_base_and_stays_reproducible(tmp_path: Path) -> None:
    base_layer = pack((PayloadFile("etc/base.txt", b"base\n"),), source_date_epoch=EPOCH)
    write_layout(assemble(base_layer, tag="base", source_date_epoch=EPOCH), tmp_path / "base")
    first = assemble(_layer(), tag="1.0.0", source_date_epoch=EPOCH, base=tmp_path / "base")
    second = assemble(_layer(), tag="1.0.0", source_date_epoch=EPOCH, base=tmp_path / "base")
    assert first.files == second.files
    write_layout(first, tmp_path / "oci")
    rootfs = _umoci_unpack(f"{tmp_path / 'oci'}:1.0.0", tmp_path / "bundle")
    assert (rootfs / "etc/base.txt").read_bytes() == b"base\n"
    assert (rootfs / "etc/breakglass/manifest.json").read_bytes() == FILES[0].data


def test_tampered_base_is_refused(tmp_path: Path) -> None:
    base_layer = pack((PayloadFile("etc/base.txt", b"base\n"),), source_date_epoch=EPOCH)
    write_layout(assemble(base_layer, tag="base", source_date_epoch=EPOCH), tmp_path / "base")
    blob = tmp_path / "base" / "blobs" / "sha256" / base_layer.digest[7:]
    blob.write_bytes(blob.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckFailed, match=base_layer.digest[7:]):
        assemble(_layer(), tag="1.0.0", source_date_epoch=EPOCH, base=tmp_path / "base")
    with pytest.raises(CheckFailed, match="no image tagged nope"):
        assemble(
            _layer(), tag="1", source_date_epoch=EPOCH, base=tmp_path / "base", base_tag="nope"
        )


def test_architecture_is_pinned_and_must_agree_with_the_base(tmp_path: Path) -> None:
    arm = assemble(_layer(), tag="1", source_date_epoch=EPOCH, architecture="arm64")
    write_layout(arm, tmp_path / "arm")
    assert open_layout(tmp_path / "arm", "1").config["architecture"] == "arm64"
    with pytest.raises(InputError, match="is arm64, not amd64"):
        assemble(
            _layer(), tag="2", source_date_epoch=EPOCH, base=tmp_path / "arm", architecture="amd64"
        )
