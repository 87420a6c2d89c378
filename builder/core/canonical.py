"""Canonical JSON: the exact bytes that are hashed and signed.

Sorted keys, no insignificant whitespace, UTF-8, a trailing newline. Two
equal documents always give the same bytes.

Encoded by json's C encoder (``_json``), configured as
``json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
configures it, without importing ``json`` (which imports ``re``): the host's
status and login paths use this module. Small inputs are hashed with the
built-in ``_sha256`` (``hashlib`` loads OpenSSL, which costs more than the
hash of a manifest); the digests are the same.
"""

from __future__ import annotations

from _json import encode_basestring, make_encoder  # CPython's C encoder, what json uses

TYPE_CHECKING = False  # typing itself costs the start of every host command
if TYPE_CHECKING:
    from typing import Any

_SMALL = 64 * 1024  # below this, the built-in sha256 is quicker than loading OpenSSL


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


def sha256_hex(data: bytes) -> str:
    if len(data) < _SMALL:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found]
        except ImportError:  # pragma: no cover
            from hashlib import sha256
    else:
        from hashlib import sha256
    hexdigest: str = sha256(data).hexdigest()
    return hexdigest


def digest(data: bytes) -> str:
    """Return ``sha256:<hex>`` of ``data``, the form every digest in our formats takes."""
    return "sha256:" + sha256_hex(data)
