"""The approver's side: read a request, re-encrypt one's own share to it, sign the approval.

Runs on the approver's own machine and needs nothing from the host: the
request carries everything (the image it is for, the scope, the reason, the
ephemeral recipient and every approver's encrypted share). Only this
approver's share is decrypted, in memory, and it leaves re-encrypted to the
request's one-time recipient. Signing goes through ``ssh-keygen -Y sign`` so
that keys held by ssh-agent or on FIDO hardware work.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from builder.approval.request import Approval, UnsealRequest, format_time
from builder.core import agecrypt, sshsig
from builder.core.display import escape
from builder.core.duration import format_seconds
from builder.core.errors import CheckFailed, InputError
from builder.core.record import replace


def summary(request: UnsealRequest) -> list[tuple[str, str]]:
    """What the approver is asked to consent to, as label/value pairs (no secret).

    Every value is escaped (``builder.core.display``): the request comes from
    another machine and must not be able to redraw what the approver reads.
    """
    pairs = [
        ("request", request.id),
        (
            "image",
            f"{request.image.name} {request.image.version} ({request.image.manifest_digest})",
        ),
        ("scope", request.scope),
        ("ttl", format_seconds(request.ttl_seconds)),  # as requested: 15m, not 900s
        ("reason", request.reason),
        ("requester", request.requester),
        ("created", format_time(request.created_at)),
        ("expires", format_time(request.not_after)),
        ("request digest", request.digest),
    ]
    return [(label, escape(value)) for label, value in pairs]


def check_approvable(request: UnsealRequest, approver: str, now: datetime) -> None:
    """Refuse what must never be approved; raises InputError or CheckFailed."""
    if approver == request.requester:
        raise InputError("the requester cannot approve their own request (two-person rule)")
    if approver not in request.shares:
        raise InputError(f"the request holds no share for approver {approver!r}")
    if now > request.not_after:
        raise CheckFailed("the request has expired")


def approve(
    request: UnsealRequest, *, approver: str, identity: Path, signing_key: Path, now: datetime
) -> Approval:
    """Decrypt this approver's share, re-encrypt it to the request, sign; return the approval.

    Raises InputError when the identity cannot decrypt the share or the key
    cannot sign, and as ``check_approvable`` does.
    """
    check_approvable(request, approver, now)
    identities = agecrypt.load_identities(identity)
    share = agecrypt.decrypt(request.shares[approver], identities, what=f"the share of {approver}")
    reencrypted = agecrypt.encrypt(share, [request.ephemeral_recipient])
    unsigned = Approval(
        request_id=request.id,
        request_digest=request.digest,
        approver=approver,
        approved_at=now,
        not_after=request.not_after,
        share=reencrypted,
        signature="",
    )
    signature = sshsig.sign(unsigned.signed_bytes(), signing_key, sshsig.APPROVAL_NAMESPACE)
    return replace(unsigned, signature=signature)
