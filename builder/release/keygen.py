"""An approver's key material: an age X25519 identity and an ssh-ed25519 signing key."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from builder.core import agecrypt
from builder.core.errors import InputError, ToolMissing
from builder.core.fsio import write_atomic
from builder.core.yamlfile import NAME_RE


@dataclass(frozen=True)
class ApproverKeys:
    name: str
    identity_path: Path
    signing_key_path: Path
    recipient: str
    signing_key: str

    def spec_lines(self) -> str:
        """The approver entry to paste into a spec's ``approvers:`` list."""
        return (
            f"  - name: {self.name}\n"
            f"    recipient: {self.recipient}\n"
            f"    signing_key: {self.signing_key}\n"
        )


def keygen(name: str, out: Path, now: dt.datetime) -> ApproverKeys:
    """Write ``OUT/NAME.age`` (age identity) and ``OUT/NAME``, ``OUT/NAME.pub`` (ssh-ed25519), 0600.

    Refuses to overwrite existing files. Raises InputError or ToolMissing.
    """
    if not NAME_RE.match(name):
        raise InputError(f"approver name '{name}' must be lowercase letters, digits and dashes")
    identity_path, key_path = out / f"{name}.age", out / name
    for p in (identity_path, key_path, key_path.with_suffix(".pub")):
        if p.exists():
            raise InputError("refusing to overwrite existing key file", where=str(p))
    ssh_keygen = shutil.which("ssh-keygen")
    if not ssh_keygen:
        raise ToolMissing("ssh-keygen is not installed", hint="apt-get install openssh-client")
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    proc = subprocess.run(
        [ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key_path)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        raise InputError("ssh-keygen could not create the signing key", where=str(key_path))
    os.chmod(key_path, 0o600)
    identity = agecrypt.generate_x25519()
    recipient = agecrypt.public_of(identity)
    header = f"# created: {now.strftime('%Y-%m-%dT%H:%M:%SZ')}\n# public key: {recipient}\n"
    write_atomic(
        identity_path,
        header.encode() + agecrypt.identity_text(identity).reveal() + b"\n",
        mode=0o600,
    )
    signing_key = " ".join(key_path.with_suffix(".pub").read_text().split()[:2]) + f" {name}"
    return ApproverKeys(name, identity_path, key_path, recipient, signing_key)
