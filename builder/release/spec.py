"""The image spec (``images/NAME.yaml``): parsed strictly into frozen records.

An ``ImageSpec`` that exists is valid: ``load`` checks types, unknown keys
(suggesting the near miss), recipients, signing keys and the policy rules
(two-person rule, thresholds, TTL caps, scopes without wildcards, rotation),
and every error names ``file:line:col``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from builder.core import canonical, duration
from builder.core.errors import InputError
from builder.core.record import field, record
from builder.core.yamlfile import (
    Node,
    fast_plain_loads,
    loads,
    node_duration,
    node_name,
    read_text,
    to_plain,
    unique,
)
from builder.release.enrol_targets import EnrolTarget, parse_targets
from builder.release.policy import Approver, Policy, parse_approvers, parse_policy
from builder.release.sudo_policy import shell_escape

SEMVER_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)\Z")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
# An exact sudoers command: an absolute path and plain arguments, single spaces.
# Everything sudoers reads as syntax is out: a ',' would start a second command
# (`/bin/true, /bin/sh`), and '*', '?', '[' and backslash are sudo's wildcards and escapes.
SUDO_COMMAND_RE = re.compile(r"^/[A-Za-z0-9_./+-]+( [A-Za-z0-9_./@%+-]+)*\Z")
GENERATED_KINDS = ("ssh-ed25519", "token", "password")
SUPPLIED_KINDS = ("token", "password", "opaque")


@record
class Scope:
    name: str
    description: str
    max_ttl: int
    emergency_user: str | None
    sudo: tuple[str, ...]


@record
class Credential:
    """Where a credential comes from: ``generate`` a kind, or read ``from_file`` / ``from_env``."""

    name: str
    scope: str
    kind: str
    generate: bool
    from_file: str | None = None
    from_env: str | None = None
    # where the fleet must accept the public part (``builder.release.enrol_targets``); not in the manifest
    enrol: tuple[EnrolTarget, ...] = field(default=(), compare=False)


@record
class Agent:
    name: str
    scope: str
    config_name: str
    normal_template: str
    breakglass_template: str
    vars: dict[str, Any] = field(default_factory=dict, hash=False)
    # where the spec names each template ("normal", "breakglass"), for render errors
    template_where: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@record
class ImageSpec:
    path: Path
    name: str
    version: str
    description: str
    base: str | None
    templates_dir: Path
    approvers: tuple[Approver, ...]
    policy: Policy
    scopes: tuple[Scope, ...]
    credentials: tuple[Credential, ...]
    agents: tuple[Agent, ...]
    packer: dict[str, Any] | None = field(default=None, hash=False)

    @property
    def sealed_path(self) -> Path:
        return self.path.with_name(f"{self.name}.sealed.yaml")

    @property
    def enrolment_path(self) -> Path:
        return self.path.with_name(f"{self.name}.enrolment.json")

    def scope(self, name: str) -> Scope:
        for s in self.scopes:
            if s.name == name:
                return s
        raise InputError(f"no scope named '{name}' in {self.path}")

    def approver(self, name: str) -> Approver:
        for a in self.approvers:
            if a.name == name:
                return a
        raise InputError(f"no approver named '{name}' in {self.path}")

    def credentials_of(self, scope: str) -> tuple[Credential, ...]:
        return tuple(c for c in self.credentials if c.scope == scope)

    @property
    def policy_digest(self) -> str:
        """Digest of ``seal_inputs``: a bundle sealed for another policy is stale."""
        return canonical.digest(canonical.dumps(self.seal_inputs()))

    def seal_inputs(self) -> dict[str, Any]:
        """What a sealed bundle depends on; its digest tells a stale bundle from a current one."""
        return {
            "image": self.name,
            "approvers": [{"name": a.name, "recipient": a.recipient} for a in self.approvers],
            "group_threshold": self.policy.group_threshold,
            "groups": [g.to_dict() for g in self.policy.groups],
            "scopes": sorted(s.name for s in self.scopes),
            "credentials": [
                {"name": c.name, "scope": c.scope, "kind": c.kind} for c in self.credentials
            ],
        }


TOP_KEYS = {
    "name",
    "version",
    "description",
    "base",
    "templates",
    "approvers",
    "policy",
    "scopes",
    "credentials",
    "agents",
    "packer",
}


def load_spec(path: Path) -> ImageSpec:
    """Parse and validate a spec file. Raises InputError naming ``file:line:col`` and the problem.

    A plain spec is read with the C loader first (a tenth of the round-trip loader's time);
    any error, or a document the two loaders might read differently, goes to the round-trip
    loader, whose positions locate the message.
    """
    text = read_text(path)
    fast = fast_plain_loads(text, str(path))
    if fast is not None:
        try:
            return _spec(path, fast)
        except InputError:
            pass  # parsed again below, for a message with its line and column
    return _spec(path, loads(text, str(path)))


def template_where(spec: ImageSpec, agent: Agent, mode: str) -> str | None:
    """Where ``spec`` names ``agent``'s ``mode`` template (``file:line:col``), for an error.

    A spec read by the fast loader has no positions: it is read again, with them.
    """
    where = agent.template_where.get(mode)
    if where is not None:
        return where
    try:
        again = _spec(spec.path, loads(read_text(spec.path), str(spec.path)))
    except InputError:
        return None  # the file changed since: the error names the template file instead
    return next((a.template_where.get(mode) for a in again.agents if a.name == agent.name), None)


def _spec(path: Path, root: Node) -> ImageSpec:
    root.mapping("the spec", TOP_KEYS, {"name", "version", "approvers", "policy", "scopes"})
    name = node_name(root.get("name"), "name")
    version_node = root.get("version")
    version = version_node.text("version")
    if not SEMVER_RE.match(version):
        raise version_node.error(f"version '{version}' is not semver (MAJOR.MINOR.PATCH)")
    approvers = parse_approvers(root.get("approvers"))
    policy = parse_policy(root.get("policy"), approvers)
    scopes = _scopes(root.get("scopes"), policy)
    credentials = _credentials(root.get("credentials"), scopes) if root.has("credentials") else ()
    agents = _agents(root.get("agents"), scopes) if root.has("agents") else ()
    for scope, scope_node in zip(scopes, root.get("scopes").items("scopes"), strict=True):
        if not any(c.scope == scope.name for c in credentials):
            raise scope_node.get("name").error(f"scope '{scope.name}' has no credential")
    templates = root.get("templates").opt_text("templates") or "../templates"
    packer = None
    if root.has("packer"):
        packer_node = root.get("packer")
        packer_node.mapping(
            "packer", {"builders", "variables", "provision_target", "base_disk"}, {"builders"}
        )
        packer = to_plain(packer_node.value)
    return ImageSpec(
        path=path,
        name=name,
        version=version,
        description=root.get("description").opt_text("description") or "",
        base=root.get("base").opt_text("base"),
        templates_dir=(path.parent / templates).resolve(),
        approvers=approvers,
        policy=policy,
        scopes=scopes,
        credentials=credentials,
        agents=agents,
        packer=packer,
    )


def _scopes(node: Node, policy: Policy) -> tuple[Scope, ...]:
    out: list[Scope] = []
    seen: set[str] = set()
    for item in node.items("scopes"):
        item.mapping(
            "a scope", {"name", "description", "max_ttl", "emergency_user", "sudo"}, {"name"}
        )
        name_node = item.get("name")
        raw = name_node.text("scope name")
        if any(ch in raw for ch in "*?[]"):
            raise name_node.error(f"scope '{raw}' contains a wildcard; name each scope exactly")
        name = node_name(name_node, "scope name")
        unique(name_node, seen, name, "scope")
        max_ttl = (
            node_duration(item.get("max_ttl"), "max_ttl") if item.has("max_ttl") else policy.max_ttl
        )
        if max_ttl > policy.max_ttl:
            raise item.get("max_ttl").error(
                f"scope '{name}' max_ttl exceeds the policy's max_ttl ({duration.format_seconds(policy.max_ttl)})"
            )
        user = item.get("emergency_user").opt_text("emergency_user")
        if user is not None and not USER_RE.match(user):
            raise item.get("emergency_user").error(
                f"emergency_user '{user}' is not a valid user name"
            )
        if user == "root":
            raise item.get("emergency_user").error(
                "emergency_user must not be root: the window would be a root login",
                hint="name a dedicated account and grant it exact sudo commands",
            )
        sudo = (
            tuple(_sudo_entry(entry) for entry in item.get("sudo").items("sudo"))
            if item.has("sudo")
            else ()
        )
        if sudo and user is None:
            raise item.get("sudo").error(f"scope '{name}' grants sudo but has no emergency_user")
        out.append(
            Scope(name, item.get("description").opt_text("description") or "", max_ttl, user, sudo)
        )
    if not out:
        raise node.error("scopes must not be empty")
    return tuple(out)


def _sudo_entry(entry: Node) -> str:
    """One sudo entry: a command string, or ``{command, allow_shell_escape: why}``.

    Raises InputError located at the entry when the command is not exact, or
    can give a root shell (``builder.release.sudo_policy``) without a justified opt-in.
    """
    justification = None
    node = entry
    if isinstance(entry.value, dict):
        entry.mapping(
            "a sudo entry", {"command", "allow_shell_escape"}, {"command", "allow_shell_escape"}
        )
        node = entry.get("command")
        justification = entry.get("allow_shell_escape").text("allow_shell_escape")
    command = node.text("each entry of sudo")
    if not SUDO_COMMAND_RE.match(command) or "ALL" in command.split():
        raise node.error(
            f"sudo entry '{command}' must be an exact command with an absolute path, "
            "no wildcards or sudoers syntax"
        )
    escape = shell_escape(command)
    if escape is not None and justification is None:
        why, hint = escape
        raise node.error(f"sudo entry '{command}' can give a root shell: {why}", hint=hint)
    return command


def _credentials(node: Node, scopes: tuple[Scope, ...]) -> tuple[Credential, ...]:
    out: list[Credential] = []
    seen: set[str] = set()
    scope_names = {s.name for s in scopes}
    for item in node.items("credentials"):
        item.mapping(
            "a credential",
            {"name", "scope", "generate", "from_file", "from_env", "kind", "enrol"},
            {"name"},
        )
        name = node_name(item.get("name"), "credential name")
        unique(item.get("name"), seen, name, "credential")
        if not item.has("scope"):
            raise item.error(f"credential '{name}' has no scope")
        scope = item.get("scope").text("scope")
        if scope not in scope_names:
            raise item.get("scope").error(f"credential '{name}' names unknown scope '{scope}'")
        sources = [k for k in ("generate", "from_file", "from_env") if item.has(k)]
        if len(sources) != 1:
            raise item.error(
                f"credential '{name}' needs exactly one of generate, from_file, from_env"
            )
        source = sources[0]
        if source == "generate":
            if item.has("kind"):
                raise item.get("kind").error(
                    "'kind' goes with from_file or from_env; generate names the kind"
                )
            kind = item.get("generate").text("generate")
            if kind not in GENERATED_KINDS:
                raise item.get("generate").error(
                    f"cannot generate '{kind}' (want one of {', '.join(GENERATED_KINDS)})"
                )
            out.append(Credential(name, scope, kind, True, enrol=_enrol(item, name)))
            continue
        kind = item.get("kind").text("kind") if item.has("kind") else "opaque"
        if kind not in SUPPLIED_KINDS:
            raise item.get("kind").error(
                f"kind '{kind}' must be one of {', '.join(SUPPLIED_KINDS)}"
            )
        value = item.get(source).text(source)
        out.append(
            Credential(
                name,
                scope,
                kind,
                False,
                from_file=value if source == "from_file" else None,
                from_env=value if source == "from_env" else None,
                enrol=_enrol(item, name),
            )
        )
    return tuple(out)


def _enrol(item: Node, name: str) -> tuple[EnrolTarget, ...]:
    return parse_targets(item.get("enrol"), name) if item.has("enrol") else ()


def _agents(node: Node, scopes: tuple[Scope, ...]) -> tuple[Agent, ...]:
    out: list[Agent] = []
    seen: set[str] = set()
    scope_names = {s.name for s in scopes}
    for item in node.items("agents"):
        item.mapping(
            "an agent",
            {"name", "scope", "config_name", "templates", "vars"},
            {"name", "scope", "config_name", "templates"},
        )
        name = node_name(item.get("name"), "agent name")
        unique(item.get("name"), seen, name, "agent")
        scope = item.get("scope").text("scope")
        if scope not in scope_names:
            raise item.get("scope").error(f"agent '{name}' names unknown scope '{scope}'")
        config_name = item.get("config_name").text("config_name")
        if "/" in config_name or config_name.startswith("."):
            raise item.get("config_name").error("config_name must be a plain file name")
        tnode = item.get("templates")
        tnode.mapping("templates", {"normal", "breakglass"}, {"normal", "breakglass"})
        templates = {
            mode: _template_name(tnode.get(mode), mode) for mode in ("normal", "breakglass")
        }
        variables = item.get("vars")
        if item.has("vars"):
            variables.mapping(
                "vars", set(variables.value) if isinstance(variables.value, dict) else set()
            )
        out.append(
            Agent(
                name,
                scope,
                config_name,
                templates["normal"],
                templates["breakglass"],
                to_plain(variables.value) if item.has("vars") else {},
                # positions only when read with them; ``template_where`` finds them otherwise
                {mode: tnode.get(mode).where for mode in templates}
                if hasattr(tnode.value, "lc")
                else {},
            )
        )
    return tuple(out)


def _template_name(node: Node, mode: str) -> str:
    """A template path relative to the templates folder; it may not leave that folder."""
    name = node.text(f"{mode} template")
    parts = name.replace("\\", "/").split("/")
    if name.startswith("/") or ".." in parts:
        raise node.error(f"{mode} template '{name}' must be a path inside the templates folder")
    return name
