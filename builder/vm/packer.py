"""The one door to HashiCorp Packer: packer-py for one-shot commands, a pipe for builds.

packer-py (``packerpy.PackerExecutable``) builds the command line and runs
``packer validate``; it waits for the process to end and hands back all output
at once, and defaults to ``/usr/local/packer``. A build can run for an hour, so
``build`` runs the same command line through ``subprocess.Popen`` and reports
Packer's ``-machine-readable`` lines as they come.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder.core.errors import CheckFailed, InputError, ToolMissing


@dataclass(frozen=True)
class PackerEvent:
    """One machine-readable line: ``timestamp,target,type,data...`` with data unescaped."""

    timestamp: int
    target: str
    type: str
    data: tuple[str, ...]

    @classmethod
    def parse(cls, line: str) -> PackerEvent | None:
        """The event on ``line``, or None for a line that is not machine-readable."""
        parts = line.rstrip("\r\n").split(",")
        if len(parts) < 3 or not parts[0].isdigit():
            return None
        return cls(int(parts[0]), parts[1], parts[2], tuple(_unescape(p) for p in parts[3:]))

    @property
    def text(self) -> str:
        """What Packer's human UI would show for a ``ui`` event ("" for other events)."""
        return self.data[-1] if self.type == "ui" and self.data else ""

    @property
    def is_error(self) -> bool:
        return self.type == "ui" and len(self.data) >= 2 and self.data[0] == "error"


def packer_path() -> str:
    """The ``packer`` binary on PATH. Raises ToolMissing when there is none."""
    path = shutil.which("packer")
    if not path:
        raise ToolMissing(
            "packer is not installed (needed for --backend packer)",
            hint="install it, e.g. `apt-get install packer`, and put it on PATH",
        )
    return path


def _executable() -> object:
    import packerpy

    # packer-py looks for /usr/local/packer unless told otherwise.
    return packerpy.PackerExecutable(executable_path=packer_path(), machine_readable=True)


def _env() -> dict[str, str]:
    # Packer phones home for version checks unless told not to; builds must work offline.
    return {**os.environ, "CHECKPOINT_DISABLE": "1"}


def validate(template_path: Path) -> None:
    """Return if ``packer validate`` accepts the template.

    Raises ToolMissing without packer and InputError carrying Packer's first
    error, on one line, when the template is rejected.
    """
    exe = _executable()
    old = os.environ.get("CHECKPOINT_DISABLE")
    os.environ["CHECKPOINT_DISABLE"] = "1"
    try:
        rc, out, err = exe.validate(str(template_path))  # type: ignore[attr-defined]
    finally:
        if old is None:
            os.environ.pop("CHECKPOINT_DISABLE", None)
        else:
            os.environ["CHECKPOINT_DISABLE"] = old
    if rc != 0:
        lines = (out or b"").decode(errors="replace").splitlines()
        lines += (err or b"").decode(errors="replace").splitlines()
        raise InputError(f"packer rejected the template: {first_error(lines)}")


def build(template_path: Path, on_event: Callable[[PackerEvent], None] | None = None) -> None:
    """Run ``packer build`` and report each machine-readable event as it arrives.

    Raises ToolMissing without packer and CheckFailed with the build's first
    error, on one line, when the build fails.
    """
    argv = [packer_path(), "build", "-machine-readable", "-color=false", str(template_path)]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        env=_env(),
        cwd=template_path.parent,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        event = PackerEvent.parse(line)
        if event is not None and on_event is not None:
            on_event(event)
    if proc.wait() != 0:
        raise CheckFailed(f"packer build failed: {first_error(seen)}")


def first_error(lines: list[str]) -> str:
    """The most telling error in Packer output, as one lowercase line.

    A line our own deploy printed (``breakglass: error: ...``) wins: it names
    the provisioning step that failed, where Packer only says a script failed.
    """
    events = [e for e in (PackerEvent.parse(line) for line in lines) if e is not None]
    for e in events:
        for text_line in e.text.splitlines():
            if "breakglass: error:" in text_line:
                return _one_line(text_line.split("breakglass: error:", 1)[1])
    for e in events:
        if e.is_error:
            return _one_line(e.text)
    plain = [line for line in lines if line.strip() and PackerEvent.parse(line) is None]
    return _one_line(plain[-1]) if plain else "no error message from packer"


def _one_line(text: str) -> str:
    parts = []
    for raw in text.splitlines():
        s = raw.strip().removeprefix("* ").strip()
        s = s.removeprefix("Error: ").removeprefix("==> ").strip()
        if s and s.rstrip(":") not in ("1 error occurred", "Build errored"):
            parts.append(s.rstrip(".:"))
    joined = ": ".join(parts) or "unknown error"
    return joined[0].lower() + joined[1:]


def _unescape(value: str) -> str:
    return value.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n").replace("\\r", "\r")
