"""Run the install deploy against one target through pyinfra's CLI, and count what changed.

pyinfra runs in a child process (its CLI is its stable interface, and a child
keeps its global state out of ours); we read its results table.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder.core.errors import CheckFailed, InputError
from builder.vm.deploy.stage import load_index

DEPLOY_SCRIPT = Path(__file__).with_name("install.py")
_TARGET = re.compile(r"^@(local|chroot/.+|ssh/.+)$")
_TOTAL = re.compile(r"^\s*Grand total\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$")
_STARTING = re.compile(r"^--> Starting operation: (.*?)\s*$")
_HOST_LINE = re.compile(r"^\s+\[[^\]]+\] (.*)$")


@dataclass(frozen=True)
class ProvisionResult:
    """Operations that changed the target (0 on a target that already carries the payload)."""

    changed: int
    unchanged: int


def deploy_command(
    target: str,
    staged: Path,
    *,
    ssh_user: str | None = None,
    ssh_port: int | None = None,
    ssh_key: str | None = None,
    sudo: bool = False,
    known_hosts: Path | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The pyinfra command line that installs ``staged`` into ``target``.

    Raises InputError for a target pyinfra would not read as ``@local``,
    ``@chroot/DIR`` or ``@ssh/HOST``.
    """
    if not _TARGET.match(target):
        raise InputError(f"deploy target must be @local, @chroot/DIR or @ssh/HOST, not {target!r}")
    argv = [python, "-m", "pyinfra", target, str(DEPLOY_SCRIPT)]
    argv += ["--data", f"breakglass_staged={staged.resolve()}", "-y"]
    if ssh_user:
        argv += ["--user", ssh_user]
    if ssh_port:
        argv += ["--port", str(ssh_port)]
    if ssh_key:
        argv += ["--key", ssh_key]
    if sudo:
        argv.append("--sudo")
    if known_hosts is not None:
        argv += ["--data", f"ssh_known_hosts_file={known_hosts}"]
    return argv


def provision(
    target: str,
    staged: Path,
    *,
    ssh_user: str | None = None,
    ssh_port: int | None = None,
    ssh_key: str | None = None,
    sudo: bool = False,
    on_line: Callable[[str], None] | None = None,
) -> ProvisionResult:
    """Install the staged payload into ``target``; idempotent.

    Raises InputError for a bad target or staged payload (before touching the
    target) and CheckFailed, naming the failing operation and its cause, when
    pyinfra fails.
    """
    load_index(staged)
    # An @ssh target is a machine made for this build (Packer's VM), with host keys of its
    # own: its key is accepted into a file of this run's, not the user's ~/.ssh/known_hosts,
    # which may not exist and where a later build's new key on the same port would clash.
    with tempfile.TemporaryDirectory(prefix="breakglass-deploy-") as private:
        argv = deploy_command(
            target, staged, ssh_user=ssh_user, ssh_port=ssh_port, ssh_key=ssh_key, sudo=sudo,
            known_hosts=Path(private) / "known_hosts" if target.startswith("@ssh/") else None,
        )  # fmt: skip
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if on_line:
                on_line(line)
        rc = proc.wait()
    if rc != 0:
        raise CheckFailed(f"provisioning {target} failed: {failure_cause(lines)}")
    return parse_results(lines)


def parse_results(lines: list[str]) -> ProvisionResult:
    """Read pyinfra's ``Grand total`` row: hosts, success (changed), error, no change.

    Raises CheckFailed when the row is missing or reports errors.
    """
    for line in reversed(lines):
        m = _TOTAL.match(line)
        if m:
            _hosts, changed, errors, unchanged = (0 if v == "-" else int(v) for v in m.groups())
            if errors:
                raise CheckFailed(f"provisioning reported {errors} failed operations")
            return ProvisionResult(changed=changed, unchanged=unchanged)
    raise CheckFailed("provisioning finished without a results table from pyinfra")


def failure_cause(lines: list[str]) -> str:
    """One line naming the operation that failed and what its host said."""
    operation = None
    said: list[str] = []
    for line in lines:
        m = _STARTING.match(line)
        if m:
            operation, said = m.group(1), []
            continue
        h = _HOST_LINE.match(line)
        if h and not h.group(1).startswith(("Success", "No changes", "Error: executed")):
            said.append(h.group(1).strip())
        if line.startswith("--> pyinfra error:") and operation is None:
            said.append(line.removeprefix("--> pyinfra error:").strip())
    cause = "; ".join(s for s in said if s) or "see pyinfra output"
    where = f"operation '{operation}': " if operation else ""
    return " ".join(f"{where}{cause}".split())
