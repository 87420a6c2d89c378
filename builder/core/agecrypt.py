"""The age layer: every encryption and decryption in breakglass goes through here.

A recipient wraps, an identity unwraps (age's two one-method ideas). We accept
the recipients age itself accepts: native X25519 (``age1...``), SSH keys
(``ssh-ed25519 ...``, ``ssh-rsa ...``) and plugin recipients
(``age1yubikey1...``, encrypted through the plugin binary on PATH). Ciphertext
is always ASCII-armored so that it can sit in YAML, JSON and on paper.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bech32
import pyrage

from builder.core.errors import InputError, ToolMissing
from builder.core.secret import Secret

_SECRET_HRP = "age-secret-key-"  # noqa: S105 - the bech32 prefix, not a secret
# How every X25519 identity line starts (bech32 upper-cased, then the separator).
SECRET_KEY_PREFIX = _SECRET_HRP.upper() + "1"
_ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"

Recipient = Any  # a pyrage recipient object; pyrage ships no type information
Identity = Any


def recipient_kind(text: str) -> str:
    """Classify a recipient string: ``x25519``, ``ssh-ed25519``, ``ssh-rsa`` or ``plugin:NAME``.

    Raises InputError naming what is wrong when ``text`` is no recipient we know.
    """
    text = text.strip()
    if text.startswith("ssh-ed25519 ") or text.startswith("ssh-rsa "):
        kind = text.split(" ", 1)[0]
        try:
            pyrage.ssh.Recipient.from_str(text)
        except Exception as e:
            raise InputError(f"malformed {kind} recipient ({_reason(e)})") from None
        return kind
    if text.startswith("age1"):
        with contextlib.suppress(Exception):
            pyrage.x25519.Recipient.from_str(text)
            return "x25519"
        try:
            plugin = pyrage.plugin.Recipient.from_str(text)
        except Exception:
            raise InputError("malformed age recipient (bad bech32 or length)") from None
        return f"plugin:{plugin.plugin()}"
    raise InputError("unknown recipient type (want age1..., ssh-ed25519 ... or ssh-rsa ...)")


def parse_recipient(text: str) -> Recipient:
    kind = recipient_kind(text)
    text = text.strip()
    if kind == "x25519":
        return pyrage.x25519.Recipient.from_str(text)
    if kind.startswith("ssh-"):
        return pyrage.ssh.Recipient.from_str(text)
    return pyrage.plugin.Recipient.from_str(text)


class _PluginCallbacks:
    """Plugin prompts during encryption: recipients need no user interaction, so refuse any."""

    def display_message(self, message: str) -> None:
        pass

    def confirm(self, message: str, yes_string: str, no_string: str | None) -> bool | None:
        return None

    def request_public(self, message: str) -> str | None:
        return None

    def request_passphrase(self, description: str) -> str | None:
        return None


def encrypt(plaintext: Secret | bytes, recipients: Sequence[str]) -> str:
    """Encrypt to every recipient; return the armored age file. An empty list is an error."""
    if not recipients:
        raise InputError("refusing to encrypt to no recipients")
    native: list[Recipient] = []
    plugins: dict[str, list[Recipient]] = {}
    for text in recipients:
        kind = recipient_kind(text)
        if kind.startswith("plugin:"):
            plugins.setdefault(kind.split(":", 1)[1], []).append(
                pyrage.plugin.Recipient.from_str(text.strip())
            )
        else:
            native.append(parse_recipient(text))
    for name, recs in plugins.items():
        try:
            native.append(pyrage.plugin.RecipientPluginV1(name, recs, [], _PluginCallbacks()))
        except Exception as e:
            raise ToolMissing(
                f"age plugin 'age-plugin-{name}' is not usable ({_reason(e)})",
                hint=f"install age-plugin-{name} on PATH",
            ) from None
    data = plaintext.reveal() if isinstance(plaintext, Secret) else plaintext
    try:
        out: bytes = pyrage.encrypt(data, native, armored=True)
    except Exception as e:
        raise InputError(f"age encryption failed ({_reason(e)})") from None
    return out.decode("ascii")


def decrypt(ciphertext: str | bytes, identities: Sequence[Identity], *, what: str) -> Secret:
    """Decrypt an age file (armored or binary); ``what`` names it in the error.

    Raises InputError when the ciphertext is corrupt, truncated, or not for these identities.
    """
    if not identities:
        raise InputError("refusing to decrypt with no identities")
    data = ciphertext.encode("ascii", "replace") if isinstance(ciphertext, str) else ciphertext
    # age accepts whitespace before an armored file (YAML and paper copies add it); rage
    # does not, so drop it here rather than make every caller strip
    stripped = data.lstrip(b" \t\r\n")
    if stripped.startswith(_ARMOR_BEGIN):
        data = stripped
    try:
        return Secret(pyrage.decrypt(data, list(identities)))
    except Exception as e:
        raise InputError(f"cannot decrypt {what} ({_reason(e)})") from None


def load_identities(path: Path) -> list[Identity]:
    """Read an identity file: age secret keys (one per line, ``#`` comments) or an OpenSSH key."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read identity file ({e.strerror})", where=str(path)) from None
    # age identity files are plain lines; anything PEM-armored is an SSH private key
    if data.lstrip().startswith(b"-----BEGIN "):
        try:
            return [pyrage.ssh.Identity.from_buffer(data)]
        except Exception as e:
            raise InputError(f"unusable ssh identity ({_reason(e)})", where=str(path)) from None
    identities = []
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except Exception:
            raise InputError("malformed age identity", where=str(path)) from None
    if not identities:
        raise InputError("no identity in file", where=str(path))
    return identities


def generate_x25519() -> Identity:
    return pyrage.x25519.Identity.generate()


def public_of(identity: Identity) -> str:
    return str(identity.to_public())


def identity_text(identity: Identity) -> Secret:
    """The bech32 secret-key line of an X25519 identity, masked."""
    return Secret(str(identity).encode("ascii"))


def secret_bytes(identity: Identity) -> Secret:
    """The 32-byte X25519 scalar of an identity (what SLIP-39 splits)."""
    hrp, data = bech32.bech32_decode(str(identity))
    raw = bech32.convertbits(data, 5, 8, False) if data is not None else None
    if hrp != _SECRET_HRP or raw is None or len(raw) != 32:
        raise InputError("not an age X25519 identity")
    return Secret(bytes(raw))


def identity_from_secret(secret: Secret) -> Identity:
    """Rebuild an X25519 identity from its 32-byte scalar."""
    raw = secret.reveal()
    if len(raw) != 32:
        raise InputError("recovered unseal key has the wrong length")
    words = bech32.convertbits(list(raw), 8, 5, True) or []
    text = bech32.bech32_encode(_SECRET_HRP, words).upper()
    return pyrage.x25519.Identity.from_str(text)


def _reason(e: BaseException) -> str:
    """A short, secret-free reason from a pyrage error."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    # rage words its errors as sentences; ours are lowercase without a trailing period
    text = text[:160].rstrip(". ")
    return text[:1].lower() + text[1:]
