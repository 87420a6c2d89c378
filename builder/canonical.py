"""Canonical JSON: the exact bytes that are hashed and signed.

Sorted keys, no insignificant whitespace, UTF-8, a trailing newline. Two
equal documents always give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def dumps(document: Any) -> bytes:
    """Return the canonical encoding of ``document``."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8") + b"\n"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(data: bytes) -> str:
    """Return ``sha256:<hex>`` of ``data``, the form every digest in our formats takes."""
    return "sha256:" + sha256_hex(data)
