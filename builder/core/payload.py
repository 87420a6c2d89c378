"""The payload: every file breakglass puts into an image, planned before anything is written.

A payload is a sorted tuple of ``PayloadFile``. The OCI backend packs it into
one deterministic layer; the Packer backend installs it with the pyinfra
deploy. Both read the same plan, so both carry the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from builder.core.canonical import digest
from builder.core.record import record

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


@record(order=True)
class PayloadFile:
    """One regular file of the payload. ``path`` is relative to the root, no leading slash.

    The content is ``data``, or, for a large file, the file at ``source``
    (``from_source``), streamed whenever it is hashed or packed so that it
    is never held in memory; such a file must not change during the build.
    """

    path: str
    data: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    source: Path | None = None

    @classmethod
    def from_source(cls, path: str, source: Path, mode: int = 0o644) -> PayloadFile:
        """A payload file whose content is read from ``source`` when needed."""
        return cls(path, b"", mode, source=source)

    @property
    def size(self) -> int:
        return len(self.data) if self.source is None else self.source.stat().st_size

    def open(self) -> BinaryIO:
        """The content as a binary stream."""
        import io

        return io.BytesIO(self.data) if self.source is None else self.source.open("rb")

    def read(self) -> bytes:
        """The whole content in memory (small files, and the Packer staging)."""
        return self.data if self.source is None else self.source.read_bytes()

    def __post_init__(self) -> None:
        if self.path.startswith("/") or ".." in self.path.split("/") or not self.path:
            raise ValueError(f"payload path must be relative and inside the root: {self.path!r}")

    @property
    def digest(self) -> str:
        if self.source is None:
            return digest(self.data)
        import hashlib

        with self.source.open("rb") as f:
            return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def directories_of(files: tuple[PayloadFile, ...]) -> list[str]:
    """Every parent directory of the payload's files, sorted, each once."""
    dirs: set[str] = set()
    for f in files:
        parts = f.path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return sorted(dirs)
