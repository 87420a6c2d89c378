"""sha256 by whichever implementation costs least where the caller is.

``hashlib`` loads OpenSSL, which costs a host command more than the hash of a
manifest; CPython's built-in ``_sha256`` needs no loading but hashes about five
times slower. So: the built-in one for a small input while OpenSSL is not loaded,
OpenSSL otherwise (a build loads it anyway, then hashes hundreds of runtime files).
The digests are the same; only the time differs.
"""

from __future__ import annotations

import sys

_SMALL = 64 * 1024  # below this, the built-in sha256 is quicker than loading OpenSSL


def sha256_hex(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    if len(data) < _SMALL and "_hashlib" not in sys.modules:
        from _sha256 import sha256  # type: ignore[import-not-found]
    else:
        from _hashlib import openssl_sha256 as sha256
    hexdigest: str = sha256(data).hexdigest()
    return hexdigest
