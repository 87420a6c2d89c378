"""The sealed bundle (``images/NAME.sealed.yaml``): ciphertext only, safe to commit.

Per scope: U's public key (the unseal recipient), each credential encrypted to
U with its public part, and one SLIP-39 share of U per approver, encrypted to
that approver. ``SealedBundle.from_bytes`` checks everything it reads; the
bytes are what the manifest hashes and the image carries.
"""

from __future__ import annotations

import io
from typing import Any

from builder.approval.quorum import Group, fewest
from builder.core import agecrypt, bounded
from builder.core.errors import InputError
from builder.core.record import record
from builder.core.yamlfile import Node

FORMAT = "breakglass-sealed-bundle/1"
ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----"
ARMOR_END = "-----END AGE ENCRYPTED FILE-----"
CREDENTIAL_KINDS = ("ssh-ed25519", "token", "password", "opaque")


@record
class SealedCredential:
    name: str
    kind: str
    public: str | None
    fingerprint: str | None
    ciphertext: str

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.public is not None:
            out["public"] = self.public
        if self.fingerprint is not None:
            out["fingerprint"] = self.fingerprint
        out["ciphertext"] = self.ciphertext
        return out


@record
class SealedScope:
    name: str
    unseal_recipient: str
    group_threshold: int
    groups: tuple[Group, ...]
    shares: dict[str, str]
    credentials: tuple[SealedCredential, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unseal_recipient": self.unseal_recipient,
            "group_threshold": self.group_threshold,
            "groups": [g.to_dict() for g in self.groups],
            "shares": dict(sorted(self.shares.items())),
            "credentials": [c.to_dict() for c in self.credentials],
        }

    def ciphertext(self, credential: str) -> str:
        """The named credential's ciphertext; raises InputError when the scope lacks it."""
        for c in self.credentials:
            if c.name == credential:
                return c.ciphertext
        raise InputError(f"sealed scope '{self.name}' has no credential '{credential}'")

    @property
    def quorum(self) -> int:
        """The fewest shares that can open this scope."""
        return fewest(self.group_threshold, (g.threshold for g in self.groups))


@record
class SealedBundle:
    image: str
    created: str
    rotate_by: str
    policy_digest: str
    scopes: tuple[SealedScope, ...]

    def scope(self, name: str) -> SealedScope:
        for s in self.scopes:
            if s.name == name:
                return s
        raise InputError(f"the sealed bundle has no scope '{name}'")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "image": self.image,
            "created": self.created,
            "rotate_by": self.rotate_by,
            "policy_digest": self.policy_digest,
            "scopes": [s.to_dict() for s in self.scopes],
        }

    def to_bytes(self) -> bytes:
        """YAML with the armored ciphertext as literal blocks, so it reads and diffs well."""
        from builder.core.yamlfile import round_trip_yaml

        doc = _literal_armor(self.to_dict())
        out = io.StringIO()
        yaml = round_trip_yaml()
        yaml.width = 4096
        out.write("# breakglass sealed bundle: ciphertext only, safe to commit.\n")
        out.write("# Made by `breakglass seal`; rotate with `breakglass seal --rotate`.\n")
        yaml.dump(doc, out)
        return out.getvalue().encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, filename: str) -> SealedBundle:
        """Parse and check a bundle. Raises InputError with ``file:line:col``."""
        bounded.check_size(len(data), "sealed bundle", filename)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("sealed bundle is not UTF-8", where=filename) from None
        from builder.core.yamlfile import fast_loads, loads

        fast = fast_loads(text, filename)
        if fast is not None:
            try:
                return cls._from_node(fast)
            except InputError:
                pass  # parsed again below, for a message with its line and column
        return cls._from_node(loads(text, filename, "sealed bundle"))

    @classmethod
    def from_json(cls, data: bytes, filename: str) -> SealedBundle:
        """Parse the canonical JSON copy the image carries (``to_dict`` in canonical JSON).

        The same checks as ``from_bytes``, with ``json`` instead of the YAML
        loader. Raises InputError when it is malformed or not canonical.
        """
        from builder.core.canonical import dumps

        try:
            doc = bounded.load_json(data, "sealed bundle", filename)
        except bounded.NotJson:
            raise InputError("sealed bundle is not json", where=filename) from None
        bundle = cls._from_node(Node(doc, filename, (0, 0)))
        if dumps(bundle.to_dict()) != data:
            raise InputError("sealed bundle is not in canonical form", where=filename)
        return bundle

    @classmethod
    def _from_node(cls, root: Node) -> SealedBundle:
        root.mapping(
            "the sealed bundle",
            {"format", "image", "created", "rotate_by", "policy_digest", "scopes"},
            {"format", "image", "created", "rotate_by", "policy_digest", "scopes"},
        )
        fmt = root.get("format")
        if fmt.value != FORMAT:
            raise fmt.error(f"unsupported sealed bundle format {fmt.value!r} (want {FORMAT})")
        scopes = tuple(_scope(item) for item in root.get("scopes").items("scopes"))
        if not scopes:
            raise root.get("scopes").error("the sealed bundle has no scopes")
        names = [s.name for s in scopes]
        if len(set(names)) != len(names):
            raise root.get("scopes").error("duplicate scope in the sealed bundle")
        return cls(
            image=root.get("image").text("image"),
            created=root.get("created").text("created"),
            rotate_by=root.get("rotate_by").text("rotate_by"),
            policy_digest=root.get("policy_digest").text("policy_digest"),
            scopes=scopes,
        )


def _scope(node: Node) -> SealedScope:
    keys = {"name", "unseal_recipient", "group_threshold", "groups", "shares", "credentials"}
    node.mapping("a sealed scope", keys, keys)
    name = node.get("name").text("scope name")
    recipient_node = node.get("unseal_recipient")
    recipient = recipient_node.text("unseal_recipient")
    try:
        kind = agecrypt.recipient_kind(recipient)
    except InputError as e:
        raise recipient_node.error(f"scope '{name}': {e.message}") from None
    if kind != "x25519":
        raise recipient_node.error(f"scope '{name}': unseal_recipient must be an age X25519 key")
    groups = []
    for g in node.get("groups").items("groups"):
        g.mapping(
            "a sealed group", {"name", "threshold", "members"}, {"name", "threshold", "members"}
        )
        groups.append(
            Group(
                g.get("name").text("group name"),
                g.get("threshold").integer("threshold"),
                g.get("members").texts("members"),
            )
        )
    shares_node = node.get("shares")
    if not isinstance(shares_node.value, dict) or not shares_node.value:
        raise shares_node.error(f"scope '{name}': shares must be a non-empty mapping")
    shares = {str(k): _armored(shares_node.get(str(k)), f"share of {k}") for k in shares_node.value}
    members = {m for g in groups for m in g.members}
    if set(shares) != members:
        raise shares_node.error(f"scope '{name}': shares do not match the group members")
    credentials = []
    for c in node.get("credentials").items("credentials"):
        c.mapping(
            "a sealed credential",
            {"name", "kind", "public", "fingerprint", "ciphertext"},
            {"name", "kind", "ciphertext"},
        )
        kind_node = c.get("kind")
        if kind_node.value not in CREDENTIAL_KINDS:
            raise kind_node.error(f"unknown credential kind {kind_node.value!r}")
        credentials.append(
            SealedCredential(
                c.get("name").text("credential name"),
                str(kind_node.value),
                c.get("public").opt_text("public"),
                c.get("fingerprint").opt_text("fingerprint"),
                _armored(c.get("ciphertext"), "credential ciphertext"),
            )
        )
    scope = SealedScope(
        name,
        recipient,
        node.get("group_threshold").integer("group_threshold"),
        tuple(groups),
        shares,
        tuple(credentials),
    )
    if not groups or not 1 <= scope.group_threshold <= len(groups):
        raise node.get("group_threshold").error(f"scope '{name}': bad group threshold")
    if any(not 1 <= g.threshold <= len(g.members) for g in groups):
        raise node.get("groups").error(f"scope '{name}': a group threshold is out of range")
    return scope


def _armored(node: Node, what: str) -> str:
    text = node.text(what)
    if not text.lstrip().startswith(ARMOR_BEGIN):
        raise node.error(f"{what} is not an armored age file")
    if not text.rstrip().endswith(ARMOR_END):
        raise node.error(f"{what} in the sealed bundle is truncated armor (no end line)")
    return text


def _literal_armor(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _literal_armor(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal_armor(v) for v in value]
    if isinstance(value, str) and value.startswith(ARMOR_BEGIN):
        from ruamel.yaml.scalarstring import LiteralScalarString

        return LiteralScalarString(value)
    return value
