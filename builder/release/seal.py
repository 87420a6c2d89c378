"""Seal: the only step that sees plaintext credentials.

For each scope: generate a fresh X25519 unseal key U, encrypt the scope's
credentials to U, split U's 32-byte secret with SLIP-39 (k of n, optional
groups), encrypt each share to its approver, and forget U. The result is a
``SealedBundle`` (ciphertext only) and an enrolment file (public parts only).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.core import agecrypt, canonical, shares
from builder.core.errors import InputError
from builder.core.fsio import write_atomic
from builder.release.bundle import SealedBundle, SealedCredential, SealedScope
from builder.release.credentials import produce
from builder.release.spec import ImageSpec

ENROLMENT_FORMAT = "breakglass-enrolment/1"


@dataclass(frozen=True)
class SealResult:
    bundle: SealedBundle
    enrolment: dict[str, Any]
    bundle_path: Path
    enrolment_path: Path


def timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seal_spec(spec: ImageSpec, now: dt.datetime) -> tuple[SealedBundle, dict[str, Any]]:
    """Seal every scope of ``spec`` in memory. Nothing is written; nothing secret is returned."""
    scopes = []
    for scope in spec.scopes:
        unseal_key = agecrypt.generate_x25519()
        unseal_recipient = agecrypt.public_of(unseal_key)
        sealed_credentials = []
        for credential in spec.credentials_of(scope.name):
            material = produce(credential, spec.path.parent, f"breakglass:{spec.name}:{scope.name}")
            sealed_credentials.append(
                SealedCredential(
                    credential.name,
                    credential.kind,
                    material.public,
                    material.fingerprint,
                    agecrypt.encrypt(material.plaintext, [unseal_recipient]),
                )
            )
        groups = spec.policy.groups
        split = shares.split(
            agecrypt.secret_bytes(unseal_key),
            spec.policy.group_threshold,
            [shares.GroupShape(g.threshold, len(g.members)) for g in groups],
        )
        del unseal_key  # U exists nowhere after this point but in the shares
        encrypted_shares = {
            member: agecrypt.encrypt(share, [spec.approver(member).recipient])
            for group, group_shares in zip(groups, split, strict=True)
            for member, share in zip(group.members, group_shares, strict=True)
        }
        scopes.append(
            SealedScope(
                scope.name,
                unseal_recipient,
                spec.policy.group_threshold,
                groups,
                encrypted_shares,
                tuple(sealed_credentials),
            )
        )
    bundle = SealedBundle(
        image=spec.name,
        created=timestamp(now),
        rotate_by=timestamp(now + dt.timedelta(seconds=spec.policy.rotate_every)),
        policy_digest=spec.policy_digest,
        scopes=tuple(scopes),
    )
    return bundle, enrolment_of(bundle)


def enrolment_of(bundle: SealedBundle) -> dict[str, Any]:
    """The public parts the systems that accept the credentials are enrolled with."""
    return {
        "format": ENROLMENT_FORMAT,
        "image": bundle.image,
        "created": bundle.created,
        "credentials": [
            {
                "scope": scope.name,
                "name": c.name,
                "kind": c.kind,
                "public": c.public,
                "fingerprint": c.fingerprint,
            }
            for scope in bundle.scopes
            for c in scope.credentials
        ],
    }


def seal(spec: ImageSpec, now: dt.datetime, *, rotate: bool) -> SealResult:
    """Seal ``spec`` and write the bundle and enrolment file beside it.

    Refuses to replace an existing bundle unless ``rotate``. Everything is
    computed before the first write, so a failure leaves the files as they were.
    """
    bundle_path, enrolment_path = spec.sealed_path, spec.enrolment_path
    if bundle_path.exists() and not rotate:
        raise InputError(
            "sealed bundle already exists",
            where=str(bundle_path),
            hint="rotate the credentials with `breakglass seal --rotate`",
        )
    bundle, enrolment = seal_spec(spec, now)
    data = bundle.to_bytes()
    SealedBundle.from_bytes(data, str(bundle_path))  # what we write must read back
    write_atomic(enrolment_path, canonical.dumps(enrolment))
    write_atomic(bundle_path, data)
    return SealResult(bundle, enrolment, bundle_path, enrolment_path)
