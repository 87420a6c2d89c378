"""The payload: every file breakglass puts into an image, planned before anything is written.

A payload is a sorted tuple of ``PayloadFile``. The OCI backend packs it into
one deterministic layer; the Packer backend installs it with the pyinfra
deploy. Both read the same plan, so both carry the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.canonical import digest

# Fixed paths inside every image.
MANIFEST_PATH = "etc/breakglass/manifest.json"
BUNDLE_PATH = "etc/breakglass/sealed.yaml"
# The same bundle as canonical JSON, for the host: it parses with json alone.
BUNDLE_JSON_PATH = "etc/breakglass/sealed.json"
AGENTS_DIR = "etc/breakglass/agents"
SSHD_DROPIN_PATH = "etc/ssh/sshd_config.d/50-breakglass.conf"
SUDOERS_PATH = "etc/sudoers.d/breakglass"
SYSTEMD_DIR = "etc/systemd/system"
STATE_DIR = "var/lib/breakglass"
RUNTIME_DIR = "run/breakglass"


@dataclass(frozen=True, order=True)
class PayloadFile:
    """One regular file of the payload. ``path`` is relative to the root, no leading slash."""

    path: str
    data: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0

    def __post_init__(self) -> None:
        if self.path.startswith("/") or ".." in self.path.split("/") or not self.path:
            raise ValueError(f"payload path must be relative and inside the root: {self.path!r}")

    @property
    def digest(self) -> str:
        return digest(self.data)


def directories_of(files: tuple[PayloadFile, ...]) -> list[str]:
    """Every parent directory of the payload's files, sorted, each once."""
    dirs: set[str] = set()
    for f in files:
        parts = f.path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return sorted(dirs)
