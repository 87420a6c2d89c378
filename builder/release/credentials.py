"""Emergency credentials: generated or read, and their public parts.

The plaintext is a ``Secret`` from the moment it exists. The public part
(an OpenSSH public key, a token digest, a password hash) is what the systems
that must accept the credential are enrolled with, and what drift checks.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builder.core.errors import InputError
from builder.core.secret import Secret
from builder.release.spec import Credential

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


@dataclass(frozen=True)
class Material:
    """A credential's plaintext (masked) and its public part."""

    plaintext: Secret
    public: str | None
    fingerprint: str | None


def produce(credential: Credential, base_dir: Path, comment: str) -> Material:
    """Generate or read ``credential``. Raises InputError when a file or variable is missing."""
    if credential.generate:
        return generate(credential.kind, comment)
    if credential.from_env is not None:
        value = os.environ.get(credential.from_env)
        if not value:
            raise InputError(
                f"credential '{credential.name}': environment variable {credential.from_env} is not set"
            )
        raw = value.encode("utf-8")
    else:
        assert credential.from_file is not None
        path = base_dir / credential.from_file
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise InputError(
                f"credential '{credential.name}': cannot read file ({e.strerror})", where=str(path)
            ) from None
        if not raw:
            raise InputError(f"credential '{credential.name}': file is empty", where=str(path))
    return supplied(credential.kind, Secret(raw))


def generate(kind: str, comment: str) -> Material:
    if kind == "ssh-ed25519":
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        public = (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode("ascii")
        )
        return Material(Secret(private), f"{public} {comment}", ssh_fingerprint(public))
    if kind == "token":
        return supplied("token", Secret(secrets.token_urlsafe(32).encode("ascii")))
    if kind == "password":
        return supplied("password", Secret(secrets.token_urlsafe(24).encode("ascii")))
    raise InputError(f"cannot generate a credential of kind '{kind}'")


def supplied(kind: str, plaintext: Secret) -> Material:
    if kind == "token":
        public = token_digest(plaintext)
        return Material(plaintext, public, public)
    if kind == "password":
        public = password_hash(plaintext)
        return Material(plaintext, public, "sha256:" + hashlib.sha256(public.encode()).hexdigest())
    return Material(plaintext, None, None)


def token_digest(token: Secret) -> str:
    """The public part of a token: its SHA-256. A random 256-bit token cannot be guessed from it."""
    return "sha256:" + hashlib.sha256(token.reveal().strip()).hexdigest()


def password_hash(password: Secret) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.reveal(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def ssh_fingerprint(public_line: str) -> str:
    """``SHA256:...`` exactly as ``ssh-keygen -lf`` prints it."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
