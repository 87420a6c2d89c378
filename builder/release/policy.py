"""Who may open an image: its approvers and the quorum policy, parsed from the spec.

Part of the strict spec parse (``builder.release.spec``): the two-person rule, group
thresholds, TTL caps and rotation are checked here, every error located at
the value that breaks it.
"""

from __future__ import annotations

import base64
from typing import Any

from builder.approval.quorum import Group, fewest
from builder.core import agecrypt
from builder.core.errors import InputError
from builder.core.record import record
from builder.core.yamlfile import Node, node_duration, node_name, unique

MAX_TTL_CAP = 24 * 3600
SIGNING_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "sk-ssh-ed25519@openssh.com", "ecdsa-sha2-nistp256")


@record
class Approver:
    name: str
    recipient: str
    signing_key: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "recipient": self.recipient, "signing_key": self.signing_key}


@record
class Policy:
    group_threshold: int
    groups: tuple[Group, ...]
    allow_single_approver: bool
    justification: str | None
    max_ttl: int
    request_lifetime: int
    rotate_every: int
    on_activate: tuple[str, ...] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "group_threshold": self.group_threshold,
            "groups": [g.to_dict() for g in self.groups],
            "allow_single_approver": self.allow_single_approver,
            "justification": self.justification,
            "max_ttl_seconds": self.max_ttl,
            "request_lifetime_seconds": self.request_lifetime,
            "rotate_every_seconds": self.rotate_every,
            "on_activate": list(self.on_activate) if self.on_activate is not None else None,
        }


def parse_approvers(node: Node) -> tuple[Approver, ...]:
    out: list[Approver] = []
    names: set[str] = set()
    recipients: set[str] = set()
    for item in node.items("approvers"):
        item.mapping(
            "an approver",
            {"name", "recipient", "signing_key"},
            {"name", "recipient", "signing_key"},
        )
        name = node_name(item.get("name"), "approver name")
        unique(item.get("name"), names, name, "approver")
        rnode = item.get("recipient")
        recipient = rnode.text("recipient").strip()
        try:
            agecrypt.recipient_kind(recipient)
        except InputError as e:
            raise rnode.error(f"approver '{name}': {e.message}") from None
        unique(rnode, recipients, recipient, "approver recipient")
        knode = item.get("signing_key")
        key = knode.text("signing_key").strip()
        _check_signing_key(knode, key, name)
        out.append(Approver(name, recipient, key))
    if not out:
        raise node.error("approvers must not be empty")
    return tuple(out)


def _check_signing_key(node: Node, key: str, approver: str) -> None:
    parts = key.split()
    if len(parts) < 2 or parts[0] not in SIGNING_KEY_TYPES:
        raise node.error(f"approver '{approver}': signing_key must be an OpenSSH public key line")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise node.error(f"approver '{approver}': signing_key is not valid base64") from None
    if not blob.startswith(len(parts[0]).to_bytes(4, "big") + parts[0].encode()):
        raise node.error(f"approver '{approver}': signing_key type does not match its key data")


def parse_policy(node: Node, approvers: tuple[Approver, ...]) -> Policy:
    node.mapping(
        "policy",
        {
            "threshold",
            "groups",
            "group_threshold",
            "allow_single_approver",
            "justification",
            "max_ttl",
            "request_lifetime",
            "rotate_every",
            "on_activate",
        },
        {"max_ttl", "rotate_every"},
    )
    names = {a.name for a in approvers}
    allow_single = (
        node.get("allow_single_approver").flag("allow_single_approver")
        if node.has("allow_single_approver")
        else False
    )
    justification = node.get("justification").opt_text("justification")
    if node.has("groups") == node.has("threshold"):
        raise node.error("policy needs exactly one of 'threshold' or 'groups'")
    if node.has("threshold"):
        tnode = node.get("threshold")
        groups: tuple[Group, ...] = (
            Group("default", tnode.integer("threshold"), tuple(a.name for a in approvers)),
        )
        group_threshold = 1
        where = {0: tnode}
    else:
        groups, where = _groups(node.get("groups"), names)
        gt_node = node.get("group_threshold")
        group_threshold = gt_node.integer("group_threshold") if node.has("group_threshold") else 1
        if not 1 <= group_threshold <= len(groups):
            raise gt_node.error(
                f"group_threshold {group_threshold} must be between 1 and {len(groups)}"
            )
    for i, g in enumerate(groups):
        if g.threshold < 1 or g.threshold > len(g.members):
            raise where[i].error(
                f"threshold {g.threshold} of group '{g.name}' must be between 1 and its "
                f"{len(g.members)} approvers"
            )
    if fewest(group_threshold, (g.threshold for g in groups)) < 2 and not allow_single:
        raise where[0].error(
            "a single approver could unseal alone (two-person rule)",
            hint="raise the threshold, or set allow_single_approver: true with a justification",
        )
    if allow_single and not justification:
        raise node.get("allow_single_approver").error("allow_single_approver needs a justification")
    max_ttl = node_duration(node.get("max_ttl"), "max_ttl")
    if max_ttl > MAX_TTL_CAP:
        raise node.get("max_ttl").error("max_ttl must be at most 24h")
    request_lifetime = (
        node_duration(node.get("request_lifetime"), "request_lifetime")
        if node.has("request_lifetime")
        else 1800
    )
    on_activate = node.get("on_activate").texts("on_activate") if node.has("on_activate") else None
    if on_activate is not None and not on_activate:
        raise node.get("on_activate").error("on_activate must name a command")
    return Policy(
        group_threshold=group_threshold,
        groups=groups,
        allow_single_approver=allow_single,
        justification=justification,
        max_ttl=max_ttl,
        request_lifetime=request_lifetime,
        rotate_every=node_duration(node.get("rotate_every"), "rotate_every"),
        on_activate=on_activate,
    )


def _groups(node: Node, names: set[str]) -> tuple[tuple[Group, ...], dict[int, Node]]:
    groups: list[Group] = []
    where: dict[int, Node] = {}
    seen: set[str] = set()
    members_seen: set[str] = set()
    for i, item in enumerate(node.items("groups")):
        item.mapping("a group", {"name", "threshold", "members"}, {"name", "threshold", "members"})
        gname = node_name(item.get("name"), "group name")
        unique(item.get("name"), seen, gname, "group")
        members = item.get("members").texts("members")
        for m in members:
            if m not in names:
                raise item.get("members").error(f"group '{gname}' names unknown approver '{m}'")
            unique(item.get("members"), members_seen, m, "group member")
        where[i] = item.get("threshold")
        groups.append(Group(gname, item.get("threshold").integer("threshold"), members))
    if not groups:
        raise node.error("groups must not be empty")
    return tuple(groups), where
