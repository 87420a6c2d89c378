"""``host request``: open a request to unseal one scope, with a one-time ephemeral recipient."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from pathlib import Path

from builder.approval.quorum import fewest
from builder.approval.request import ImageRef, UnsealRequest, format_time
from builder.core import agecrypt
from builder.core.duration import format_seconds
from builder.core.errors import InputError, StateError
from builder.core.record import replace
from builder.host import audit, safepath, state, wipe
from builder.host.expire import session
from builder.host.image import load_image, load_sealed_scope
from builder.host.state import ACTIVE, PENDING, Pending


def open_request(
    root: Path, now: datetime, *, scope: str, ttl_seconds: int, reason: str, requester: str
) -> UnsealRequest:
    """Create, store and audit a request; the host goes PENDING.

    Raises InputError for an unknown scope, a TTL above the scope's cap or an
    empty reason, StateError while a window is ACTIVE.
    """
    if not reason.strip():
        raise InputError("a request needs a reason")
    if ttl_seconds < 1:
        raise InputError("ttl must be at least one second")
    with session(root, now) as (layout, current):
        # refuse a planted link before anything is written (StateError names it)
        safepath.ensure_dir(layout.requests, 0o700, top=layout.state_dir, root=layout.root)
        wipe.ensure_runtime(layout)
        image = load_image(layout)
        info = image.scope(scope)
        if ttl_seconds > info.max_ttl_seconds:
            raise InputError(
                f"ttl {format_seconds(ttl_seconds)} exceeds the cap of scope {scope} "
                f"({format_seconds(info.max_ttl_seconds)})"
            )
        if current.phase == ACTIVE:
            raise StateError(
                "a break-glass window is already active", hint="run `breakglass host reseal` first"
            )
        sealed = load_sealed_scope(layout, image, scope)
        identity = agecrypt.generate_x25519()
        request = UnsealRequest(
            id=secrets.token_hex(16),
            image=ImageRef(image.name, image.version, image.manifest_digest),
            scope=scope,
            ttl_seconds=ttl_seconds,
            reason=reason,
            requester=requester,
            created_at=now,
            not_after=now + timedelta(seconds=image.request_lifetime_seconds),
            ephemeral_recipient=agecrypt.public_of(identity),
            group_threshold=sealed.group_threshold,
            groups=sealed.groups,
            shares=dict(sealed.shares),
        )
        # a request must parse back: its constructor is the same validation a reader applies
        UnsealRequest.from_dict(request.to_dict())
        superseded = (
            current.pending.request_id if current.phase == PENDING and current.pending else None
        )
        wipe.wipe_all(layout)  # a superseded request's identity goes
        wipe.write_private(
            layout,
            layout.ephemeral_identity(request.id),
            agecrypt.identity_text(identity).reveal() + b"\n",
        )
        safepath.write_file(layout.request_file(request.id), request.canonical(), 0o644)
        new = replace(
            current,
            phase=PENDING,
            pending=Pending(
                request.id,
                scope,
                ttl_seconds,
                requester,
                request.not_after,
                fewest(request.group_threshold, (g.threshold for g in request.groups)),
            ),
            active=None,
        )
        state.save(root, new)
        audit.append(
            layout, now, "request-created", request_id=request.id, scope=scope, who=requester,
            details={
                "ttl_seconds": ttl_seconds, "reason": reason, "not_after": format_time(request.not_after),
                "request_digest": request.digest, "superseded": superseded,
            },
        )  # fmt: skip
        return request
