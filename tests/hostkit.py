"""Test kit for the host runtime: approver keys, a really built image root, approvals.

``build_image`` writes a spec with freshly generated approver keys (age
identities and ssh-ed25519 signing keys), seals it with ``builder.release.seal``,
plans the build with ``builder.release.build.plan`` and writes every payload file
into a root directory, exactly the files the OCI layer carries. Tests copy
that root (``clone``) so each starts DORMANT with no state.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from builder.core import agecrypt

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv/bin/python") if (REPO / ".venv/bin/python").exists() else sys.executable
APPROVERS = ("alice", "bob", "carol")
REQUESTER = "dave"
EMERGENCY_USER = "breakglass"
TWO_OF_THREE = "  threshold: 2\n"


@dataclass(frozen=True)
class ApproverKeys:
    name: str
    identity: Path  # age identity file
    signing_key: Path  # ssh-ed25519 private key
    recipient: str
    signing_pub: str


@dataclass(frozen=True)
class Image:
    root: Path
    approvers: dict[str, ApproverKeys]
    emergency_user: str

    @property
    def manifest(self) -> dict[str, object]:
        doc: dict[str, object] = json.loads(
            (self.root / "etc/breakglass/manifest.json").read_bytes()
        )
        return doc


def make_keys(
    directory: Path, names: tuple[str, ...] = (*APPROVERS, REQUESTER)
) -> dict[str, ApproverKeys]:
    """An age identity and an ssh-ed25519 signing key for each name (the requester too)."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = {}
    for name in names:
        identity = agecrypt.generate_x25519()
        id_path = directory / f"{name}.age"
        id_path.write_bytes(agecrypt.identity_text(identity).reveal() + b"\n")
        id_path.chmod(0o600)
        sk = directory / f"{name}.ssh"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(sk)],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        pub = sk.with_name(f"{name}.ssh.pub").read_text().strip()
        keys[name] = ApproverKeys(name, id_path, sk, agecrypt.public_of(identity), pub)
    return keys


def _spec_text(
    keys: dict[str, ApproverKeys],
    emergency_user: str,
    on_activate: list[str] | None,
    approvers_in_spec: tuple[str, ...],
    quorum: str,
) -> str:
    approvers = "".join(
        f"  - name: {n}\n    recipient: {keys[n].recipient}\n    signing_key: {keys[n].signing_pub}\n"
        for n in approvers_in_spec
    )
    hook = f"  on_activate: {json.dumps(on_activate)}\n" if on_activate else ""
    return f"""name: hostkit
version: 1.0.0
description: host runtime test image
templates: {REPO / "templates"}
approvers:
{approvers}policy:
{quorum}  max_ttl: 4h
  request_lifetime: 30m
  rotate_every: 90d
{hook}scopes:
  - name: ssh-emergency
    description: emergency login
    max_ttl: 1h
    emergency_user: {emergency_user}
  - name: agent-backup
    description: agent backup route
    max_ttl: 4h
credentials:
  - name: emergency-ssh-key
    scope: ssh-emergency
    generate: ssh-ed25519
  - name: deploy-token
    scope: agent-backup
    generate: token
agents:
  - name: deploy-agent
    scope: agent-backup
    config_name: agent.toml
    templates:
      normal: deploy-agent/normal.toml.j2
      breakglass: deploy-agent/breakglass.toml.j2
    vars:
      identity_provider_url: https://idp.example.internal
      service_url: https://deploy.example.internal
      breakglass_url: https://deploy-direct.example.internal
      client_id: deploy-agent
"""


def build_image(
    workdir: Path,
    keys: dict[str, ApproverKeys],
    *,
    emergency_user: str = EMERGENCY_USER,
    on_activate: list[str] | None = None,
    approvers: tuple[str, ...] = APPROVERS,
    quorum: str = TWO_OF_THREE,
) -> Image:
    """Seal and build an image and unpack its payload into ``workdir/root``.

    By default 2 of ``APPROVERS``; ``quorum`` is the policy's quorum lines
    (``threshold:`` or ``groups:`` and ``group_threshold:``, indented two spaces).
    """
    from builder.release.build import plan
    from builder.release.seal import seal
    from builder.release.spec import load_spec

    src = workdir / "src"
    src.mkdir(parents=True)
    spec_path = src / "hostkit.yaml"
    spec_path.write_text(_spec_text(keys, emergency_user, on_activate, approvers, quorum))
    spec = load_spec(spec_path)
    seal(spec, dt.datetime.now(dt.UTC), rotate=False)
    built = plan(spec)
    root = workdir / "root"
    for f in built.files:
        path = root / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f.data)
        path.chmod(f.mode)
    for d, mode in built.dirs.items():
        (root / d).mkdir(parents=True, exist_ok=True, mode=mode)
    return Image(root, keys, emergency_user)


def clone(image: Image, dest: Path) -> Image:
    """A fresh copy of a built root, so each test starts from a clean, DORMANT host."""
    shutil.copytree(image.root, dest, symlinks=True)
    return Image(dest, image.approvers, image.emergency_user)


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        input: bytes | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run ``python -m builder ARGS`` as a separate process, text output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [PYTHON, "-m", "builder", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        input=input.decode() if input is not None else None,
        check=False,
    )


def approve(request_file: Path, keys: ApproverKeys, out: Path) -> subprocess.CompletedProcess[str]:
    """``breakglass approve`` for one approver, non-interactively."""
    return run(
        "approve", str(request_file), "--identity", str(keys.identity), "--signing-key",
        str(keys.signing_key), "--approver", keys.name, "--yes", "--out", str(out),
    )  # fmt: skip


def plaintext_files(root: Path) -> list[str]:
    """Every file under run/breakglass/ except a pending request's ephemeral identity and the
    activation grant (neither is a credential)."""
    runtime = root / "run/breakglass"
    if not runtime.exists():
        return []
    return sorted(
        str(p.relative_to(root))
        for p in runtime.rglob("*")
        if p.is_file() and not p.name.startswith(".request-") and p.name != ".grant.json"
    )


_CACHE: dict[str, Image] = {}
# holds real keys but is named in no image's policy
OUTSIDERS = ("mallory",)


def shared_image(variant: str = "default", **kwargs: object) -> Image:
    """One built image per variant for the whole test run (sealing and building once)."""
    if variant not in _CACHE:
        import atexit
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="breakglass-hostkit-"))
        atexit.register(shutil.rmtree, work, True)
        names = kwargs.get("approvers", APPROVERS)
        assert isinstance(names, tuple)
        keys = make_keys(work / "keys", tuple(dict.fromkeys((*names, REQUESTER, *OUTSIDERS))))
        _CACHE[variant] = build_image(work / "build", keys, **kwargs)  # type: ignore[arg-type]
    return _CACHE[variant]


def lib_approve(request: object, keys: ApproverKeys, now: dt.datetime) -> str:
    """An approval made through the library with a frozen clock, as an armored line."""
    from builder.approval.approve import approve as make
    from builder.approval.request import UnsealRequest

    assert isinstance(request, UnsealRequest)
    approval = make(
        request, approver=keys.name, identity=keys.identity, signing_key=keys.signing_key, now=now
    )
    return approval.armored()


def signed_approval(
    request: object,
    signer: ApproverKeys,
    now: dt.datetime,
    *,
    approver: str | None = None,
    share: str | None = None,
    **fields: object,
) -> str:
    """An approval that ``approve`` would refuse to make, yet really signed with ``signer``'s key.

    The share is the signer's own, decrypted with their age identity and
    re-encrypted to the request; ``share`` replaces it (for an approver who
    holds none), ``fields`` replace any other field before signing. This is
    what a dishonest or patched approver's tool can produce.
    """
    from builder.approval.request import Approval, UnsealRequest
    from builder.core import sshsig
    from builder.core.record import replace

    assert isinstance(request, UnsealRequest)
    name = approver or signer.name
    if share is None:
        plain = agecrypt.decrypt(
            request.shares[signer.name], agecrypt.load_identities(signer.identity), what="share"
        )
        share = agecrypt.encrypt(plain, [request.ephemeral_recipient])
    unsigned = Approval(
        request_id=request.id,
        request_digest=request.digest,
        approver=name,
        approved_at=now,
        not_after=request.not_after,
        share=share,
        signature="",
    )
    unsigned = replace(unsigned, **fields)
    signature = sshsig.sign(unsigned.signed_bytes(), signer.signing_key, sshsig.APPROVAL_NAMESPACE)
    return replace(unsigned, signature=signature).armored()
