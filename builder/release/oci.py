"""OCI image layout: assemble an image from the payload layer, write it, and read it back.

``assemble`` plans the whole layout in memory (every blob, ``index.json`` and
``oci-layout``, each addressed by its digest); ``write_layout`` then writes it in
one rename. ``open_layout`` is the reading side used by verify and inspect: it
trusts nothing it has not hashed.

Spec: https://github.com/opencontainers/image-spec (image-layout.md, manifest.md,
config.md, annotations.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from builder.core.canonical import digest
from builder.core.errors import CheckFailed, InputError, StateError
from builder.core.fsio import atomic_file, fsync_dir, sync_all
from builder.core.record import field, record
from builder.release import verified_blobs
from builder.release.layer import Layer

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "org.opencontainers.image.created"
BASE_DIGEST = "org.opencontainers.image.base.digest"
CREATED_BY = "breakglass build"
OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}

# A tag as registries and `skopeo oci:DIR:TAG` accept it (no ':' or '/').
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@record
class Layout:
    """A planned OCI layout: every file by its path relative to the layout root."""

    files: dict[str, bytes] = field(repr=False)
    manifest_digest: str
    config_digest: str
    tag: str
    # base blobs, already checked against their digests: linked (or copied) from these files
    linked: dict[str, Path] = field(default_factory=dict)


@record
class LoadedImage:
    """One tagged image read from a layout, every blob checked against its descriptor."""

    manifest_digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    layers: list[bytes] = field(repr=False)  # empty when opened with load_layers=False
    layer_descriptors: list[dict[str, Any]]
    layer_files: list[Path] = field(default_factory=list)


def encode(document: Any) -> bytes:
    """Return the deterministic JSON bytes of ``document``: sorted keys, compact, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(epoch: int) -> str:
    """Return ``epoch`` as an RFC 3339 UTC timestamp with a ``Z`` suffix."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def assemble(
    layer: Layer,
    *,
    tag: str,
    source_date_epoch: int,
    base: Path | None = None,
    base_tag: str | None = None,
    base_image: LoadedImage | None = None,
    layer_file: Path | None = None,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    architecture: str | None = None,
) -> Layout:
    """Plan an OCI layout holding one image, tagged ``tag``, whose top layer is ``layer``.

    With ``base``, the base image (``base_tag``, or the layout's only image) is read and
    every one of its blobs verified; its layers and config come first. ``base_image``
    is a base already opened (with ``open_layout``, checked): its layer blobs are
    linked from their files rather than read. ``layer_file`` holds ``layer``'s blob
    when it was packed into a file (``layer.blob`` is then empty). The architecture
    is the base's, else ``architecture``, else amd64 (the payload itself is
    architecture-independent; pinning it keeps builds on any runner identical).
    Raises InputError for a bad tag, epoch or annotation, or a missing base;
    CheckFailed when a base blob does not match its digest or the base is malformed.
    """
    if not _TAG.fullmatch(tag):
        raise InputError(f"image tag {tag!r} is not a valid tag")
    if source_date_epoch < 0:
        raise InputError(f"source date epoch must not be negative: {source_date_epoch}")
    _check_strings("annotation", annotations or {})
    _check_strings("label", labels or {})
    created = rfc3339(source_date_epoch)
    files: dict[str, bytes] = {}
    linked: dict[str, Path] = {}

    if base_image is None and base is not None:
        base_image = open_layout(base, base_tag)
    if base_image is not None:
        diff_ids = (base_image.config.get("rootfs") or {}).get("diff_ids")
        if not isinstance(diff_ids, list) or len(diff_ids) != len(base_image.layer_files):
            raise CheckFailed(f"base {base}: config diff_ids do not match its layers")
        config = json.loads(encode(base_image.config))  # a deep copy we may change
        layer_descriptors = [dict(d) for d in base_image.layer_descriptors]
        if base_image.layers:
            for d, blob in zip(layer_descriptors, base_image.layers, strict=True):
                files[_blob_path(d["digest"])] = blob
        else:
            for d, path in zip(layer_descriptors, base_image.layer_files, strict=True):
                linked[_blob_path(d["digest"])] = path
    else:
        architecture = architecture or "amd64"
        config = {"architecture": architecture, "os": "linux", "config": {}}
        layer_descriptors, diff_ids = [], []

    if architecture and config.get("architecture") != architecture:
        raise InputError(f"base {base} is {config.get('architecture')}, not {architecture}")
    history, runtime = config.get("history") or [], config.get("config") or {}
    if not isinstance(history, list) or not isinstance(runtime, dict):
        raise CheckFailed(f"base {base}: config history or runtime config is malformed")
    config["created"] = created
    config["rootfs"] = {"type": "layers", "diff_ids": [*(diff_ids or []), layer.diff_id]}
    config["history"] = [*history, {"created": created, "created_by": CREATED_BY}]
    if labels:
        runtime["Labels"] = {**(runtime.get("Labels") or {}), **labels}
    config["config"] = runtime

    config_bytes = encode(config)
    files[_blob_path(digest(config_bytes))] = config_bytes
    if layer_file is not None:
        linked[_blob_path(layer.digest)] = layer_file
    else:
        files[_blob_path(layer.digest)] = layer.blob
    layer_descriptors.append(
        {"mediaType": MEDIA_LAYER_GZIP, "digest": layer.digest, "size": layer.size}
    )

    manifest_annotations = {CREATED: created}
    if base_image is not None:
        manifest_annotations[BASE_DIGEST] = base_image.manifest_digest
    manifest_annotations.update(annotations or {})
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {
            "mediaType": MEDIA_CONFIG,
            "digest": digest(config_bytes),
            "size": len(config_bytes),
        },
        "layers": layer_descriptors,
        "annotations": manifest_annotations,
    }
    manifest_bytes = encode(manifest)
    manifest_digest = digest(manifest_bytes)
    files[_blob_path(manifest_digest)] = manifest_bytes

    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "annotations": {REF_NAME: tag},
            }
        ],
    }
    files["index.json"] = encode(index)
    files["oci-layout"] = encode(OCI_LAYOUT)
    return Layout(
        files=files,
        manifest_digest=manifest_digest,
        config_digest=digest(config_bytes),
        tag=tag,
        linked={k: v for k, v in linked.items() if k not in files},
    )


def write_layout(layout: Layout, dest: Path) -> None:
    """Write ``layout`` to the new directory ``dest``: all of it or, on any failure, nothing.

    Files are written and synced in a temporary sibling directory that is then renamed
    into place. Modes are set explicitly (0755 directories, 0644 files), not by the umask.
    Base blobs (``layout.linked``) are hard links to the base's files where the
    filesystem allows (no copy, no rewrite: blobs are immutable by their digest), and
    copies otherwise.
    Raises StateError if ``dest`` already exists: whether to replace it is the caller's call.
    """
    if dest.exists() or dest.is_symlink():
        raise StateError(f"{dest} already exists; refusing to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    try:
        # An image layout is public content, readable like any registry blob.
        os.chmod(tmp, 0o755)  # noqa: S103
        sync_all(write_layout_files(layout, tmp))
        try:
            os.rename(tmp, dest)
        except OSError as e:
            raise StateError(f"{dest} already exists; refusing to overwrite it") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(dest.parent)


def write_layout_files(layout: Layout, root: Path) -> list[Path]:
    """Write ``layout``'s files into the existing empty directory ``root``, unsynced; every
    file and directory written (``root`` included), for the caller to sync before it
    publishes them (``builder.core.fsio.sync_all``)."""
    made = [root]
    for rel in sorted({*layout.files, *layout.linked}):
        target = root / rel
        for d in reversed(target.relative_to(root).parents[:-1]):
            if root / d not in made:
                os.mkdir(root / d)
                os.chmod(root / d, 0o755)  # noqa: S103
                made.append(root / d)
        if rel in layout.linked:
            source = layout.linked[rel]
            before = os.stat(source)
            _link_or_copy(source, target)
            if source.name == rel.removeprefix("blobs/sha256/"):  # a base blob
                verified_blobs.linked("sha256:" + source.name, before, os.stat(source))
        else:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o644)
                f.write(layout.files[rel])
        made.append(target)
    return made


_FICLONE = 0x40049409  # linux/fs.h: share the source's extents (btrfs, xfs, ...)


def _link_or_copy(source: Path, target: Path) -> None:
    """Put ``source``'s bytes at ``target`` (0644) without rewriting them where possible.

    A hard link when the source is already 0644 (a link shares its mode); else a
    reflink (the filesystem shares the extents); else an in-kernel copy.
    """
    if os.stat(source).st_mode & 0o7777 == 0o644:
        try:
            os.link(source, target)
            return
        except OSError:
            pass  # another filesystem, or links not allowed: copy
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.fchmod(fd, 0o644)
        with source.open("rb") as src:
            if not _reflink(src.fileno(), fd):
                _copy_range(src.fileno(), fd, os.fstat(src.fileno()).st_size)
    finally:
        os.close(fd)


def _reflink(src: int, dst: int) -> bool:
    import fcntl

    try:
        fcntl.ioctl(dst, _FICLONE, src)
    except OSError:
        return False
    return True


def _copy_range(src: int, dst: int, size: int) -> None:
    copied = 0
    try:
        while copied < size:
            n = os.copy_file_range(src, dst, size - copied)
            if n == 0:
                break
            copied += n
    except OSError:
        # no copy_file_range across these filesystems: plain reads and writes
        os.lseek(src, copied, os.SEEK_SET)
        os.lseek(dst, copied, os.SEEK_SET)
        while chunk := os.read(src, 1 << 20):
            while chunk:
                chunk = chunk[os.write(dst, chunk) :]


def export_tar(layout_dir: Path, tar_path: Path, *, mtime: int = 0) -> None:
    """Write a deterministic tar of the layout at ``layout_dir`` to ``tar_path``, atomically.

    Entries are sorted, owned by 0:0 with no names, 0755/0644, all at ``mtime``, so the
    tar depends only on the layout's content. Raises InputError when ``layout_dir`` is
    not a directory or holds anything other than regular files and directories.
    """
    if not layout_dir.is_dir():
        raise InputError(f"no oci layout directory at {layout_dir}")
    entries: list[tuple[str, Path]] = []
    for root, dirnames, filenames in os.walk(layout_dir):
        for name in [*dirnames, *filenames]:
            p = Path(root) / name
            if p.is_symlink() or not (p.is_dir() or p.is_file()):
                raise InputError(f"{p} is not a regular file or directory")
            entries.append((p.relative_to(layout_dir).as_posix(), p))
    entries.sort(key=lambda e: tuple(e[0].split("/")))

    with (
        atomic_file(tar_path) as out,
        tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as t,
    ):
        for rel, p in entries:
            info = tarfile.TarInfo(rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
            if p.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            else:
                info.mode, info.size = 0o644, p.stat().st_size
                with p.open("rb") as src:
                    t.addfile(info, src)


def open_layout(path: Path, tag: str | None, *, load_layers: bool = True) -> LoadedImage:
    """Read the image tagged ``tag`` (or, with None, the layout's only image) from ``path``.

    Every blob it references (manifest, config, layers) must exist and match the
    descriptor's size and sha256. With ``load_layers=False`` layer blobs are
    hashed as they stream from disk and only their paths are kept
    (``layer_files``), so a large base costs no memory. Raises InputError when ``path`` is not a directory;
    CheckFailed naming the file when a file is missing, malformed or differs from its
    descriptor, or when the tag is absent or ambiguous.
    """
    if not path.is_dir():
        raise InputError(f"no oci layout directory at {path}")
    layout = _read_json(path, "oci-layout")
    if not isinstance(layout, dict) or not isinstance(layout.get("imageLayoutVersion"), str):
        raise CheckFailed(f"{path / 'oci-layout'}: not an oci layout marker")
    index = _read_json(path, "index.json")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
        raise CheckFailed(f"{path / 'index.json'}: no manifests list")
    descriptor = _select(path, manifests, tag)
    if descriptor.get("mediaType") != MEDIA_MANIFEST:
        raise CheckFailed(
            f"{path / 'index.json'}: {tag or 'the image'} is not an oci image manifest "
            f"({descriptor.get('mediaType')})"
        )
    manifest_bytes = _read_blob(path, descriptor)
    manifest = _parse(path, descriptor, manifest_bytes)
    config_descriptor = manifest.get("config")
    layer_descriptors = manifest.get("layers")
    if not isinstance(config_descriptor, dict) or not isinstance(layer_descriptors, list):
        raise CheckFailed(
            f"{path / _blob_path(descriptor['digest'])}: manifest lacks config or layers"
        )
    config = _parse(path, config_descriptor, _read_blob(path, config_descriptor))
    layers, layer_files = [], []
    for d in layer_descriptors:
        if not isinstance(d, dict):
            raise CheckFailed(f"{path / _blob_path(descriptor['digest'])}: bad layer descriptor")
        if load_layers:
            layers.append(_read_blob(path, d))
        else:
            _check_blob_file(path, d)
        layer_files.append(path / _blob_path(d["digest"]))
    return LoadedImage(
        manifest_digest=descriptor["digest"],
        manifest=manifest,
        config=config,
        layers=layers,
        layer_descriptors=layer_descriptors,
        layer_files=layer_files,
    )


def _select(path: Path, manifests: list[dict[str, Any]], tag: str | None) -> dict[str, Any]:
    where = path / "index.json"
    if tag is None:
        if len(manifests) != 1:
            raise CheckFailed(f"{where}: holds {len(manifests)} images; name a tag")
        return manifests[0]
    found = [m for m in manifests if (m.get("annotations") or {}).get(REF_NAME) == tag]
    if not found:
        raise CheckFailed(f"{where}: no image tagged {tag}")
    if len(found) > 1:
        raise CheckFailed(f"{where}: tag {tag} names {len(found)} images")
    return found[0]


def _read_blob(path: Path, descriptor: dict[str, Any]) -> bytes:
    """Return the blob ``descriptor`` names, after checking its size and digest."""
    blob_digest, size = descriptor.get("digest"), descriptor.get("size")
    if not isinstance(blob_digest, str) or not _DIGEST.fullmatch(blob_digest):
        raise CheckFailed(f"{path}: unsupported or malformed digest {blob_digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise CheckFailed(f"{path}: descriptor of {blob_digest} has no valid size")
    file = path / _blob_path(blob_digest)
    try:
        with file.open("rb") as f:
            data = f.read(size + 1)  # never read more than the descriptor allows
    except FileNotFoundError:
        raise CheckFailed(f"{file}: blob missing") from None
    except OSError as e:
        raise CheckFailed(f"{file}: cannot read blob ({e.strerror or e})") from None
    if len(data) != size:
        raise CheckFailed(f"{file}: size differs from its descriptor ({size} bytes)")
    if digest(data) != blob_digest:
        raise CheckFailed(f"{file}: content does not match its digest")
    return data


def _check_blob_file(path: Path, descriptor: dict[str, Any]) -> None:
    """``_read_blob``'s checks, hashing the file as it streams instead of holding it (or not
    at all when this user hashed that very file before: ``verified_blobs``)."""
    import hashlib

    blob_digest, size = descriptor.get("digest"), descriptor.get("size")
    if not isinstance(blob_digest, str) or not _DIGEST.fullmatch(blob_digest):
        raise CheckFailed(f"{path}: unsupported or malformed digest {blob_digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise CheckFailed(f"{path}: descriptor of {blob_digest} has no valid size")
    file = path / _blob_path(blob_digest)
    hasher, seen = hashlib.sha256(), 0
    try:
        with file.open("rb") as f:
            before = os.fstat(f.fileno())
            if before.st_size == size and verified_blobs.known(blob_digest, before):
                return  # hashed before, unchanged since (``verified_blobs`` says why that holds)
            while seen <= size and (chunk := f.read(min(1 << 20, size + 1 - seen))):
                hasher.update(chunk)
                seen += len(chunk)
            after = os.fstat(f.fileno())
    except FileNotFoundError:
        raise CheckFailed(f"{file}: blob missing") from None
    except OSError as e:
        raise CheckFailed(f"{file}: cannot read blob ({e.strerror or e})") from None
    if seen != size:
        raise CheckFailed(f"{file}: size differs from its descriptor ({size} bytes)")
    if "sha256:" + hasher.hexdigest() != blob_digest:
        raise CheckFailed(f"{file}: content does not match its digest")
    verified_blobs.remember(blob_digest, before, after)


def _read_json(path: Path, name: str) -> Any:
    file = path / name
    try:
        return json.loads(file.read_bytes())
    except FileNotFoundError:
        raise CheckFailed(f"{file}: missing") from None
    except (ValueError, UnicodeDecodeError):
        raise CheckFailed(f"{file}: malformed json") from None
    except OSError as e:
        raise CheckFailed(f"{file}: cannot read ({e.strerror or e})") from None


def _parse(path: Path, descriptor: dict[str, Any], data: bytes) -> dict[str, Any]:
    file = path / _blob_path(descriptor["digest"])
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise CheckFailed(f"{file}: malformed json") from None
    if not isinstance(document, dict):
        raise CheckFailed(f"{file}: not a json object")
    return document


def _blob_path(blob_digest: str) -> str:
    algorithm, _, hex_digest = blob_digest.partition(":")
    return f"blobs/{algorithm}/{hex_digest}"


def _check_strings(kind: str, mapping: Mapping[str, str]) -> None:
    for key, value in mapping.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise InputError(f"{kind} {key!r} must map a non-empty string to a string")
