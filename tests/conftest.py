"""Shared fixtures. A test that needs an external tool skips locally when it is absent,
and fails under CI (CI=true), so a missing install step can never pass unnoticed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def require_tool(name: str) -> str:
    """Return the path of ``name``; skip locally, fail under CI, when it is missing."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"required tool {name!r} is not installed (CI must install it)")
    pytest.skip(f"{name} not installed")
