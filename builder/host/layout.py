"""Where the host keeps things under ``--root``, and the test-only crash hook.

State and audit log live under ``var/lib/breakglass/``; plaintext only under
``run/breakglass/`` (tmpfs on a real host, mode 0700, files 0600).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing, dataclasses and pathlib cost the start of every host command
if TYPE_CHECKING:
    from pathlib import Path

MANIFEST = "etc/breakglass/manifest.json"
BUNDLE = "etc/breakglass/sealed.yaml"
BUNDLE_JSON = "etc/breakglass/sealed.json"
STATE_DIR = "var/lib/breakglass"
RUNTIME_DIR = "run/breakglass"
AGENTS = "agents"  # run/breakglass/agents/AGENT/CONFIG: the active break-glass overlays
EPHEMERAL_PREFIX = ".request-"  # run/breakglass/.request-ID.key: a pending request's identity

GRANT_NAME = ".grant.json"  # run/breakglass/.grant.json: the activation grant (builder.host.grant)

CRASH_ENV = "BREAKGLASS_TEST_CRASH_AT"


def require_image(root: Path) -> None:
    """Raise InputError (exit 2) when ``root`` holds no image manifest: it is not a host.

    Checked before anything is read or written, so a mistyped ``--root`` (or a
    machine without an image) gets an error instead of a fresh state directory.
    """
    if not (root / MANIFEST).is_file():
        from builder.core.errors import InputError

        raise InputError(
            f"{root} is not a breakglass host: it has no {MANIFEST}",
            hint="pass --root DIR for an installed image; on a dev machine make one with "
            "`breakglass host install dist/NAME/VERSION --root DIR`",
        )


class Layout:
    """The host's paths under one root directory (a ``Path``)."""

    __slots__ = ("root",)
    root: Path

    def __init__(self, root: Path) -> None:
        object.__setattr__(self, "root", root)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")  # frozen, as it always was

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"Layout(root={self.root!r})"

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def bundle(self) -> Path:
        return self.root / BUNDLE

    @property
    def bundle_json(self) -> Path:
        return self.root / BUNDLE_JSON

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def state(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def audit(self) -> Path:
        return self.state_dir / "audit.jsonl"

    @property
    def audit_head(self) -> Path:
        return self.state_dir / "audit.head"

    @property
    def lock(self) -> Path:
        return self.state_dir / "lock"

    @property
    def requests(self) -> Path:
        return self.state_dir / "requests"

    def request_file(self, request_id: str) -> Path:
        return self.requests / f"{request_id}.json"

    def approvals_dir(self, request_id: str) -> Path:
        return self.requests / f"{request_id}.approvals"

    @property
    def runtime(self) -> Path:
        return self.root / RUNTIME_DIR

    def ephemeral_identity(self, request_id: str) -> Path:
        return self.runtime / f"{EPHEMERAL_PREFIX}{request_id}.key"

    @property
    def grant(self) -> Path:
        return self.runtime / GRANT_NAME

    def credential(self, scope: str, name: str) -> Path:
        return self.runtime / scope / name

    def overlay(self, agent: str, config_name: str) -> Path:
        return self.runtime / AGENTS / agent / config_name


def crash_point(name: str) -> None:
    """Test-only fault injection: SIGKILL this process when BREAKGLASS_TEST_CRASH_AT names ``name``.

    The crash tests set the variable to prove that the next command recovers
    from a kill at that step. It can only stop the process, never skip a check.
    """
    if os.environ.get(CRASH_ENV) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
