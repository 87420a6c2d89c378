"""Bump: raise a spec's version, keeping every other byte of the file.

ruamel.yaml's round-trip loader tells us exactly where the version scalar
is; we replace those characters only, so comments, quoting, indentation and
key order stay exactly as the author wrote them.
"""

from __future__ import annotations

from pathlib import Path

from builder.errors import InputError
from builder.fsio import write_atomic
from builder.spec import SEMVER_RE
from builder.yamlfile import load

PARTS = ("major", "minor", "patch")


def next_version(version: str, part: str) -> str:
    m = SEMVER_RE.match(version)
    if not m:
        raise InputError(f"version '{version}' is not semver (MAJOR.MINOR.PATCH)")
    major, minor, patch = (int(x) for x in m.groups())
    if part == "major":
        return f"{major + 1}.0.0"
    if part == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def bump(path: Path, part: str) -> tuple[str, str]:
    """Rewrite the spec's version in place; return (old, new). Raises InputError."""
    root = load(path)
    if not isinstance(root.value, dict) or "version" not in root.value:
        raise InputError("spec has no version", where=str(path))
    node = root.get("version")
    old = node.text("version")
    new = next_version(old, part)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    line, col = node.pos
    current = lines[line]
    # the scalar may be quoted: replace the first occurrence of the value from its column
    at = current.find(old, col)
    if at < 0:
        raise InputError("cannot locate the version value to edit", where=node.where)
    lines[line] = current[:at] + new + current[at + len(old) :]
    write_atomic(path, "".join(lines).encode("utf-8"), mode=path.stat().st_mode & 0o777)
    return old, new
