"""Stage a payload for the pyinfra deploy: a file tree plus ``payload.json`` describing it.

The deploy runs on the control machine and copies from this directory into
the target, so the staged tree is the one hand-off between a build and any
target (Packer VM, chroot, container or live host).

``payload.json`` (canonical JSON)::

    {"format": "breakglass-staged-payload/1",
     "files": [{"path": "etc/...", "mode": 420, "user": "root", "group": "root",
                "digest": "sha256:..."}],
     "dirs": [{"path": "run/breakglass", "mode": 448}],
     "users": [{"name": "breakglass", "home": "/home/breakglass", "shell": "/bin/bash"}]}
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.core.canonical import digest, dumps
from builder.core.errors import InputError
from builder.core.fsio import write_atomic
from builder.core.payload import MANIFEST_PATH, PayloadFile

FORMAT = "breakglass-staged-payload/1"
INDEX_NAME = "payload.json"
FILES_DIR = "files"
# The deploy sets owners by name: stat(1) reports names, so numeric ids would never compare equal.
OWNER_NAMES = {0: "root"}


@dataclass(frozen=True)
class EmergencyUser:
    """An emergency login account: locked password, no standing keys."""

    name: str
    home: str
    shell: str = "/bin/bash"

    @classmethod
    def named(cls, name: str) -> EmergencyUser:
        return cls(name=name, home=f"/home/{name}")


def stage_payload(
    files: tuple[PayloadFile, ...],
    dirs: Mapping[str, int],
    dest: Path,
    *,
    users: Iterable[EmergencyUser] | None = None,
) -> Path:
    """Write ``files`` under ``dest/files`` and the index ``dest/payload.json``; return ``dest``.

    ``users`` defaults to the ``emergency_user`` of every scope in the payload's
    break-glass manifest. Raises InputError for an owner the deploy cannot name
    or an unreadable manifest; ``dest`` is then left untouched.
    """
    account_list = sorted(set(users_from_manifest(files) if users is None else users), key=_name)
    entries = []
    for f in sorted(files):
        entries.append(
            {
                "path": f.path,
                "mode": f.mode,
                "user": _owner(f.uid, f.path),
                "group": _owner(f.gid, f.path),
                "digest": f.digest,
            }
        )
    index = {
        "format": FORMAT,
        "files": entries,
        "dirs": [{"path": p, "mode": m} for p, m in sorted(dirs.items())],
        "users": [{"name": u.name, "home": u.home, "shell": u.shell} for u in account_list],
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Build beside dest and rename, so a failure never leaves a half-staged tree.
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        for f in files:
            write_atomic(tmp / FILES_DIR / f.path, f.read(), 0o600)
        write_atomic(tmp / INDEX_NAME, dumps(index), 0o644)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def users_from_manifest(files: tuple[PayloadFile, ...]) -> list[EmergencyUser]:
    """The emergency accounts named by the scopes of the payload's manifest, if it has one."""
    manifest = next((f for f in files if f.path == MANIFEST_PATH), None)
    if manifest is None:
        return []
    try:
        doc = json.loads(manifest.data)
        names = {s["emergency_user"] for s in doc.get("scopes", []) if s.get("emergency_user")}
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise InputError(f"unreadable manifest in payload: {e}", where=MANIFEST_PATH) from e
    return [EmergencyUser.named(n) for n in sorted(names)]


def load_index(staged: Path) -> dict[str, Any]:
    """Read and check ``payload.json``; every listed file must be staged with its digest.

    Raises InputError naming the first problem.
    """
    path = staged / INDEX_NAME
    try:
        index = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read staged payload index: {e}", where=str(path)) from e
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise InputError(f"not a staged payload index (want format {FORMAT})", where=str(path))
    unknown = set(index) - {"format", "files", "dirs", "users"}
    if unknown:
        raise InputError(f"unknown keys {sorted(unknown)}", where=str(path))
    for entry in index["files"]:
        data_path = staged / FILES_DIR / entry["path"]
        try:
            data = data_path.read_bytes()
        except OSError as e:
            raise InputError(f"staged file missing: {entry['path']}", where=str(path)) from e
        if digest(data) != entry["digest"]:
            raise InputError(f"staged file changed since staging: {entry['path']}", where=str(path))
    return index


def _owner(ident: int, path: str) -> str:
    try:
        return OWNER_NAMES[ident]
    except KeyError:
        raise InputError(
            f"payload file {path} is owned by id {ident}; the deploy installs root-owned files only"
        ) from None


def _name(u: EmergencyUser) -> str:
    return u.name
