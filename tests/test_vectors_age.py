"""The age layer against the C2SP CCTV age test vectors (tests/vectors/age-cctv).

Every vector is one file: a ``key: value`` header, an empty line, then the age
file. Vectors our layer supports (X25519 identities, armored or binary) must
behave as the vector expects: ``success`` decrypts to the payload whose SHA-256
is given, anything else raises a one-line InputError. Passphrase (scrypt) and
post-quantum hybrid vectors need identities our layer does not take; for those
we check only that decryption without their key is refused.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import pyrage
import pytest

from builder.core import agecrypt
from builder.core.errors import InputError

VECTORS = Path(__file__).resolve().parent / "vectors" / "age-cctv"
FILES = sorted(p for p in VECTORS.iterdir() if p.is_file()) if VECTORS.is_dir() else []

_KNOWN_KEYS = {
    "expect",
    "payload",
    "file key",
    "identity",
    "passphrase",
    "armored",
    "compressed",
    "comment",
}
_EXPECTATIONS = {
    "success",
    "no match",
    "HMAC failure",
    "header failure",
    "payload failure",
    "armor failure",
}

# Where rage (under pyrage) and the Go reference disagree. Each entry states what
# rage does instead, and the test asserts exactly that, so a pyrage upgrade that
# changes the behaviour fails here and the entry is removed.
KNOWN_DIFFERENCES: dict[str, str] = {
    "stanza_missing_body": (
        "rage accepts a stanza with no body line when the next line starts a new stanza;"
        " the header MAC still covers the header, so nothing unauthenticated is accepted"
    ),
    "stanza_missing_final_line": (
        "rage accepts a stanza whose body ends with a full 64-column line and no short line;"
        " the header MAC still covers the header, so nothing unauthenticated is accepted"
    ),
}

# Expected split of the 143 vectors; a change in the folder or in what we support shows here.
EXPECTED_SUPPORTED = 99
EXPECTED_UNSUPPORTED = {"scrypt passphrase": 25, "post-quantum hybrid identity": 19}


@dataclass(frozen=True)
class Vector:
    name: str
    expect: str
    payload: str | None
    identities: tuple[str, ...]
    passphrases: tuple[str, ...]
    armored: bool
    body: bytes

    @property
    def unsupported(self) -> str | None:
        """Why our layer cannot run this vector, or None when it can."""
        if any(not i.startswith(agecrypt.SECRET_KEY_PREFIX) for i in self.identities):
            return "post-quantum hybrid identity"
        if self.passphrases and not self.identities:
            return "scrypt passphrase"
        return None


def parse_vector(path: Path) -> Vector:
    """Split a vector file into its header fields and its age file; fail on anything unknown."""
    raw = path.read_bytes()
    header, sep, body = raw.partition(b"\n\n")
    assert sep, f"{path.name}: no blank line after the header"
    fields: dict[str, list[str]] = {}
    for line in header.decode("utf-8").split("\n"):
        key, colon, value = line.partition(": ")
        assert colon, f"{path.name}: header line without 'key: value': {line!r}"
        assert key in _KNOWN_KEYS, f"{path.name}: unknown header key {key!r}"
        fields.setdefault(key, []).append(value)
    compressed = fields.get("compressed", [""])[0]
    if compressed:
        assert compressed == "zlib", f"{path.name}: unknown compression {compressed!r}"
        body = zlib.decompress(body)
    expect = fields["expect"][0]
    assert expect in _EXPECTATIONS, f"{path.name}: unknown expectation {expect!r}"
    return Vector(
        name=path.name,
        expect=expect,
        payload=fields.get("payload", [None])[0],
        identities=tuple(fields.get("identity", [])),
        passphrases=tuple(fields.get("passphrase", [])),
        armored=fields.get("armored", ["no"])[0] == "yes",
        body=body,
    )


VECTORS_PARSED = [parse_vector(p) for p in FILES]
SUPPORTED = [v for v in VECTORS_PARSED if v.unsupported is None]
UNSUPPORTED = [v for v in VECTORS_PARSED if v.unsupported is not None]


def _identities(vector: Vector) -> list[object]:
    # a vector without identities (a bare header failure) still needs one to try
    if not vector.identities:
        return [pyrage.x25519.Identity.generate()]
    return [pyrage.x25519.Identity.from_str(i) for i in vector.identities]


def _assert_clean_error(error: InputError) -> None:
    message = str(error)
    assert message.startswith("cannot decrypt vector (")
    assert "\n" not in message and "\r" not in message
    assert not message.endswith(".")
    assert "AGE-SECRET-KEY" not in message.upper()


def test_vector_folder_is_not_empty() -> None:
    assert FILES, f"no age vectors in {VECTORS}"


def test_vector_counts() -> None:
    counts: dict[str, int] = {}
    for v in UNSUPPORTED:
        assert v.unsupported is not None
        counts[v.unsupported] = counts.get(v.unsupported, 0) + 1
    assert len(SUPPORTED) == EXPECTED_SUPPORTED
    assert counts == EXPECTED_UNSUPPORTED
    assert set(KNOWN_DIFFERENCES) <= {v.name for v in SUPPORTED}


@pytest.mark.parametrize("vector", SUPPORTED, ids=lambda v: v.name)
def test_supported_vector(vector: Vector) -> None:
    identities = _identities(vector)
    if vector.name in KNOWN_DIFFERENCES:
        # rage decrypts these; the Go reference calls them header failures
        assert vector.expect == "header failure"
        plaintext = agecrypt.decrypt(vector.body, identities, what="vector")
        assert vector.payload is None or (
            hashlib.sha256(plaintext.reveal()).hexdigest() == vector.payload
        )
        return
    if vector.expect == "success":
        assert vector.payload is not None
        plaintext = agecrypt.decrypt(vector.body, identities, what="vector")
        assert hashlib.sha256(plaintext.reveal()).hexdigest() == vector.payload
        if vector.armored:
            # the str form (how armored text arrives from YAML/JSON) decrypts the same
            again = agecrypt.decrypt(vector.body.decode("ascii"), identities, what="vector")
            assert again == plaintext
        return
    # pyrage decrypts whole buffers: a payload failure releases nothing at all
    with pytest.raises(InputError) as caught:
        agecrypt.decrypt(vector.body, identities, what="vector")
    _assert_clean_error(caught.value)


@pytest.mark.parametrize("vector", UNSUPPORTED, ids=lambda v: v.name)
def test_unsupported_vector_is_refused_without_its_key(vector: Vector) -> None:
    # our layer takes no passphrase and no hybrid identity, so these files must stay sealed
    identities = [
        pyrage.x25519.Identity.from_str(i)
        for i in vector.identities
        if i.startswith(agecrypt.SECRET_KEY_PREFIX)
    ]
    identities.append(pyrage.x25519.Identity.generate())
    with pytest.raises(InputError) as caught:
        agecrypt.decrypt(vector.body, identities, what="vector")
    _assert_clean_error(caught.value)
