"""Bump: raise a spec's version, keeping every other byte of the file.

ruamel.yaml's composer tells us exactly which characters hold the version
scalar; we replace those only, so comments, quoting, indentation, line
endings and key order stay exactly as the author wrote them.
"""

from __future__ import annotations

from pathlib import Path

from builder.core.errors import InputError
from builder.core.fsio import write_atomic
from builder.core.yamlfile import load, round_trip_yaml
from builder.release.spec import SEMVER_RE

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
    if not SEMVER_RE.match(old):
        raise node.error(f"version '{old}' is not semver (MAJOR.MINOR.PATCH)")
    new = next_version(old, part)
    # no newline translation: a CRLF file stays CRLF
    text = path.read_bytes().decode("utf-8")
    start, end = _version_span(text)
    # the span may include quotes: replace the value inside them
    at = text.find(old, start, end)
    if at < 0:
        raise InputError("cannot locate the version value to edit", where=node.where)
    updated = text[:at] + new + text[at + len(old) :]
    write_atomic(path, updated.encode("utf-8"), mode=path.stat().st_mode & 0o777)
    return old, new


def _version_span(text: str) -> tuple[int, int]:
    """Character offsets of the top-level ``version`` scalar, as the YAML parser saw it.

    Offsets, not line and column: YAML and ``str.splitlines`` disagree on what
    ends a line (form feeds, U+2028), and a wrong line would edit the wrong text.
    """
    document = round_trip_yaml().compose(text)
    for key, value in document.value:
        if key.value == "version":
            return value.start_mark.index, value.end_mark.index
    raise InputError("spec has no version")  # load() found one, so this is unreachable
