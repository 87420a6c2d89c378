"""Canonical JSON: the exact bytes that are hashed and signed.

Sorted keys, no insignificant whitespace, UTF-8, a trailing newline. Two
equal documents always give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Built once: json.dumps with options builds a new encoder on every call, and the audit
# check encodes every line of a log that may hold millions.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def dumps(document: Any) -> bytes:
    """Return the canonical encoding of ``document``."""
    return _ENCODER.encode(document).encode() + b"\n"  # str.encode: always UTF-8


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(data: bytes) -> str:
    """Return ``sha256:<hex>`` of ``data``, the form every digest in our formats takes."""
    return "sha256:" + sha256_hex(data)
