"""The break-glass manifest: what an image carries and who may open it, signed.

Canonical JSON (``builder.core.canonical``) at ``etc/breakglass/manifest.json``
inside the image and beside the layout. It records the digest of every
payload file, the policy (approvers with signing keys and recipients,
thresholds, TTL caps, scopes with their unseal recipients and credentials'
public parts), the sealed-bundle digest and the build provenance. The host
trusts only what this file says, and only after its signature checks out.
"""

from __future__ import annotations

from typing import Any

from builder.core import bounded, canonical
from builder.core.errors import CheckFailed, InputError
from builder.core.payload import BUNDLE_PATH, RUNTIME_DIR, PayloadFile
from builder.core.record import record
from builder.release.bundle import SealedBundle
from builder.release.spec import ImageSpec

FORMAT = "breakglass-manifest/1"
TOP_KEYS = {"format", "image", "files", "sealed_bundle", "policy", "scopes", "agents", "provenance"}


def compose(
    spec: ImageSpec,
    bundle: SealedBundle,
    files: tuple[PayloadFile, ...],
    provenance: dict[str, Any],
    *,
    drill: bool = False,
) -> dict[str, Any]:
    """The manifest document for an image whose payload (manifest excluded) is ``files``.

    A drill build carries ``image.drill: true``; other manifests have no such key.
    """
    bundle_file = next(f for f in files if f.path == BUNDLE_PATH)
    sealed = {s.name: s for s in bundle.scopes}
    return {
        "format": FORMAT,
        "image": {
            "name": spec.name,
            "version": spec.version,
            "description": spec.description,
            **({"drill": True} if drill else {}),
        },
        "files": {
            f.path: {"digest": f.digest, "mode": f.mode, "uid": f.uid, "gid": f.gid} for f in files
        },
        "sealed_bundle": {
            "path": BUNDLE_PATH,
            "digest": bundle_file.digest,
            "created": bundle.created,
            "rotate_by": bundle.rotate_by,
        },
        "policy": {
            "approvers": [a.to_dict() for a in spec.approvers],
            **spec.policy.to_dict(),
        },
        "scopes": [
            {
                "name": s.name,
                "description": s.description,
                "max_ttl_seconds": s.max_ttl,
                "unseal_recipient": sealed[s.name].unseal_recipient,
                "emergency_user": s.emergency_user,
                "sudo": list(s.sudo),
                "credentials": [
                    {
                        "name": c.name,
                        "kind": c.kind,
                        "public": c.public,
                        "fingerprint": c.fingerprint,
                        "runtime_path": f"{RUNTIME_DIR}/{s.name}/{c.name}",
                    }
                    for c in sealed[s.name].credentials
                ],
            }
            for s in spec.scopes
        ],
        "agents": [
            {
                "name": a.name,
                "scope": a.scope,
                "config_name": a.config_name,
                "normal": f"etc/breakglass/agents/{a.name}/normal/{a.config_name}",
                "breakglass": f"etc/breakglass/agents/{a.name}/breakglass/{a.config_name}",
            }
            for a in spec.agents
        ],
        "provenance": provenance,
    }


@record
class Manifest:
    """A parsed manifest. ``raw`` is the exact bytes that were signed."""

    raw: bytes
    doc: dict[str, Any]

    @classmethod
    def from_bytes(cls, raw: bytes, where: str = "manifest") -> Manifest:
        """Parse manifest bytes; raises CheckFailed when they are not a canonical manifest.

        Checks the shape of every field the accessors below read, so that a
        parsed manifest never raises anything but our errors later.
        """
        try:
            doc = bounded.load_json(raw, "manifest")
        except InputError as e:
            raise CheckFailed(f"{where}: {e.message}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CheckFailed(f"{where}: not a breakglass manifest (want format {FORMAT})")
        if set(doc) != TOP_KEYS:
            raise CheckFailed(f"{where}: manifest fields differ from {FORMAT}")
        if canonical.dumps(doc) != raw:
            raise CheckFailed(f"{where}: manifest is not in canonical form")
        _check_shape(doc, where)
        if not doc["policy"]["approvers"]:
            raise CheckFailed(f"{where}: manifest names no approvers")
        return cls(raw, doc)

    @property
    def digest(self) -> str:
        return canonical.digest(self.raw)

    @property
    def name(self) -> str:
        return str(self.doc["image"]["name"])

    @property
    def version(self) -> str:
        return str(self.doc["image"]["version"])

    @property
    def policy(self) -> dict[str, Any]:
        return dict(self.doc["policy"])

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return dict(self.doc["files"])

    @property
    def scopes(self) -> list[dict[str, Any]]:
        return list(self.doc["scopes"])

    @property
    def agents(self) -> list[dict[str, Any]]:
        return list(self.doc["agents"])

    def scope(self, name: str) -> dict[str, Any]:
        for s in self.doc["scopes"]:
            if s["name"] == name:
                return dict(s)
        raise InputError(f"the image has no scope '{name}'")

    def approver_keys(self) -> dict[str, str]:
        """Approver name -> OpenSSH signing key, as the signed manifest says."""
        return {a["name"]: a["signing_key"] for a in self.doc["policy"]["approvers"]}


def _check_shape(doc: dict[str, Any], where: str) -> None:
    """Raise CheckFailed unless the fields the accessors read have the types they expect."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise CheckFailed(f"{where}: manifest {what} is missing or malformed")

    image, policy = doc["image"], doc["policy"]
    need(isinstance(image, dict), "image")
    need(all(isinstance(image.get(k), str) for k in ("name", "version")), "image name or version")
    need(
        isinstance(doc["files"], dict) and all(isinstance(v, dict) for v in doc["files"].values()),
        "files",
    )
    need(isinstance(doc["sealed_bundle"], dict), "sealed_bundle")
    need(isinstance(doc["provenance"], dict), "provenance")
    need(isinstance(policy, dict) and isinstance(policy.get("approvers"), list), "policy.approvers")
    for a in policy["approvers"]:
        need(
            isinstance(a, dict) and all(isinstance(a.get(k), str) for k in ("name", "signing_key")),
            "approver",
        )
    for key in ("scopes", "agents"):
        need(isinstance(doc[key], list), key)
        for item in doc[key]:
            need(isinstance(item, dict) and isinstance(item.get("name"), str), f"{key} entry")
