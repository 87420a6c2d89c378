"""The read-only probe ``fleet status`` runs on each host: one shell command, no Python needed.

It prints the host's clock and, base64-encoded, the image manifest, the host
state and the audit head, plus the audit log's line count. Interpreting them
happens on the control machine (``builder.fleet.status``): the host runs
nothing of ours, so a host that cannot start Python, or whose state was
forged, still answers, and reading never settles (reseals) the host.
"""

from __future__ import annotations

import base64
import shlex
import time
from dataclasses import dataclass, field

from pyinfra.api.facts import FactBase

from builder.fleet.inventory import ROOT_DATA

FILES = {
    "manifest": "etc/breakglass/manifest.json",
    "state": "var/lib/breakglass/state.json",
    "audit_head": "var/lib/breakglass/audit.head",
}
AUDIT_LOG = "var/lib/breakglass/audit.jsonl"


@dataclass
class Probe:
    """What one host answered: file bytes (None when absent) and clock readings."""

    files: dict[str, bytes | None] = field(default_factory=dict)
    audit_lines: int = 0
    host_time: float | None = None
    sent: float = 0.0
    received: float = 0.0
    root_missing: bool = False

    @property
    def clock_skew(self) -> float | None:
        """Host clock minus the control clock when the answer arrived.

        Not the round trip's midpoint: most of the trip is sshd starting the
        session before the host reads its clock, and the answer comes back at
        once, so the arrival time is the closer reference.
        """
        if self.host_time is None:
            return None
        return self.host_time - self.received


def host_root() -> str:
    """The current pyinfra host's breakglass root (host data ``breakglass_root``, default /)."""
    from pyinfra.context import host

    return str(host.data.get(ROOT_DATA) or "/")


def probe_script(root: str) -> str:
    reads = "".join(
        f'if [ -f {p} ] && [ ! -L {p} ]; then echo "file {k} $(base64 -w0 {p})."; '
        f'else echo "file {k} -"; fi; '
        for k, p in FILES.items()
    )
    return (
        f"cd {shlex.quote(root)} 2>/dev/null || {{ echo noroot; exit 0; }}; "
        f'echo "clock $(date +%s.%N)"; {reads}'
        f'if [ -f {AUDIT_LOG} ]; then echo "lines $(wc -l < {AUDIT_LOG})"; fi'
    )


def parse(lines: list[str], probe: Probe) -> Probe:
    """Fill ``probe`` from the script's output; unknown lines are ignored."""
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        if word == "noroot":
            probe.root_missing = True
        elif word == "clock":
            try:
                probe.host_time = float(rest)
            except ValueError:
                probe.host_time = None
        elif word == "file":
            key, _, data = rest.partition(" ")
            if key in FILES:
                # the trailing dot keeps an empty file's line from being stripped to nothing
                probe.files[key] = None if data == "-" else base64.b64decode(data.rstrip("."))
        elif word == "lines" and rest.strip().isdigit():
            probe.audit_lines = int(rest.strip())
    return probe


class BreakglassProbe(FactBase[Probe]):
    """pyinfra fact: the host's breakglass files and clock (see ``probe_script``)."""

    def __init__(self) -> None:
        self._sent = 0.0

    def command(self) -> str:
        self._sent = time.time()
        return probe_script(host_root())

    def process(self, output: list[str]) -> Probe:
        return parse(output, Probe(sent=self._sent, received=time.time()))
