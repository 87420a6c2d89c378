"""``host install``: unpack a built image's payload into a new host root.

On a real host the image itself is the root. On a dev machine, in a test or
in a walkthrough, this gives the host commands (``--root DIR``) what they
read: the signed manifest, the sealed bundle, the rendered configs and the
empty runtime and state directories, exactly as the payload layer carries
them. Only the payload layer is unpacked: an image built on a base OS keeps
its base layers (use ``umoci unpack`` for a full root file system).

Plan, then do: the layout's blobs are hashed, the payload layer is read and
every path is checked before anything is written; the root appears in one
rename, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.core.errors import CheckFailed, InputError

if TYPE_CHECKING:
    from builder.release.layer import LayerEntry


@dataclass(frozen=True)
class Installed:
    root: Path
    name: str
    version: str
    files: int
    verified_by: str | None  # the signer, when the signature was checked


def install(image_dir: Path, root: Path, allowed_signers: Path | None) -> Installed:
    """Unpack the payload of the image in ``image_dir`` (``dist/NAME/VERSION``) into ``root``.

    With ``allowed_signers`` the whole image is verified first (signature,
    every blob, every payload digest). Without it, the blobs are still checked
    against their digests and the image's copy of the manifest must equal the
    one beside the image. ``root`` must not exist or be an empty directory.
    Raises InputError for a missing or non-OCI image or an occupied root,
    CheckFailed when the image does not verify.
    """
    from builder.core.payload import MANIFEST_PATH
    from builder.release import layer, oci
    from builder.release.verify import read_manifest, verify_image

    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InputError(
            "the host root already exists and is not empty",
            where=str(root),
            hint="install into a new directory; a root holds one host's state",
        )
    signer = None
    if allowed_signers is not None:
        signer = verify_image(image_dir, allowed_signers).signer
    manifest = read_manifest(image_dir)
    if manifest.doc.get("provenance", {}).get("backend") == "packer":
        raise InputError("a Packer image has no OCI layout to install from", where=str(image_dir))
    if not (image_dir / "oci" / "index.json").is_file():
        raise InputError("no OCI layout in this image directory", where=str(image_dir / "oci"))
    image = oci.open_layout(image_dir / "oci", manifest.version)
    entries = layer.read_layer(image.layers[-1], name=image.layer_descriptors[-1]["digest"])
    inside = entries.get(MANIFEST_PATH)
    if inside is None or inside.data != manifest.raw:
        raise CheckFailed(f"{MANIFEST_PATH} in the image differs from the manifest beside it")
    for path, entry in entries.items():
        _check_entry(path, entry.type)

    from builder.core.fsio import new_directory

    try:
        # rename(2) replaces an empty directory, so an empty root is kept if this fails
        with new_directory(root) as staging:
            count = _write(staging, entries)
    except OSError as e:
        raise InputError(
            f"cannot write the host root ({e.strerror})", where=str(e.filename or root)
        ) from None
    return Installed(root, manifest.name, manifest.version, count, signer)


def _write(staging: Path, entries: dict[str, LayerEntry]) -> int:
    """Write every entry under ``staging``; return the number of files."""
    count = 0
    as_root = os.geteuid() == 0
    # parents before children; directory modes last, so a read-only one cannot stop a write
    ordered = sorted(entries.items(), key=lambda item: item[0].split("/"))
    for path, entry in ordered:
        target = staging / path
        if entry.type == "dir":
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(entry.data)
        count += 1
    for path, entry in reversed(ordered):
        target = staging / path
        if as_root:
            # the emergency account's home belongs to it; unprivileged, files stay ours
            os.chown(target, entry.uid, entry.gid, follow_symlinks=False)
        os.chmod(target, entry.mode, follow_symlinks=False)
    return count


def _check_entry(path: str, kind: str) -> None:
    """Only clean relative paths of files and directories: a payload has nothing else."""
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise CheckFailed(f"payload path is not a clean relative path: {path!r}")
    if kind not in ("file", "dir"):
        raise CheckFailed(f"payload entry {path!r} is a {kind}; a payload holds files only")
