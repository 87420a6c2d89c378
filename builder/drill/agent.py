"""The reference agent: deploys through the identity provider, or through break-glass when active.

It reads only what a real agent on the host can read: its rendered normal
config, its break-glass overlay as the host activated it under ``run/``, the
host state, and the unsealed token file the overlay names. It logs one line
per call with the route and the outcome, never the credential.

It does not second-guess ``expires_at``: like most automation holding a
bearer token, it keeps using the credential for as long as the host leaves
it in place. Revocation is the host's job (expiry wipes the token and the
overlay and writes the state back to DORMANT), and that is what a drill must
prove; an agent that stopped on its own would hide a host that never expires.

Run it as ``python -m builder.drill.agent --root ROOT --config-name agent.toml
--name deploy-agent``; exit 0 when the deploy call succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.core.payload import AGENTS_DIR, RUNTIME_DIR, STATE_DIR

TIMEOUT_SECONDS = 10.0  # generous: a loaded machine must not turn a slow reply into an outage


@dataclass(frozen=True)
class AgentOutcome:
    """What one run did: the route taken, whether the service accepted, and why not."""

    route: str  # "normal" or "breakglass"
    ok: bool
    detail: str

    def log_line(self, name: str) -> str:
        outcome = "ok" if self.ok else "failed"
        return f"agent={name} route={self.route} outcome={outcome} {self.detail}"


def run(root: Path, name: str, config_name: str) -> AgentOutcome:
    """Make one deploy call the way a real agent would; never raises for a failed call.

    The break-glass route is taken when the host state says the agent's scope
    is ACTIVE and the activated overlay exists; otherwise the normal route.
    Raises OSError or TOMLDecodeError only when the normal config is unreadable.
    """
    overlay = root / RUNTIME_DIR / "agents" / name / config_name
    normal = _load(root / AGENTS_DIR / name / "normal" / config_name)
    dormant = root / AGENTS_DIR / name / "breakglass" / config_name
    scope = None
    if dormant.exists():
        scope = _table(_load(dormant), "agent").get("scope")
    if scope is not None and overlay.exists() and active_scope(root) == scope:
        return _breakglass(root, _load(overlay))
    return _normal(normal)


def _normal(config: dict[str, Any]) -> AgentOutcome:
    idp = _table(config, "identity_provider")
    service = _table(config, "service")
    try:
        status, body = _post(
            str(idp["token_url"]), json.dumps({"client_id": idp["client_id"]}).encode(), None
        )
    except (OSError, KeyError) as e:
        return AgentOutcome("normal", False, f"step=token error={_why(e)}")
    if status != 200:
        return AgentOutcome("normal", False, f"step=token status={status}")
    try:
        token = json.loads(body)["access_token"]
    except (ValueError, KeyError, TypeError):
        return AgentOutcome("normal", False, "step=token error=malformed-response")
    return _call("normal", str(service.get("url", "")), token)


def _breakglass(root: Path, config: dict[str, Any]) -> AgentOutcome:
    service = _table(config, "service")
    token_file = str(service.get("token_file", ""))
    try:
        token = (root / token_file.lstrip("/")).read_text(encoding="utf-8").strip()
    except OSError as e:
        return AgentOutcome("breakglass", False, f"step=credential error={_why(e)}")
    return _call("breakglass", str(service.get("url", "")), token)


def _call(route: str, url: str, token: str) -> AgentOutcome:
    try:
        status, _ = _post(url, b"{}", token)
    except OSError as e:
        return AgentOutcome(route, False, f"step=service url={url} error={_why(e)}")
    return AgentOutcome(route, status == 200, f"step=service url={url} status={status}")


def _post(url: str, data: bytes, bearer: str | None) -> tuple[int, bytes]:
    if not url.startswith(("http://", "https://")):
        raise OSError(f"unsupported url {url!r}")
    request = urllib.request.Request(url, data=data, method="POST")  # noqa: S310 - scheme checked above
    request.add_header("Content-Type", "application/json")
    if bearer is not None:
        request.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            return int(response.status), response.read(65536)
    except urllib.error.HTTPError as e:
        return int(e.code), b""


def _why(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError):
        e = e.reason if isinstance(e.reason, BaseException) else e
    if isinstance(e, KeyError):
        return f"missing-key:{e.args[0]}"
    if isinstance(e, ConnectionRefusedError):
        return "connection-refused"
    if isinstance(e, TimeoutError):
        return "timeout"
    if isinstance(e, FileNotFoundError):
        return "not-found"
    return type(e).__name__


def _load(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def _table(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def active_scope(root: Path) -> str | None:
    """The scope the host state file says is ACTIVE and its unseal backs, or None.

    The state's active record must equal the activation grant the unseal left
    in the runtime directory (``builder.host.grant``): a state file written by
    hand opens nothing. A missing or bad file is None. The window's
    ``expires_at`` is deliberately not compared with any clock: see the
    module docstring.
    """
    from builder.host import grant

    try:
        state = json.loads((root / STATE_DIR / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(state, dict) or state.get("phase") != "ACTIVE":
        return None
    active = state.get("active")
    if not isinstance(active, dict) or grant.read(root) != active:
        return None
    scope = active.get("scope")
    return scope if isinstance(scope, str) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="breakglass-reference-agent", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("/"))
    parser.add_argument("--config-name", default="agent.toml")
    parser.add_argument("--name", default="deploy-agent")
    args = parser.parse_args(argv)
    try:
        outcome = run(args.root, args.name, args.config_name)
    except (OSError, tomllib.TOMLDecodeError) as e:
        line = f"agent={args.name} route=none outcome=failed error=config:{_why(e)}"
        print(line, file=sys.stderr)
        return 1
    print(outcome.log_line(args.name), flush=True)
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
