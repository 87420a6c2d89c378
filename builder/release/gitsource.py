"""Where a build's inputs come from: the git commit and repository, as OCI annotations.

``org.opencontainers.image.revision`` and ``org.opencontainers.image.source``
(OCI image-spec, annotations.md) are set only when they are true and the same
for everyone who builds that commit: the spec, its sealed bundle and its
templates are committed and unchanged, and the repository has a remote URL
that others can fetch (a local path, which differs between clones, is left
out). Credentials in a URL never reach the image. So two builds of one commit
stay bit-identical, and a build of uncommitted inputs claims no commit.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REVISION = "org.opencontainers.image.revision"
SOURCE = "org.opencontainers.image.source"

_SCP_LIKE = re.compile(r"^(?:[\w.-]+@)?([\w.-]+):(?!//)(.+)$")  # git@host:owner/repo.git


class Probe:
    """Asks git in the background, so the build's packing overlaps the git calls.

    Start it before the expensive work, read ``annotations()`` when they are
    needed. Never raises: a missing git, a directory outside any checkout, or
    uncommitted inputs all give {}.
    """

    def __init__(self, inputs: list[Path]) -> None:
        here = inputs[0].resolve().parent
        self._procs: tuple[subprocess.Popen[str], subprocess.Popen[str]] | None = None
        if not any((d / ".git").exists() for d in (here, *here.parents)):
            return  # not a checkout: spare the git calls
        try:
            self._procs = (
                _start(
                    here,
                    "status",
                    "--porcelain=v2",
                    "--branch",
                    "--ignored",
                    "--",
                    *map(str, inputs),
                ),
                _start(here, "config", "--get", "remote.origin.url"),
            )
        except OSError:
            self._procs = None

    def annotations(self) -> dict[str, str]:
        """The revision and source annotations; {} when they are not known to be true."""
        if self._procs is None:
            return {}
        status, remote = (_finish(p) for p in self._procs)
        if status is None:
            return {}
        revision = None
        for line in status.splitlines():
            if line.startswith("# branch.oid "):
                revision = line.split()[2]
            elif not line.startswith("#"):
                return {}  # an input is modified or untracked: the commit does not describe it
        if revision is None or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", revision):
            return {}  # no commit yet ("(initial)")
        found = {REVISION: revision}
        url = source_url(remote or "")
        if url:
            found[SOURCE] = url
        return found


def oci_annotations(inputs: list[Path]) -> dict[str, str]:
    """The revision and source annotations for a build of ``inputs`` (see ``Probe``)."""
    return Probe(inputs).annotations()


def source_url(remote: str) -> str | None:
    """A fetchable https URL for a git remote, without credentials; None for a local path."""
    remote = remote.strip()
    if not remote:
        return None
    m = re.match(r"^(https?|ssh|git)://(?:[^@/]*@)?([^/]+)/(.+)$", remote)
    if m:
        host, path = m.group(2), m.group(3)
    else:
        scp = _SCP_LIKE.match(remote)
        if scp is None or "/" in scp.group(1):
            return None  # a local path or file:// URL
        host, path = scp.group(1), scp.group(2)
    host = host.rsplit(":", 1)[0] if m and m.group(1) == "ssh" else host  # ssh port
    path = path.strip("/").removesuffix(".git")
    return f"https://{host}/{path}"


def _start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["git", "-C", str(cwd), *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen[str]) -> str | None:
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    return out if proc.returncode == 0 else None
