"""Verify: check a built image end to end, as a consumer who trusts only the signers file.

Signature over the manifest, every blob of the OCI layout, the payload layer
against the manifest's file digests (nothing missing, nothing extra, same
modes and owners), the in-image manifest against the signed one, the sealed
bundle against its digest and the policy. Fails closed, naming what differs.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

from builder.approval.quorum import fewest
from builder.core import canonical, sshsig
from builder.core.errors import CheckFailed, InputError
from builder.core.payload import BUNDLE_JSON_PATH, BUNDLE_PATH, MANIFEST_PATH
from builder.release.build import MANIFEST_NAME, SIGNATURE_NAME
from builder.release.bundle import SealedBundle
from builder.release.manifest import Manifest


@dataclass(frozen=True)
class Verified:
    manifest: Manifest
    signer: str
    image_digest: str
    files_checked: int


def read_manifest(image_dir: Path) -> Manifest:
    path = image_dir / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(
            "no break-glass manifest here; is this a built image?", where=str(path)
        ) from None
    return Manifest.from_bytes(raw, str(path))


def verify_image(image_dir: Path, allowed_signers: Path) -> Verified:
    """Check everything; return what was verified. Raises CheckFailed naming the first mismatch."""
    from builder.release import layer, oci

    try:
        signers = allowed_signers.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(
            f"cannot read allowed signers ({e.strerror})", where=str(allowed_signers)
        ) from None
    sig_path = image_dir / SIGNATURE_NAME
    raw = (image_dir / MANIFEST_NAME).read_bytes() if (image_dir / MANIFEST_NAME).exists() else b""
    if not sig_path.exists():
        raise CheckFailed(f"{sig_path}: image is not signed")
    try:
        signer = sshsig.verify_allowed_signers(
            raw,
            sig_path.read_text(encoding="ascii", errors="replace"),
            signers,
            sshsig.MANIFEST_NAMESPACE,
        )
    except CheckFailed:
        raise CheckFailed(
            f"{sig_path}: manifest signature does not verify against {allowed_signers}"
        ) from None
    manifest = read_manifest(image_dir)
    _check_policy(manifest)
    if manifest.doc["provenance"].get("backend") == "packer":
        return _verify_packer(image_dir, manifest, signer)

    image = oci.open_layout(image_dir / "oci", manifest.version)
    if (
        image.manifest.get("annotations", {}).get("dev.breakglass.manifest.digest")
        != manifest.digest
    ):
        raise CheckFailed("the OCI image does not name this manifest's digest")
    diff_ids = image.config.get("rootfs", {}).get("diff_ids", [])
    top = image.layers[-1]
    entries = layer.read_layer(top, name=image.layer_descriptors[-1]["digest"])
    if not diff_ids or diff_ids[-1] != canonical.digest(_gunzip(top)):
        raise CheckFailed("the payload layer does not match the config's diff_id")

    inside = entries.get(MANIFEST_PATH)
    if inside is None or inside.data != manifest.raw:
        raise CheckFailed(f"{MANIFEST_PATH} in the image differs from the signed manifest")
    expected = manifest.files
    for path, want in sorted(expected.items()):
        entry = entries.get(path)
        if entry is None or entry.type != "file":
            raise CheckFailed(f"{path}: missing from the payload layer")
        if canonical.digest(entry.data) != want["digest"]:
            raise CheckFailed(f"{path}: content differs from the manifest digest")
        if (entry.mode, entry.uid, entry.gid) != (want["mode"], want["uid"], want["gid"]):
            raise CheckFailed(f"{path}: mode or owner differs from the manifest")
    extra = sorted(
        p
        for p, e in entries.items()
        if e.type == "file" and p not in expected and p != MANIFEST_PATH
    )
    if extra:
        raise CheckFailed(f"{extra[0]}: file in the payload layer that the manifest does not list")

    _check_bundle(
        manifest,
        entries[BUNDLE_PATH].data if BUNDLE_PATH in entries else b"",
        entries[BUNDLE_JSON_PATH].data if BUNDLE_JSON_PATH in entries else None,
    )
    return Verified(manifest, signer, image.manifest_digest, len(expected) + 1)


def _verify_packer(image_dir: Path, manifest: Manifest, signer: str) -> Verified:
    """A Packer build's images live in a cloud or a qcow2 file; what we can check here is that
    the signed manifest names exactly the artifacts Packer's own manifest recorded."""
    from builder.vm.packer_build import MANIFEST_NAME as PACKER_MANIFEST
    from builder.vm.packer_build import read_artifact_ids

    path = image_dir / PACKER_MANIFEST
    if not path.exists():
        raise CheckFailed(f"{path}: packer manifest is missing")
    ids = read_artifact_ids(path)
    if ids != manifest.doc["provenance"]["artifacts"]:
        raise CheckFailed(f"{path}: artifact ids differ from the signed manifest")
    disks = manifest.doc["provenance"].get("disks", [])
    for disk in disks:
        _check_disk(image_dir, disk)
    names = ",".join(ids) if not disks else ",".join(d["digest"] for d in disks)
    return Verified(manifest, signer, names, 0)


def _check_disk(image_dir: Path, disk: object) -> None:
    """A disk the signed manifest names must be beside it, inside the image dir, with its digest."""
    from builder.vm.disk import digest_file

    if not isinstance(disk, dict) or not isinstance(disk.get("file"), str):
        raise CheckFailed("the signed manifest names a disk without a file")
    name = disk["file"]
    if "/" in name or name in ("", ".", ".."):
        raise CheckFailed(f"the signed manifest names a disk outside the image dir: {name!r}")
    path = image_dir / name
    if not path.is_file() or path.is_symlink():
        raise CheckFailed(f"{path}: disk named by the signed manifest is missing")
    if digest_file(path) != disk.get("digest"):
        raise CheckFailed(f"{path}: disk differs from the digest in the signed manifest")


def _gunzip(blob: bytes) -> bytes:
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error):
        raise CheckFailed("the payload layer is not valid gzip") from None


def _check_bundle(manifest: Manifest, data: bytes, json_copy: bytes | None) -> None:
    sealed = manifest.doc["sealed_bundle"]
    if canonical.digest(data) != sealed["digest"]:
        raise CheckFailed(f"{BUNDLE_PATH}: sealed bundle differs from the manifest's digest")
    try:
        bundle = SealedBundle.from_bytes(data, BUNDLE_PATH)
    except InputError as e:
        raise CheckFailed(e.message) from None
    # the host reads the JSON copy: it must say exactly what the committed YAML says
    if json_copy is not None and json_copy != canonical.dumps(bundle.to_dict()):
        raise CheckFailed(f"{BUNDLE_JSON_PATH}: differs from {BUNDLE_PATH}")
    approvers = {a["name"] for a in manifest.policy["approvers"]}
    for scope in manifest.scopes:
        sealed_scope = next((s for s in bundle.scopes if s.name == scope["name"]), None)
        if sealed_scope is None:
            raise CheckFailed(f"scope '{scope['name']}' is missing from the sealed bundle")
        if sealed_scope.unseal_recipient != scope["unseal_recipient"]:
            raise CheckFailed(f"scope '{scope['name']}': unseal recipient differs from the bundle")
        if set(sealed_scope.shares) - approvers:
            raise CheckFailed(
                f"scope '{scope['name']}': a share is sealed to someone who is not an approver"
            )


def _check_policy(manifest: Manifest) -> None:
    policy = manifest.policy
    groups = policy["groups"]
    if (
        fewest(policy["group_threshold"], (g["threshold"] for g in groups)) < 2
        and not policy["allow_single_approver"]
    ):
        raise CheckFailed("policy lets a single approver unseal (two-person rule)")
    for scope in manifest.scopes:
        if scope["max_ttl_seconds"] > policy["max_ttl_seconds"]:
            raise CheckFailed(f"scope '{scope['name']}': max_ttl exceeds the policy cap")
