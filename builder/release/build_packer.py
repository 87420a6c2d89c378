"""Build with Packer: the same payload and manifest as the OCI path, installed into
VM or cloud images by the pyinfra deploy, with Packer's artifact ids signed.

The payload inside the image carries the manifest as planned (its
``provenance.artifacts`` empty: the ids do not exist until the build is done);
the signed manifest beside the build output is that manifest with the ids
filled in, so a verifier can tie the signature to the AMIs, GCE images or
qcow2 files Packer produced. A qemu build on a base disk also names each qcow2
it put beside the manifest with its digest (``provenance.disks``), which
``verify`` checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from builder.core import canonical, sshsig
from builder.core.errors import InputError
from builder.core.fsio import new_directory, write_atomic
from builder.release.build import MANIFEST_NAME, SIGNATURE_NAME, BuildPlan, BuildResult
from builder.vm.packer import PackerEvent


def build_packer(
    plan: BuildPlan,
    out: Path,
    sign_key: Path | None,
    on_event: Callable[[PackerEvent], None] | None = None,
) -> BuildResult:
    """Run Packer for ``plan`` and write ``OUT/NAME/VERSION/`` in one rename.

    Raises InputError (no ``packer:`` section, a version already built),
    ToolMissing, or CheckFailed when Packer or the provisioning fails; on
    failure nothing is left under ``OUT``.
    """
    from builder.vm.packer_build import build_with_packer

    spec = plan.spec
    if spec.packer is None:
        raise InputError(
            "the spec has no packer section",
            where=str(spec.path),
            hint="add packer: {builders: [...]}",
        )
    image_dir = out / spec.name / spec.version
    if image_dir.exists():
        raise InputError(
            f"version {spec.version} of {spec.name} is already built",
            where=str(image_dir),
            hint=f"machine images are not reproducible byte for byte; run `breakglass bump {spec.path}`",
        )
    with new_directory(image_dir) as staging:
        result = build_with_packer(
            spec.packer,
            plan.files,
            plan.dirs,
            staging,
            on_event=on_event,
            spec_dir=spec.path.parent,
        )
        doc = json.loads(plan.manifest)
        doc["provenance"]["artifacts"] = result.artifact_ids
        if result.disks:
            # qemu builds: the qcow2 files beside the manifest, each named by its digest
            doc["provenance"]["disks"] = result.disks
        manifest = canonical.dumps(doc)
        write_atomic(staging / MANIFEST_NAME, manifest)
        if sign_key is not None:
            signature = sshsig.sign(manifest, sign_key, sshsig.MANIFEST_NAMESPACE)
            write_atomic(staging / SIGNATURE_NAME, signature.encode("ascii"))
    return BuildResult(image_dir, canonical.digest(manifest), "", sign_key is not None, True)
