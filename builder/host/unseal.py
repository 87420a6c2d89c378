"""``host unseal``: check approvals, and at quorum combine the shares and open one scope.

Each approval must be signed by that approver's key from the image manifest
(namespace ``breakglass-approval``), name this request's id and digest, carry
the request's ``not_after`` and not be past it, come from an approver who is
not the requester and not yet counted, and hold a share that decrypts with
the request's ephemeral identity. Every refusal is audited with its reason.

Activation order, chosen so that a crash at any step is recoverable (see
``builder.host.expire``): audit ``activating`` (refuse if the log cannot be
written) -> decrypt the scope's credentials into ``run/breakglass/SCOPE/`` ->
copy the scope's agent overlays -> delete the ephemeral identity -> state
ACTIVE, scope burned -> audit ``activated`` -> optional ``on_activate`` hook.
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from builder.approval import quorum
from builder.approval.request import Approval, UnsealRequest, format_time, load_approval
from builder.core import agecrypt, sshsig
from builder.core.canonical import dumps
from builder.core.errors import BreakglassError, CheckFailed, InputError, StateError
from builder.core.record import record, replace
from builder.core.secret import Secret
from builder.host import audit, clock, safepath, schedule, state, wipe
from builder.host.expire import session
from builder.host.image import HostImage, load_image, load_sealed_scope
from builder.host.layout import Layout, crash_point
from builder.host.state import ACTIVE, PENDING, Active, HostState

HOOK_TIMEOUT_SECONDS = 10


@record
class UnsealResult:
    """What one ``host unseal`` did: the phase after it, the approvals counted, what was refused."""

    phase: str
    request_id: str
    scope: str
    approvals: tuple[str, ...]
    needed: int
    expires_at: datetime | None
    refused: tuple[str, ...]


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Check:
    """One approval's checks under way: the ones on its fields done, its signature being
    verified by ``ssh-keygen`` in a process of its own, so that every approval of one
    unseal is checked at once; ``finish`` gives the decrypted share or raises _Refused."""

    def __init__(
        self, approval: Approval, request: UnsealRequest, image: HostImage, now: datetime
    ) -> None:
        self.approval = approval
        self._verifying: sshsig.Verifying | None = None
        self._failed: _Refused | InputError | None = None
        try:
            key = _approver_key(approval, request, image, now)
            self._verifying = sshsig.start_verify(
                approval.signed_bytes(), approval.signature, {approval.approver: key},
                sshsig.APPROVAL_NAMESPACE, identity=approval.approver,
            )  # fmt: skip
        except (_Refused, InputError) as e:
            self._failed = e

    def finish(self, identity: list[Any]) -> Secret:
        if self._failed is not None:
            raise self._failed
        assert self._verifying is not None
        try:
            self._verifying.result()
        except CheckFailed:
            raise _Refused("approval signature does not verify with the approver's key") from None
        try:
            return agecrypt.decrypt(self.approval.share, identity, what="the approval's share")
        except InputError:
            raise _Refused("approval share does not decrypt with the request's identity") from None

    def cancel(self) -> None:
        """Stop the signature check, if ``finish`` did not take it (harmless after it)."""
        if self._verifying is not None:
            self._verifying.cancel()


def _approver_key(
    approval: Approval, request: UnsealRequest, image: HostImage, now: datetime
) -> str:
    """The checks of one approval's fields against its request: the signing key of its
    approver, or _Refused."""
    if approval.request_id != request.id:
        raise _Refused("approval is for another request")
    if approval.request_digest != request.digest:
        raise _Refused("approval names a different request digest")
    if approval.approver == request.requester:
        raise _Refused("the requester cannot approve their own request")
    approver = image.approvers.get(approval.approver)
    if approver is None:
        raise _Refused("approver is not in the image's policy")
    # an approver of the image who is in no group holds no share: whatever share they send
    # decrypts (the request's recipient is public), so it must not count toward the quorum
    if approval.approver not in request.shares:
        raise _Refused("approver holds no share of this request")
    if approval.not_after != request.not_after:
        raise _Refused("approval expiry does not match the request")
    # settle drops the request at its not_after, but by the state file, which is not
    # trusted: the approval's own signed expiry is checked here as well
    if now > approval.not_after:
        raise _Refused("approval has expired")
    return approver.signing_key


def _start(
    approvals: list[Approval], request: UnsealRequest, image: HostImage, now: datetime
) -> list[_Check]:
    """Every approval's check started at once (``ssh-keygen`` verifies each in its own
    process); if one cannot start, those started before it are stopped."""
    checks: list[_Check] = []
    try:
        for approval in approvals:
            checks.append(_Check(approval, request, image, now))
    except BaseException:
        for check in checks:
            check.cancel()
        raise
    return checks


def _load_activation() -> None:
    """Import SLIP-39 (pure Python, tens of milliseconds) while the signature checks run in
    their own processes; activation combines the shares with it."""
    from builder.core import shares  # noqa: F401


def unseal(root: Path, now: datetime, request_id: str, sources: list[str]) -> UnsealResult:
    """Add approvals to the pending request; activate its scope once the quorum is met.

    Raises StateError when the request is not the pending one, CheckFailed when
    an approval is refused and no activation followed, or when the combined
    shares do not give the scope's unseal key.
    """
    with session(root, now) as (layout, current):
        p = current.pending
        if current.phase != PENDING or p is None or p.request_id != request_id:
            audit.append(layout, now, "approval-refused", request_id=request_id,
                         details={"reason": f"request is not pending (host is {current.phase})"})  # fmt: skip
            raise StateError(
                f"request {request_id[:64]} is not pending (host is {current.phase})",
                hint="`breakglass host status` shows the pending request, if any"
                if current.phase != ACTIVE
                else "the window is already open; `breakglass host status` shows it",
            )
        image = load_image(layout)
        request = UnsealRequest.from_dict(_json(layout.request_file(request_id)))
        identity = agecrypt.load_identities(layout.ephemeral_identity(request_id))
        stored = [
            Approval.from_dict(_json(layout.approvals_dir(request_id) / f"{name}.json"))
            for name in p.approvals
        ]
        incoming: list[Approval | InputError] = []
        for source in sources:
            try:
                incoming.append(load_approval(source))
            except InputError as e:
                incoming.append(e)
        arriving = [a for a in incoming if isinstance(a, Approval)]
        checks = _start([*stored, *arriving], request, image, now)
        try:
            if quorum.met(request.group_threshold, request.groups,
                          {*p.approvals, *(a.approver for a in arriving)}):  # fmt: skip
                _load_activation()
            accepted: dict[str, Secret] = {}
            for check in checks[: len(stored)]:
                try:
                    accepted[check.approval.approver] = check.finish(identity)
                except _Refused as e:
                    raise CheckFailed(
                        f"stored approval of {check.approval.approver} no longer verifies "
                        f"({e.reason})"
                    ) from None
            arrived = iter(checks[len(stored) :])
            refused: list[str] = []
            for loaded in incoming:
                reason, approval = None, None
                try:
                    if isinstance(loaded, InputError):
                        raise loaded
                    check = next(arrived)
                    approval = check.approval
                    if approval.approver in accepted:
                        raise _Refused("approver already counted")
                    accepted[approval.approver] = check.finish(identity)
                except (_Refused, InputError) as e:
                    reason = (
                        e.reason if isinstance(e, _Refused) else f"malformed approval ({e.message})"
                    )
                who = approval.approver if approval else None
                if reason is not None:
                    refused.append(reason)
                    audit.append(layout, now, "approval-refused", request_id=request_id,
                                 scope=p.scope, details={"approver": who, "reason": reason})  # fmt: skip
                    continue
                assert approval is not None
                store_approval(layout, request_id, approval)
                current = replace(
                    current, pending=replace(p, approvals=(*p.approvals, approval.approver))
                )
                p = current.pending
                assert p is not None
                state.save(root, current)
                audit.append(layout, now, "approval-accepted", request_id=request_id,
                             scope=p.scope, details={"approver": approval.approver,
                             "approval_digest": approval.digest, "count": len(p.approvals),
                             "needed": p.needed})  # fmt: skip
        finally:
            for check in checks:
                check.cancel()
        if not quorum.met(request.group_threshold, request.groups, set(accepted)):
            if refused and p.approvals:
                # what was kept counts: say so, or a partial success reads as a plain failure
                raise CheckFailed(
                    f"approval refused: {refused[0]}; {progress(p.approvals, p.needed)}",
                    hint=f"an approval that was accepted stays; add the rest with "
                    f"`breakglass host unseal {request_id} APPROVAL...`",
                )
            if refused:
                raise CheckFailed(f"approval refused: {refused[0]}")
            return UnsealResult(PENDING, request_id, p.scope, p.approvals, p.needed, None, ())
        crash_point("unseal-before-activate")
        new = _activate(layout, current, image, request, list(accepted.values()), now)
        a = new.active
        assert a is not None
        return UnsealResult(
            ACTIVE, request_id, a.scope, p.approvals, p.needed, a.expires_at, tuple(refused)
        )


def store_approval(layout: Layout, request_id: str, approval: Approval) -> None:
    """Keep an accepted approval in ``requests/ID.approvals/`` (0700), never through a link."""
    directory = layout.approvals_dir(request_id)
    safepath.ensure_dir(directory, 0o700, top=layout.state_dir, root=layout.root)
    safepath.write_file(directory / f"{approval.approver}.json", approval.canonical(), 0o644)


def progress(approvals: tuple[str, ...], needed: int) -> str:
    """``accepted 1 approval (alice); 1 more needed``: what counts so far and what is missing."""
    names = f" ({', '.join(approvals)})" if approvals else ""
    have = f"accepted {len(approvals)} approval{'' if len(approvals) == 1 else 's'}{names}"
    return f"{have}; {max(needed - len(approvals), 0)} more needed"


def _json(path: Path) -> object:
    from builder.core import bounded

    try:
        # never through a link, never more than a request may be
        return bounded.load_json(safepath.read_file(path, limit=bounded.cap("request")), "request")
    except (OSError, InputError):
        raise InputError("unreadable host request record", where=str(path)) from None


def _activate(
    layout: Layout,
    current: HostState,
    image: HostImage,
    request: UnsealRequest,
    shares: list[Secret],
    now: datetime,
) -> HostState:
    scope = image.scope(request.scope)
    approvers = sorted(current.pending.approvals) if current.pending else []
    try:
        from builder.core import shares as share_layer

        unseal_identity = agecrypt.identity_from_secret(share_layer.combine(shares))
        if agecrypt.public_of(unseal_identity) != scope.unseal_recipient:
            raise CheckFailed("the combined shares do not give this scope's unseal key")
        sealed = load_sealed_scope(layout, image, request.scope)
        if sealed.unseal_recipient != scope.unseal_recipient:
            raise CheckFailed("the sealed bundle and the manifest disagree on the unseal key")
        wipe.ensure_runtime(layout)  # plaintext never goes through a planted link
    except BreakglassError as e:
        audit.append(layout, now, "activation-refused", request_id=request.id, scope=request.scope,
                     details={"reason": e.message})  # fmt: skip
        raise
    # the intent is on record before any plaintext exists; no audit, no activation
    audit.append(layout, now, "activating", request_id=request.id, scope=request.scope,
                 details={"approvers": approvers})  # fmt: skip
    crash_point("unseal-after-intent")
    written: list[str] = []
    try:
        for n, cred in enumerate(scope.credentials):
            plaintext = agecrypt.decrypt(
                sealed.ciphertext(cred.name), [unseal_identity], what=f"credential {cred.name}"
            )
            path = layout.credential(scope.name, cred.name)
            wipe.write_private(layout, path, plaintext.reveal())
            written.append(str(path.relative_to(layout.root)))
            if n == 0:
                crash_point("unseal-mid-decrypt")
        crash_point("unseal-after-credentials")
        for agent in image.agents:
            if agent.scope == scope.name:
                path = layout.overlay(agent.name, agent.config_name)
                wipe.write_private(layout, path, (layout.root / agent.breakglass).read_bytes())
                written.append(str(path.relative_to(layout.root)))
        crash_point("unseal-after-overlays")
    except (BreakglassError, OSError, KeyError) as e:
        wipe.wipe(layout, [layout.root / f for f in written])
        reason = (
            e.message
            if isinstance(e, BreakglassError)
            else f"cannot write plaintext ({type(e).__name__})"
        )
        audit.append(layout, now, "activation-failed", request_id=request.id, scope=request.scope,
                     details={"reason": reason})  # fmt: skip
        raise CheckFailed(f"activation failed: {reason}") from None
    wipe.wipe_file(layout.ephemeral_identity(request.id))
    crash_point("unseal-after-identity")
    expires_at = now + timedelta(seconds=request.ttl_seconds)
    boot_id, boot_seconds = clock.boot(layout.root)
    active = Active(
        request.id, scope.name, now, expires_at, tuple(sorted(written)), boot_id, boot_seconds
    )
    new = replace(
        current,
        phase=ACTIVE,
        pending=None,
        active=active,
        burned={**current.burned, scope.name: request.id},
    )
    # the grant first: a state ACTIVE without it is what a forgery looks like
    wipe.write_private(layout, layout.grant, dumps(active.to_dict()), akc_readable=True)
    state.save(layout.root, new)
    crash_point("unseal-after-state")
    event = {
        "event": "activated", "request_id": request.id, "scope": scope.name,
        "expires_at": format_time(expires_at), "approvers": approvers, "requester": request.requester,
        "reason": request.reason, "image": {"name": image.name, "version": image.version},
    }  # fmt: skip
    audit.append(layout, now, "activated", request_id=request.id, scope=scope.name,
                 details={"activated_at": format_time(now), "expires_at": event["expires_at"],
                          "approvers": approvers,
                          "files": list(new.active.files) if new.active else []})  # fmt: skip
    crash_point("unseal-after-activated")
    schedule.arm(layout, now, request.id, scope.name, expires_at)
    if image.on_activate:
        _run_hook(layout, now, image.on_activate, event)
    return new


def _run_hook(layout: Layout, now: datetime, argv: tuple[str, ...], event: dict[str, Any]) -> None:
    """Run the alert hook with the event on stdin; its failure is audited, never fatal."""
    try:
        proc = subprocess.run(
            list(argv),
            input=dumps(event),
            capture_output=True,
            timeout=HOOK_TIMEOUT_SECONDS,
            check=False,
        )
        details: dict[str, Any] = {"argv0": argv[0], "exit": proc.returncode}
    except (OSError, subprocess.TimeoutExpired) as e:
        details = {"argv0": argv[0], "error": type(e).__name__}
    ok = details.get("exit") == 0
    audit.append(layout, now, "hook-ok" if ok else "hook-failed", request_id=str(event["request_id"]),
                 scope=str(event["scope"]), details=details)  # fmt: skip
