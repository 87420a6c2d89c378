"""What the host reads from its image: the manifest and the sealed bundle.

The one place the host runtime reads ``etc/breakglass/manifest.json`` and
the sealed bundle, reduced to the fields the runtime uses. The sealed bundle
is parsed by ``builder.release.bundle`` after its bytes are checked against the
digest the manifest records. Images carry it twice: ``sealed.yaml`` as
committed, and ``sealed.json``, its canonical JSON, which the host reads
with ``json`` (the YAML round-trip loader costs tens of milliseconds per
unseal); an image that lists no JSON copy is read from the YAML. The
manifest is read here with
``json`` (and checked to be canonical) rather than through
``builder.release.manifest``, which pulls in the spec and YAML layers: status,
request and unseal should not pay for them on every call.
"""

from __future__ import annotations

from builder.core import bounded
from builder.core.canonical import digest, dumps
from builder.core.errors import CheckFailed, InputError
from builder.host.layout import AGENTS, BUNDLE_JSON

TYPE_CHECKING = False  # typing and dataclasses (inspect, re...) cost every host command
if TYPE_CHECKING:
    from os import PathLike
    from typing import Any

    from builder.host.layout import Layout
    from builder.release.bundle import SealedScope


class _Value:
    """Equality and repr by the fields in ``__slots__``: what ``@dataclass`` gave, without its import."""

    __slots__: tuple[str, ...] = ()

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._fields() == self._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Approver(_Value):
    __slots__ = ("name", "recipient", "signing_key")

    def __init__(self, name: str, recipient: str, signing_key: str) -> None:
        self.name, self.recipient, self.signing_key = name, recipient, signing_key


class Credential(_Value):
    __slots__ = ("kind", "name", "public")

    def __init__(self, name: str, kind: str, public: str | None) -> None:
        self.name, self.kind, self.public = name, kind, public


class Scope(_Value):
    __slots__ = ("credentials", "emergency_user", "max_ttl_seconds", "name", "unseal_recipient")

    def __init__(
        self,
        name: str,
        max_ttl_seconds: int,
        unseal_recipient: str,
        emergency_user: str | None,
        credentials: tuple[Credential, ...],
    ) -> None:
        self.name, self.max_ttl_seconds, self.unseal_recipient = (
            name,
            max_ttl_seconds,
            unseal_recipient,
        )
        self.emergency_user, self.credentials = emergency_user, credentials


class Agent(_Value):
    __slots__ = ("breakglass", "config_name", "name", "scope")

    def __init__(self, name: str, scope: str, config_name: str, breakglass: str) -> None:
        self.name, self.scope, self.config_name = name, scope, config_name
        self.breakglass = breakglass  # path of the dormant overlay, relative to the root


class HostImage(_Value):
    """The manifest as the host runtime sees it."""

    __slots__ = (
        "agents",
        "approvers",
        "bundle_digest",
        "bundle_json_digest",
        "manifest_digest",
        "name",
        "on_activate",
        "request_lifetime_seconds",
        "scopes",
        "version",
    )  # fmt: skip

    def __init__(
        self,
        *,
        name: str,
        version: str,
        manifest_digest: str,
        bundle_digest: str,
        bundle_json_digest: str | None,  # None: an image built before the JSON copy
        approvers: dict[str, Approver],
        request_lifetime_seconds: int,
        on_activate: tuple[str, ...] | None,
        scopes: dict[str, Scope],
        agents: tuple[Agent, ...],
    ) -> None:
        self.name, self.version, self.manifest_digest = name, version, manifest_digest
        self.bundle_digest, self.bundle_json_digest = bundle_digest, bundle_json_digest
        self.approvers, self.request_lifetime_seconds = approvers, request_lifetime_seconds
        self.on_activate, self.scopes, self.agents = on_activate, scopes, agents

    def scope(self, name: str) -> Scope:
        """The named scope; raises InputError when the image does not have it."""
        try:
            return self.scopes[name]
        except KeyError:
            known = ", ".join(sorted(self.scopes)) or "none"
            raise InputError(f"the image has no scope {name!r} (it has: {known})") from None


def _get(doc: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(doc, dict) or key not in doc or not isinstance(doc[key], kind):
        raise InputError(f"manifest: {what}{key} is missing or malformed")
    return doc[key]


def load_image(layout: Layout) -> HostImage:
    """Parse the image's manifest; raises InputError when it is missing or malformed."""
    return read_image(layout.manifest)


def read_image(manifest: str | PathLike[str]) -> HostImage:
    """Parse the manifest at ``manifest`` (``load_image``, given the file's path)."""
    try:
        raw = bounded.read(manifest, "manifest")
    except OSError as e:
        raise InputError(
            f"cannot read the image manifest ({e.strerror})",
            where=str(manifest),
            hint="--root must be the root of an installed image; on a dev machine make one with "
            "`breakglass host install dist/NAME/VERSION --root DIR`",
        ) from None
    doc = bounded.load_json(raw, "manifest", where=str(manifest))
    if dumps(doc) != raw:
        raise CheckFailed(
            "the image manifest is not in canonical form", hint="the image was altered"
        )
    image = _get(doc, "image", dict, "")
    policy = _get(doc, "policy", dict, "")
    approvers = {}
    for a in _get(policy, "approvers", list, "policy."):
        name = _get(a, "name", str, "approver ")
        approvers[name] = Approver(
            name, _get(a, "recipient", str, "approver "), _get(a, "signing_key", str, "approver ")
        )
    if not approvers:
        raise InputError("manifest: the policy lists no approvers")
    hook = policy.get("on_activate")
    if hook is not None and (
        not isinstance(hook, list) or not hook or not all(isinstance(x, str) for x in hook)
    ):
        raise InputError("manifest: policy.on_activate must be null or a list of strings")
    scopes = {}
    for s in _get(doc, "scopes", list, ""):
        creds = tuple(
            Credential(
                _get(c, "name", str, "credential "),
                _get(c, "kind", str, "credential "),
                c.get("public"),
            )
            for c in _get(s, "credentials", list, "scope ")
        )
        name = _get(s, "name", str, "scope ")
        if name == AGENTS or name.startswith("."):
            raise InputError(f"manifest: scope name {name!r} is reserved on the host")
        scopes[name] = Scope(
            name=name,
            max_ttl_seconds=_get(s, "max_ttl_seconds", int, "scope "),
            unseal_recipient=_get(s, "unseal_recipient", str, "scope "),
            emergency_user=s.get("emergency_user"),
            credentials=creds,
        )
    agents = tuple(
        Agent(
            _get(a, "name", str, "agent "),
            _get(a, "scope", str, "agent "),
            _get(a, "config_name", str, "agent "),
            _get(a, "breakglass", str, "agent "),
        )
        for a in _get(doc, "agents", list, "")
    )
    listed = doc.get("files")
    json_copy = listed.get(BUNDLE_JSON) if isinstance(listed, dict) else None
    return HostImage(
        name=_get(image, "name", str, "image."),
        version=_get(image, "version", str, "image."),
        manifest_digest=digest(raw),
        bundle_digest=_get(_get(doc, "sealed_bundle", dict, ""), "digest", str, "sealed_bundle."),
        bundle_json_digest=(
            None if json_copy is None else _get(json_copy, "digest", str, f"files.{BUNDLE_JSON}.")
        ),
        approvers=approvers,
        request_lifetime_seconds=_get(policy, "request_lifetime_seconds", int, "policy."),
        on_activate=tuple(hook) if hook else None,
        scopes=scopes,
        agents=agents,
    )


def load_sealed_scope(layout: Layout, image: HostImage, scope: str) -> SealedScope:
    """The named scope of the sealed bundle, after checking the bundle's digest against the manifest.

    Raises CheckFailed when the bundle differs from what the manifest records,
    InputError when it is malformed or lacks the scope.
    """
    from builder.release.bundle import SealedBundle  # only the request and unseal paths need it

    as_json = image.bundle_json_digest is not None
    path = layout.bundle_json if as_json else layout.bundle
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read the sealed bundle ({e.strerror})", where=str(path)) from None
    if digest(raw) != (image.bundle_json_digest if as_json else image.bundle_digest):
        raise CheckFailed("the sealed bundle does not match the digest in the image manifest")
    if as_json:
        return SealedBundle.from_json(raw, str(path)).scope(scope)
    try:
        return SealedBundle.from_bytes(raw, str(path)).scope(scope)
    except ImportError:
        # a host runtime from an image carries no YAML library: its image has the JSON copy
        raise InputError(
            "the image manifest lists no json copy of the sealed bundle", where=str(path)
        ) from None
