"""Canonical JSON: the exact bytes that are hashed and signed.

Sorted keys, no insignificant whitespace, UTF-8, a trailing newline. Two
equal documents always give the same bytes.

Encoded by json's C encoder (``_json``), configured as
``json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
configures it, without importing ``json`` (which imports ``re``): the host's
status and login paths use this module. Digests are hashed by
``builder.core.hasher``, which picks the cheaper sha256 for where it runs.
"""

from __future__ import annotations

from _json import encode_basestring, make_encoder  # CPython's C encoder, what json uses

from builder.core.hasher import sha256_hex

TYPE_CHECKING = False  # typing itself costs the start of every host command
if TYPE_CHECKING:
    from typing import Any


def _refuse(value: object) -> object:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def dumps(document: Any) -> bytes:
    """Return the canonical encoding of ``document``.

    Raises TypeError for what JSON cannot say (bytes, a non-string key, any other object)
    and ValueError for a circular reference or a number JSON has no word for (NaN, infinity).
    """
    if isinstance(document, str):
        return encode_basestring(document).encode() + b"\n"
    # a fresh encoder per call, as JSONEncoder.encode makes one: its cycle markers start empty;
    # the arguments: markers, default, string encoder, indent, separators, sort_keys,
    # skipkeys, allow_nan
    encode = make_encoder({}, _refuse, encode_basestring, None, ":", ",", True, False, False)
    text: str
    (text,) = encode(document, 0)  # CPython's C encoder gives the whole text as one chunk
    return text.encode() + b"\n"


def digest(data: bytes) -> str:
    """Return ``sha256:<hex>`` of ``data``, the form every digest in our formats takes."""
    return "sha256:" + sha256_hex(data)
