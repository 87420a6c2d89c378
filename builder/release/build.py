"""Build: spec + templates + sealed bundle -> payload -> OCI layout -> signed manifest.

Plan, then do. ``plan`` computes every payload file, its digest and the
manifest in memory without touching the disk; ``build_oci`` packs and signs
that plan and writes it in one rename. The build never decrypts anything:
it reads the sealed bundle as ciphertext and renders templates with public
data only. Same inputs and SOURCE_DATE_EPOCH give bit-identical output, and
an existing version is never overwritten with different content.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder import __version__
from builder.core import canonical, sshsig
from builder.core.errors import InputError
from builder.core.fsio import new_directory, sync_all
from builder.core.payload import (
    BUNDLE_JSON_PATH,
    BUNDLE_PATH,
    MANIFEST_PATH,
    RUNTIME_DIR,
    SSHD_DROPIN_PATH,
    STATE_DIR,
    SUDOERS_PATH,
    SYSTEMD_DIR,
    PayloadFile,
)
from builder.core.record import record
from builder.release.bundle import SealedBundle
from builder.release.manifest import compose
from builder.release.render import render_all
from builder.release.spec import ImageSpec

if TYPE_CHECKING:
    from builder.release.gitsource import Probe
    from builder.release.layer import Layer
    from builder.release.oci import LoadedImage

MANIFEST_NAME = "breakglass-manifest.json"
SIGNATURE_NAME = "breakglass-manifest.json.sig"
RUNTIME_DIRS = {RUNTIME_DIR: 0o700, STATE_DIR: 0o700}
TIMER_WANTS_PATH = f"{SYSTEMD_DIR}/timers.target.d/50-breakglass.conf"
TIMER_WANTS = b"""# breakglass: start the expiry timer at boot (what `systemctl enable` would link).
[Unit]
Wants=breakglass-expire.timer
"""
# /run is a tmpfs a boot empties: systemd-tmpfiles makes the plaintext directory, private,
# at every boot, before anything could write into it with a laxer mode.
TMPFILES_PATH = "etc/tmpfiles.d/breakglass.conf"
TMPFILES = b"d /run/breakglass 0700 root root -\n"


@record
class BuildPlan:
    """Everything an image will hold, computed before anything is written."""

    spec: ImageSpec
    files: tuple[PayloadFile, ...]  # sorted, the manifest included
    dirs: dict[str, int]
    dir_owners: dict[str, tuple[int, int]]
    manifest: bytes
    source_date_epoch: int
    base: Path | None
    base_tag: str | None
    base_image: LoadedImage | None = None  # opened and checked once, while planning

    @property
    def manifest_digest(self) -> str:
        return canonical.digest(self.manifest)


@record
class BuildResult:
    image_dir: Path
    manifest_digest: str
    image_digest: str
    signed: bool
    changed: bool


def load_bundle(spec: ImageSpec) -> tuple[SealedBundle, bytes]:
    """Read the sealed bundle beside the spec and check it was sealed for this spec as it is now."""
    path = spec.sealed_path
    from builder.core import bounded

    try:
        data = bounded.read(path, "sealed bundle")
    except FileNotFoundError:
        raise InputError(
            "no sealed bundle for this spec",
            where=str(path),
            hint=f"run `breakglass seal {spec.path}`",
        ) from None
    except OSError as e:
        raise InputError(f"cannot read the sealed bundle ({e.strerror})", where=str(path)) from None
    bundle = SealedBundle.from_bytes(data, str(path))
    if bundle.image != spec.name or bundle.policy_digest != spec.policy_digest:
        raise InputError(
            "sealed bundle is stale: approvers, policy, scopes or credentials changed since it was sealed",
            where=str(path),
            hint=f"re-seal with `breakglass seal --rotate {spec.path}`",
        )
    _check_matches_spec(bundle, spec, str(path))
    return bundle, data


def _check_matches_spec(bundle: SealedBundle, spec: ImageSpec, where: str) -> None:
    """The policy digest says what the bundle was sealed for; check the bundle holds just that."""
    hint = f"re-seal with `breakglass seal --rotate {spec.path}`"
    if sorted(s.name for s in bundle.scopes) != sorted(s.name for s in spec.scopes):
        raise InputError("sealed bundle scopes differ from the spec's", where=where, hint=hint)
    members = {m for g in spec.policy.groups for m in g.members}
    for scope in bundle.scopes:
        wanted = sorted(c.name for c in spec.credentials_of(scope.name))
        if sorted(c.name for c in scope.credentials) != wanted:
            raise InputError(
                f"sealed scope '{scope.name}' holds other credentials than the spec names",
                where=where,
                hint=hint,
            )
        if set(scope.shares) != members:
            raise InputError(
                f"sealed scope '{scope.name}' has shares for other approvers than the spec's",
                where=where,
                hint=hint,
            )


def source_date_epoch(bundle: SealedBundle) -> int:
    """SOURCE_DATE_EPOCH if set, else the bundle's seal time: both come from committed inputs."""
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env is not None:
        if not env.isdigit():
            raise InputError(f"SOURCE_DATE_EPOCH must be a whole number of seconds, got {env!r}")
        return int(env)
    from builder.core.utctime import canonical_time

    # the written form without loading _strptime; strptime reads anything else as before
    created = canonical_time(bundle.created) or dt.datetime.strptime(
        bundle.created, "%Y-%m-%dT%H:%M:%SZ"
    ).replace(tzinfo=dt.UTC)
    return int(created.timestamp())


def plan(
    spec: ImageSpec,
    *,
    backend: str = "oci",
    artifacts: tuple[str, ...] = (),
    extra_files: tuple[PayloadFile, ...] = (),
    drill: bool = False,
) -> BuildPlan:
    """Compute the payload and the manifest of ``spec``. Raises InputError; writes nothing.

    ``drill`` marks the manifest ``image.drill: true`` (signed like the rest): only such an
    image honours the drills' unsafe frozen clock. No spec field sets it; the drill does.
    """
    bundle, bundle_bytes = load_bundle(spec)
    rendered = render_all(spec, bundle).files
    system = {
        "sshd": (SSHD_DROPIN_PATH, 0o644),
        "sudoers": (SUDOERS_PATH, 0o440),
        "expire_service": (f"{SYSTEMD_DIR}/breakglass-expire.service", 0o644),
        "expire_timer": (f"{SYSTEMD_DIR}/breakglass-expire.timer", 0o644),
    }
    # Enables the expiry timer with a plain file: an OCI layer (and a chroot) gets no
    # `systemctl enable` symlink, and systemd reads Wants= from a drop-in just the same.
    files = [
        PayloadFile(BUNDLE_PATH, bundle_bytes),
        PayloadFile(BUNDLE_JSON_PATH, canonical.dumps(bundle.to_dict())),
        PayloadFile(TIMER_WANTS_PATH, TIMER_WANTS),
        PayloadFile(TMPFILES_PATH, TMPFILES),
    ]
    for key, data in rendered.items():
        path, mode = system.get(key, (key, 0o644))
        files.append(PayloadFile(path, data, mode))
    base, base_tag = _base(spec)
    base_image = None
    if base is not None:
        from builder.release import oci

        # every base blob is hashed here, once, as it streams; nothing of it stays in memory
        base_image = oci.open_layout(base, base_tag, load_layers=False)
    epoch = source_date_epoch(bundle)
    dirs, owners = dict(RUNTIME_DIRS), {}
    if base is not None or backend == "packer":
        # an image with an OS runs `breakglass host ...` itself, with the OS's python3
        from builder.release.runtime_payload import host_runtime_files

        files.extend(host_runtime_files())
    if base is not None:
        # the Packer path creates accounts with the pyinfra deploy; a layer must carry them
        from builder.release.accounts import ACCOUNT_FILES, emergency_accounts

        users = [s.emergency_user for s in spec.scopes if s.emergency_user]
        assert base_image is not None
        base_files = _base_files(base_image, set(ACCOUNT_FILES))
        account_files, accounts = emergency_accounts(users, base_files, epoch)
        files.extend(account_files)
        for account in accounts:
            home = account.home.lstrip("/")
            dirs[home] = 0o700
            owners[home] = (account.uid, account.uid)
    files.extend(extra_files)
    files.sort()
    provenance: dict[str, Any] = {
        "builder": f"breakglass {__version__}",
        "backend": backend,
        "source_date_epoch": epoch,
        "spec_digest": canonical.digest(spec.path.read_bytes()),
        "templates_digest": _tree_digest(spec.templates_dir),
        "base": _base_provenance(spec, base, base_tag, backend),
        "artifacts": list(artifacts),
    }
    manifest = canonical.dumps(compose(spec, bundle, tuple(files), provenance, drill=drill))
    all_files = tuple(sorted([*files, PayloadFile(MANIFEST_PATH, manifest)]))
    return BuildPlan(spec, all_files, dirs, owners, manifest, epoch, base, base_tag, base_image)


def build_oci(plan: BuildPlan, out: Path, sign_key: Path | None) -> BuildResult:
    """Pack, sign and write ``plan`` to ``OUT/NAME/VERSION/`` in one rename.

    Identical content already there is a no-op; different content is refused
    (versions are immutable). Raises InputError or StateError.
    """
    from builder.release import gitsource, layer

    spec = plan.spec
    image_dir = out / spec.name / spec.version
    if image_dir.exists():
        unchanged = _unchanged(plan, image_dir, sign_key)
        if unchanged is not None:
            return unchanged
    # ssh-keygen signs, and git says the commit and repository (only when the inputs are
    # committed: same commit, same bytes), while the layer is packed
    signing = (
        sshsig.start_sign(plan.manifest, sign_key, sshsig.MANIFEST_NAMESPACE) if sign_key else None
    )
    try:
        source = gitsource.Probe([spec.path, spec.sealed_path, spec.templates_dir])
        # The layer is packed into a file beside where the image goes (same filesystem, so the
        # layout links it), never held in memory; nothing new is left there if the build fails.
        fd, blob_name = tempfile.mkstemp(dir=_existing_parent(out), prefix=".breakglass-layer-")
        blob_path = Path(blob_name)
        try:
            with os.fdopen(fd, "wb") as blob_file:
                os.fchmod(blob_file.fileno(), 0o644)  # a layout's blobs are 0644, links included
                packed = layer.pack(
                    plan.files,
                    source_date_epoch=plan.source_date_epoch,
                    dirs=plan.dirs,
                    dir_owners=plan.dir_owners,
                    blob_file=blob_file,
                    cached=_runtime_segment(plan),
                )
                # synced with the rest of the image, where the layout links it
            return _assemble_and_write(plan, packed, blob_path, image_dir, signing, source)
        finally:
            blob_path.unlink(missing_ok=True)
    finally:
        if signing is not None:
            signing.cancel()


def _runtime_segment(plan: BuildPlan) -> tuple[str, Path] | None:
    """The host runtime's files, where an image carries them: the same in every image of a
    release, so their compressed bytes are kept (``layer.pack(cached=...)``)."""
    from builder.release.runtime_payload import LIB_DIR, cache_dir

    prefix = f"{LIB_DIR}/"
    if not any(f.path.startswith(prefix) for f in plan.files):
        return None
    return prefix, cache_dir("layers")


def _existing_parent(path: Path) -> Path:
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


def _assemble_and_write(
    plan: BuildPlan,
    packed: Layer,
    blob_path: Path,
    image_dir: Path,
    signing: sshsig.Signing | None,
    source: Probe,
) -> BuildResult:
    from builder.release import oci

    spec = plan.spec
    layout = oci.assemble(
        packed,
        tag=spec.version,
        source_date_epoch=plan.source_date_epoch,
        base=plan.base,
        base_tag=plan.base_tag,
        base_image=plan.base_image,
        layer_file=blob_path,
        annotations={
            "org.opencontainers.image.title": spec.name,
            "org.opencontainers.image.version": spec.version,
            "dev.breakglass.manifest.digest": plan.manifest_digest,
            **source.annotations(),
        },
    )
    signature = signing.result() if signing is not None else None
    outputs = {f"oci/{path}": data for path, data in layout.files.items()}
    outputs[MANIFEST_NAME] = plan.manifest
    if signature is not None:
        outputs[SIGNATURE_NAME] = signature.encode("ascii")

    result = BuildResult(
        image_dir, plan.manifest_digest, layout.manifest_digest, signature is not None, True
    )
    linked = {f"oci/{path}": source for path, source in layout.linked.items()}
    if image_dir.exists():
        if _same_content(image_dir, outputs, linked):
            return BuildResult(**{**result.__dict__, "changed": False})
        raise InputError(
            f"version {spec.version} of {spec.name} already exists with different content",
            where=str(image_dir),
            hint=f"versions are immutable; run `breakglass bump {spec.path}`",
        )
    with new_directory(image_dir) as staging:
        (staging / "oci").mkdir()
        written = oci.write_layout_files(layout, staging / "oci")
        for name in (MANIFEST_NAME, SIGNATURE_NAME):
            if name in outputs:
                _write_file(staging / name, outputs[name])
                written.append(staging / name)
        # every file and folder at once, before the staging folder takes the image's name
        sync_all(written)
    return result


def _unchanged(plan: BuildPlan, image_dir: Path, sign_key: Path | None) -> BuildResult | None:
    """The existing build when it holds exactly this plan, signed alike; else None.

    The manifest lists the digest of every payload file and the build's
    provenance, and packing is deterministic, so an equal manifest means an
    equal image: a rebuild of an unchanged version stops here, before packing.
    Another manifest or another signature goes on to the full comparison,
    which refuses to overwrite. Damage to the existing layout is for
    ``verify`` to find, as it is for any image already written.
    """
    import json

    try:
        if (image_dir / MANIFEST_NAME).read_bytes() != plan.manifest:
            return None
        sig_path = image_dir / SIGNATURE_NAME
        existing_sig = sig_path.read_bytes() if sig_path.exists() else None
        index = json.loads((image_dir / "oci/index.json").read_bytes())
        image_digest = index["manifests"][0]["digest"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    if not isinstance(image_digest, str):
        return None
    if sign_key is None:
        if existing_sig is not None:
            return None
    else:
        # ssh signatures (ed25519, rsa-sha2) are deterministic: the same key gives the same bytes
        signature = sshsig.sign(plan.manifest, sign_key, sshsig.MANIFEST_NAMESPACE)
        if existing_sig != signature.encode("ascii"):
            return None
    return BuildResult(image_dir, plan.manifest_digest, image_digest, sign_key is not None, False)


def _write_file(path: Path, data: bytes) -> None:
    """A new file, 0644 whatever the umask, for the caller to sync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o644)


def _same_content(image_dir: Path, outputs: dict[str, bytes], linked: dict[str, Path]) -> bool:
    """Whether ``image_dir`` holds exactly ``outputs`` and the ``linked`` base blobs."""
    import filecmp

    existing = {p.relative_to(image_dir).as_posix(): p for p in _walk(image_dir)}
    if set(existing) != set(outputs) | set(linked):
        return False
    if any(existing[name].read_bytes() != data for name, data in outputs.items()):
        return False
    return all(filecmp.cmp(existing[name], src, shallow=False) for name, src in linked.items())


def _walk(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path


def _tree_digest(root: Path) -> str:
    """One digest over every template file (path and content), so provenance pins them."""
    entries = {
        p.relative_to(root).as_posix(): canonical.digest(p.read_bytes()) for p in _walk(root)
    }
    return canonical.digest(canonical.dumps(entries))


def _base_files(image: LoadedImage, wanted: set[str]) -> dict[str, bytes]:
    """The ``wanted`` regular files as the base image's merged layers have them.

    Each layer is streamed once and only the wanted entries are kept.
    """
    from builder.release import layer

    found: dict[str, bytes] = {}
    for path, descriptor in zip(image.layer_files, image.layer_descriptors, strict=True):
        found.update(layer.read_files(path, wanted, name=descriptor["digest"]))
    return found


def _base_provenance(
    spec: ImageSpec, base: Path | None, tag: str | None, backend: str
) -> dict[str, Any] | None:
    """What the image was built on: the OCI base, or the recipe of a Packer build's base disk."""
    if base is not None:
        return {"layout": base.name, "tag": tag}
    disk_dir = (spec.packer or {}).get("base_disk") if backend == "packer" else None
    if not disk_dir:
        return None
    from builder.vm.disk import load_disk

    recipe = load_disk(spec.path.parent / str(disk_dir)).recipe
    return {"disk": {k: v for k, v in sorted(recipe.items()) if k != "format"}}


def _base(spec: ImageSpec) -> tuple[Path | None, str | None]:
    if spec.base is None:
        return None, None
    text, _, tag = spec.base.partition(":")
    path = (spec.path.parent / text).resolve()
    if not (path / "index.json").is_file():
        raise InputError("base image is not an OCI layout", where=str(path))
    return path, tag or None
