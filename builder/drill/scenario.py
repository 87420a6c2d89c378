"""The drill: six timed steps against a simulated outage, on loopback only.

    1. normal mode: the agent deploys through the identity provider
    2. outage: the identity provider stops; the agent fails (the outage is real)
    3. request, approvals (the real ``approve`` command), unseal (the real host commands)
    4. the agent deploys through the break-glass route; ssh login as the emergency user
    5. expiry: after the TTL the agent and the ssh login fail; no plaintext remains
    6. the audit log verifies and records every step; no drill credential leaked

Before step 1 the drill prepares its variant (``variant``), starts the
stand-ins and a loopback sshd, and checks that the sealed public parts match
what the stand-in service enrolled (drift). When the agent's scope and the
emergency account's scope differ, steps 3-5 run once for each scope. The
first failing step ends the drill; every process and temporary file is
removed on the way out, also on SIGINT or SIGTERM.

Expiry in step 5 is the host's own: the drill plays the image's expiry timer
(``host tick``) from ``expires_at`` on and probes every access path until all
fail. The reference agent keeps using its token for as long as the host leaves
it in place, so a host that never expires fails step 5.

``unsafe_break`` rehearses a failure on purpose and must make the drill fail:
``frozen-clock`` runs every host command from the unseal on (including
sshd's ``authorized-keys``) with the host clock stopped at the moment of
unseal (``BREAKGLASS_UNSAFE_FROZEN_NOW``), so the window never ends.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.core.errors import CheckFailed, InputError, StateError
from builder.drill import interrupt
from builder.drill.report import DrillResult, Holder, Step
from builder.host.layout import GRANT_NAME

AUDIT_EVENTS = ("request-created", "approval-accepted", "activated", "expired")
UNSAFE_BREAKS = ("frozen-clock",)
REVOKE_GRACE_SECONDS = 15.0  # how long after expires_at access may take to disappear
TICK_INTERVAL_SECONDS = 0.5  # the drill's stand-in for the expiry timer, between probes
COMMAND_TIMEOUT = 300  # seconds; a bound for a stuck command, far above a loaded machine's pace


class StepFailed(Exception):
    """A drill step did not do what it must; ``str()`` says why (never a secret)."""


@dataclass
class _Clock:
    start: float

    def now(self) -> float:
        return time.monotonic() - self.start


class Drill:
    """One drill run; ``run()`` returns the result and never leaves a process or file behind."""

    def __init__(
        self,
        spec_path: Path,
        ttl_seconds: int,
        *,
        enrolment: Path | None = None,
        checkins: Path | None = None,
        unsafe_break: str | None = None,
    ) -> None:
        if unsafe_break is not None and unsafe_break not in UNSAFE_BREAKS:
            raise InputError(f"unknown unsafe break '{unsafe_break}'")
        self.unsafe_break = unsafe_break
        self.host_env: dict[str, str] = {}  # added to every host command's environment
        self.spec_path = spec_path
        self.ttl = ttl_seconds
        self.enrolment_override = enrolment
        self.checkins = checkins
        self.clock = _Clock(time.monotonic())
        self.steps: list[Step] = []
        self.log: list[str] = []
        self.secrets: list[bytes] = []  # drill plaintexts seen while active: the leak canary
        self.t_outage: float | None = None
        # per scope: from the outage, or for a scope opened after another (one window at a
        # time) from the start of its own request, to the first use of its credentials
        self.access_from: dict[str, float] = {}
        self.time_to_access: dict[str, float] = {}
        self.time_to_revoke: dict[str, float] = {}
        self.windows: list[str] = []
        self.audit_head: str | None = None
        self.drift: tuple[dict[str, Any], ...] = ()

    # ---- plumbing -------------------------------------------------------

    def _cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``breakglass ARGS`` as users do; its output goes to the drill log.

        ``host`` commands run with ``host_env`` added, as they would on the host.
        """
        from builder.host.clock import FROZEN_ENV

        # an unsafe knob left in the caller's environment must not leak into a normal drill
        env = {k: v for k, v in os.environ.items() if k != FROZEN_ENV}
        if args[0] == "host":
            env.update(self.host_env)
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "builder", *args], env=env,
                capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT,
                check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise StepFailed(
                f"breakglass {' '.join(args[:2])} did not finish within {COMMAND_TIMEOUT} s"
            ) from None
        self.log.append(f"$ breakglass {' '.join(args[:2])} -> {proc.returncode}")
        self.log.extend(line for line in proc.stderr.splitlines() if line)
        return proc

    def _json(self, proc: subprocess.CompletedProcess[str], what: str) -> Any:
        if proc.returncode != 0:
            raise StepFailed(f"{what} failed: {_last_line(proc.stderr)}")
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise StepFailed(f"{what} printed no json") from None

    def _agent(self) -> tuple[bool, str]:
        assert self.agent is not None
        try:
            proc = subprocess.run(
                [
                    sys.executable, "-m", "builder.drill.agent", "--root", str(self.root),
                    "--config-name", self.agent.config_name, "--name", self.agent.name,
                ],
                capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT,
                check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise StepFailed(f"the agent did not finish within {COMMAND_TIMEOUT} s") from None
        line = (proc.stdout.strip() or proc.stderr.strip() or "no output").splitlines()[-1]
        self.log.append(line)
        return proc.returncode == 0, line

    @contextmanager
    def _step(self, name: str) -> Iterator[list[str]]:
        started = self.clock.now()
        notes: list[str] = []
        try:
            yield notes
        except StepFailed as e:
            self.steps.append(Step(name, False, started, self.clock.now(), str(e)))
            raise
        except (InputError, CheckFailed, StateError) as e:
            self.steps.append(Step(name, False, started, self.clock.now(), e.message))
            raise StepFailed(e.message) from None
        self.steps.append(Step(name, True, started, self.clock.now(), "; ".join(notes)))

    # ---- the run --------------------------------------------------------

    def run(self) -> DrillResult:
        started_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # the handlers cover the whole run, cleanup included, so no signal can cut it short
        with interrupt.cleanup_on_signals():
            work = Path(tempfile.mkdtemp(prefix="breakglass-drill-"))
            try:
                with ExitStack() as stack:
                    try:
                        self._prepare(work, stack)
                        self._scenario()
                    except StepFailed:
                        pass
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return DrillResult(
            image=self.image_name if hasattr(self, "image_name") else self.spec_path.stem,
            started_at=started_at,
            steps=tuple(self.steps),
            time_to_access_seconds=self.time_to_access,
            time_to_revoke_seconds=self.time_to_revoke,
            audit_head=self.audit_head,
            scopes=tuple(self.windows),
            holders=self._holders(),
            drift=self.drift,
        )

    def _prepare(self, work: Path, stack: ExitStack) -> None:
        from builder.drill.sshd import LoopbackSshd
        from builder.drill.standins import IdentityProvider, ProtectedService
        from builder.drill.variant import prepare_variant
        from builder.fleet import drift
        from builder.release.spec import load_spec

        with self._step("prepare: drill keys, seal, build, unpack, stand-ins, sync check") as notes:
            spec = load_spec(self.spec_path)
            self.image_name = spec.name
            if not spec.agents:
                raise StepFailed("the spec has no agent to drill")
            self.agent = spec.agents[0]
            self.scopes = [s for s in spec.scopes if s.emergency_user]
            client_ids = [str(a.vars.get("client_id", a.name)) for a in spec.agents]
            self.idp = stack.enter_context(IdentityProvider(client_ids))
            # the service enrols what the enrolment says; it starts once that is known
            urls = {"identity_provider_url": self.idp.base_url}
            placeholder = ProtectedService(self.idp, [])
            stack.callback(placeholder.stop)
            urls["service_url"] = urls["breakglass_url"] = placeholder.base_url
            variant = prepare_variant(self.spec_path, work, urls, dt.datetime.now(dt.UTC))
            self.variant, self.root = variant, variant.root
            enrolment = drift.load_enrolment(self.enrolment_override or variant.enrolment_path)
            placeholder.enrolled_publics = frozenset(
                c.public for c in enrolment.credentials if c.kind == "token" and c.public
            )
            placeholder.start()
            self.service = placeholder
            self.sshd = LoopbackSshd(
                self.root, work / "sshd", tuple(s.emergency_user or "" for s in self.scopes)
            )
            stack.callback(self.sshd.stop)  # before start: an interrupt mid-start still stops it
            self.sshd.start()
            sealed = drift.sealed_from_manifest(self.root / "etc/breakglass/manifest.json")
            report = drift.compare(sealed, enrolment.credentials, dt.datetime.now(dt.UTC))
            self.drift = tuple(e.to_dict() for e in report.entries)
            bad = [
                f"{e.scope}/{e.name} {e.status}"
                for e in report.entries
                if e.status != drift.IN_SYNC
            ]
            if bad:
                raise StepFailed(
                    "sealed credentials do not match what the service enrolled: " + ", ".join(bad)
                )
            notes.append(
                f"image {spec.name} {spec.version}; {len(report.entries)} credentials in sync"
            )
            notes.append(
                f"stand-ins on 127.0.0.1:{self.idp.port},{self.service.port}; sshd on :{self.sshd.port}"
            )
            if self.unsafe_break == "frozen-clock":
                notes.append("UNSAFE: host clock frozen at unseal, this drill must fail at step 5")

    def _scenario(self) -> None:
        with self._step("1. normal mode: agent through the identity provider") as notes:
            ok, line = self._agent()
            if not ok or "route=normal" not in line:
                raise StepFailed(f"agent failed in normal mode: {line}")
            notes.append(line)
        with self._step("2. outage: identity provider stopped, agent fails") as notes:
            self.idp.stop()
            self.t_outage = self.clock.now()
            ok, line = self._agent()
            if ok:
                raise StepFailed(f"agent still succeeded with the identity provider down: {line}")
            notes.append(line)
        windows = [self.agent.scope] + [s.name for s in self.scopes if s.name != self.agent.scope]
        self.windows = windows
        for n, scope in enumerate(windows):
            self.access_from[scope] = (
                self.t_outage if n == 0 and self.t_outage is not None else self.clock.now()
            )
            suffix = f" [{scope}]" if len(windows) > 1 else ""
            expires = self._open(scope, suffix)
            self._use(scope, suffix, expires)
            self._expire(scope, suffix, expires)
        self._audit()

    def _approvers(self) -> list[str]:
        from builder.release.spec import load_spec

        policy = load_spec(self.variant.spec_path).policy
        groups = sorted(policy.groups, key=lambda g: g.threshold)[: policy.group_threshold]
        return [m for g in groups for m in g.members[: g.threshold]]

    def _open(self, scope: str, suffix: str) -> float:
        from builder.drill.variant import REQUESTER

        with self._step(f"3. request, approvals, unseal{suffix}") as notes:
            work = self.variant.spec_path.parent
            request_file = work / f"request-{scope}.json"
            req = self._json(self._cmd(
                "host", "request", "--root", str(self.root), "--scope", scope, "--ttl", f"{self.ttl}s",
                "--reason", "break-glass drill", "--requester", REQUESTER, "--out", str(request_file), "--json",
            ), "host request")  # fmt: skip
            approvals = []
            for name in self._approvers():
                k = self.variant.keys[name]
                out = work / f"approval-{scope}-{name}.json"
                self._json(self._cmd(
                    "approve", str(request_file), "--identity", str(k.identity), "--signing-key",
                    str(k.signing_key), "--approver", name, "--yes", "--out", str(out), "--json",
                    "--receipts", str(work / "receipts"),  # drill receipts stay with the drill
                ), f"approve by {name}")  # fmt: skip
                approvals.append(str(out))
            if self.unsafe_break == "frozen-clock" and not self.host_env:
                self._freeze_host_clock(notes)
            result = self._json(
                self._cmd(
                    "host",
                    "unseal",
                    "--root",
                    str(self.root),
                    req["request_id"],
                    *approvals,
                    "--json",
                ),
                "host unseal",
            )
            if result.get("state") != "ACTIVE" or result.get("scope") != scope:
                raise StepFailed(
                    f"unseal left the host {result.get('state')}, not ACTIVE for {scope}"
                )
            expires_at = dt.datetime.fromisoformat(str(result["expires_at"]).replace("Z", "+00:00"))
            notes.append(
                f"{len(approvals)} approvals ({', '.join(self._approvers())}); active until {result['expires_at']}"
            )
            for path in sorted((self.root / "run/breakglass" / scope).glob("*")):
                self.secrets.append(path.read_bytes().strip())
        return self.clock.now() + (expires_at.timestamp() - time.time())

    def _use(self, scope: str, suffix: str, expires: float) -> None:
        with self._step(f"4. break-glass access{suffix}") as notes:
            if scope == self.agent.scope:
                ok, line = self._agent()
                if not ok or "route=breakglass" not in line:
                    raise StepFailed(
                        f"agent failed on the break-glass route: {line}{_late(expires, self.clock.now())}"
                    )
                notes.append(line)
            for s in self.scopes:
                if s.name == scope and s.emergency_user:
                    key = self._keep_key(scope)
                    login = self.sshd.login(s.emergency_user, key)
                    self.log.append(login.detail)
                    if not login.ok:
                        raise StepFailed(login.detail + _late(expires, self.clock.now()))
                    notes.append(login.detail)
            # every access path of the scope works now
            self.time_to_access[scope] = self.clock.now() - self.access_from[scope]

    def _keep_key(self, scope: str) -> Path:
        # A copy of the key, to prove after expiry that the server refuses it, not that it is gone.
        keys = [
            p
            for p in (self.root / "run/breakglass" / scope).glob("*")
            if b"PRIVATE KEY" in p.read_bytes()
        ]
        if not keys:
            raise StepFailed(f"no unsealed ssh key for scope {scope}")
        copy = self.variant.spec_path.parent / f"kept-{scope}.key"
        shutil.copyfile(keys[0], copy)
        copy.chmod(0o600)
        return copy

    def _freeze_host_clock(self, notes: list[str]) -> None:
        from builder.host.clock import FROZEN_ENV

        moment = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.host_env[FROZEN_ENV] = moment
        self.sshd.set_env(self.host_env)
        notes.append(f"UNSAFE: host clock frozen at {moment}")

    def _expire(self, scope: str, suffix: str, expires: float) -> None:
        with self._step(f"5. expiry: access revoked, no plaintext{suffix}") as notes:
            time.sleep(max(0.0, expires - self.clock.now()))
            deadline = expires + REVOKE_GRACE_SECONDS
            while True:
                # what the image's expiry timer runs; on a host it fires every few seconds
                state = self._json(
                    self._cmd("host", "tick", "--root", str(self.root), "--json"), "host tick"
                )
                still = self._still_open(scope)
                if not still:
                    revoked_at = self.clock.now()
                    break
                if self.clock.now() >= deadline:
                    left = _plaintext(self.root)
                    raise StepFailed(
                        f"access through {scope} still works {REVOKE_GRACE_SECONDS:.0f} s after "
                        f"the ttl ended ({', '.join(still)}); host {state.get('state')}, "
                        f"{len(left)} plaintext file(s) remain"
                    )
                time.sleep(TICK_INTERVAL_SECONDS)
            self.time_to_revoke[scope] = revoked_at - expires
            if state.get("state") != "DORMANT":
                raise StepFailed(f"host is {state.get('state')} after expiry, not DORMANT")
            left = _plaintext(self.root)
            if left:
                raise StepFailed(
                    f"{len(left)} plaintext file(s) remain under run/breakglass after expiry"
                )
            notes.append(
                f"revoked {revoked_at - expires:.2f} s after expiry; host DORMANT; no plaintext"
            )

    def _still_open(self, scope: str) -> list[str]:
        """The access paths of ``scope`` that still work; empty when all are closed."""
        still = []
        if scope == self.agent.scope:
            ok, line = self._agent()
            if ok:
                still.append(f"agent {line.split(' ', 1)[-1]}")
        for s in self.scopes:
            kept = self.variant.spec_path.parent / f"kept-{scope}.key"
            if s.name == scope and s.emergency_user and kept.exists():
                login = self.sshd.login(s.emergency_user, kept)
                self.log.append(login.detail)
                if login.ok:
                    still.append(login.detail)
        return still

    def _audit(self) -> None:
        with self._step("6. audit log verifies and records every step") as notes:
            verified = self._json(
                self._cmd("host", "audit", "verify", "--root", str(self.root), "--json"),
                "audit verify",
            )
            self.audit_head = str(verified.get("head"))
            events = self._json(
                self._cmd("host", "audit", "show", "--root", str(self.root), "--json"), "audit show"
            )
            names = {e.get("event") for e in events if isinstance(e, dict)}
            missing = [e for e in AUDIT_EVENTS if e not in names]
            if missing:
                raise StepFailed(f"the audit log lacks {', '.join(missing)}")
            audit_bytes = (self.root / "var/lib/breakglass/audit.jsonl").read_bytes()
            leaks = [
                i
                for i, s in enumerate(self.secrets)
                if s and (s in audit_bytes or s.decode("utf-8", "replace") in "\n".join(self.log))
            ]
            if leaks:
                raise StepFailed("a drill credential appears in the audit log or the drill log")
            notes.append(
                f"{verified.get('events')} events, chain ok; no drill credential in audit or logs"
            )

    def _holders(self) -> tuple[Holder, ...]:
        from builder.drill.holders import load_bundle, read_checkins, roll_call
        from builder.release.spec import load_spec

        try:
            spec = load_spec(self.spec_path)
            if not spec.sealed_path.exists():
                return ()
            bundle = load_bundle(spec.sealed_path)
            checkins = read_checkins(
                self.checkins or spec.path.with_name(f"{spec.name}.checkins.jsonl")
            )
        except InputError:
            return ()
        return tuple(Holder(a, t) for a, t in roll_call(bundle, checkins).items())


def _late(expires: float, now: float) -> str:
    """Why a step-4 failure may be the clock's, not the path's: the window had already ended."""
    if now < expires:
        return ""
    return f"; the window had ended {now - expires:.1f} s before, raise --ttl on a loaded machine"


def _plaintext(root: Path) -> list[Path]:
    # the activation grant is a public record, not plaintext: it is not counted
    return [p for p in (root / "run/breakglass").rglob("*") if p.is_file() and p.name != GRANT_NAME]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line]
    return lines[-1][:200] if lines else "no message"
