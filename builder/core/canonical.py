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

TYPE_CHECKING = False  # typing itself costs the start of every host command
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_SMALL = 64 * 1024  # below this, the built-in sha256 is quicker than loading OpenSSL


def _refuse(value: object) -> object:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _c_encoder() -> tuple[Callable[..., Any], Callable[[str], str]] | None:
    try:
        from _json import encode_basestring, make_encoder
    except ImportError:  # pragma: no cover - CPython always has it
        return None
    return make_encoder, encode_basestring


_C = _c_encoder()


def dumps(document: Any) -> bytes:
    """Return the canonical encoding of ``document``."""
    if _C is None:  # pragma: no cover
        import json

        text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8") + b"\n"
    make, encode_string = _C
    if isinstance(document, str):
        return encode_string(document).encode("utf-8") + b"\n"
    # a fresh encoder per call, as JSONEncoder.encode makes one: its cycle markers start empty
    encode = make({}, _refuse, encode_string, None, ":", ",", True, False, True)
    return "".join(encode(document, 0)).encode("utf-8") + b"\n"


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
