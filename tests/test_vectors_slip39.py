"""The share layer against trezor/python-shamir-mnemonic's SLIP-39 vectors.

tests/vectors/slip39/vectors.json is the older upstream format: a list of
``[mnemonics, master secret hex]`` where the secret is ``""`` for an invalid
set. The vectors use the passphrase ``TREZOR``; our scheme keeps the empty
passphrase, so a test-only subclass sets it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.core.errors import InputError
from builder.core.secret import Secret
from builder.core.shares import Slip39

VECTORS = Path(__file__).resolve().parent / "vectors" / "slip39" / "vectors.json"
CASES: list[tuple[list[str], str]] = (
    [(list(m), str(s)) for m, s in json.loads(VECTORS.read_text(encoding="utf-8"))]
    if VECTORS.is_file()
    else []
)
VALID = [(i, m, s) for i, (m, s) in enumerate(CASES) if s]
INVALID = [(i, m) for i, (m, s) in enumerate(CASES) if not s]


class TrezorVectorScheme(Slip39):
    """Our SLIP-39 scheme with the passphrase the public vectors were made with."""

    passphrase = b"TREZOR"


def _shares(mnemonics: list[str]) -> list[Secret]:
    return [Secret(m.encode("ascii")) for m in mnemonics]


def _word_triples(mnemonics: list[str]) -> set[str]:
    triples: set[str] = set()
    for m in mnemonics:
        words = m.split()
        triples.update(" ".join(words[i : i + 3]) for i in range(len(words) - 2))
    return triples


def test_vector_file_has_every_case() -> None:
    assert len(CASES) == 40, f"expected 40 cases in {VECTORS}"
    assert len(VALID) == 10
    assert len(INVALID) == 30


@pytest.mark.parametrize(("index", "mnemonics", "secret_hex"), VALID)
def test_valid_vector_combines(index: int, mnemonics: list[str], secret_hex: str) -> None:
    secret = TrezorVectorScheme().combine(_shares(mnemonics))
    assert secret.reveal().hex() == secret_hex, f"case {index}"


@pytest.mark.parametrize(("index", "mnemonics", "secret_hex"), VALID[:3])
def test_valid_vector_needs_its_passphrase(
    index: int, mnemonics: list[str], secret_hex: str
) -> None:
    # the default scheme's empty passphrase gives a different (still well-formed) secret
    secret = Slip39().combine(_shares(mnemonics))
    assert secret.reveal().hex() != secret_hex


@pytest.mark.parametrize(("index", "mnemonics"), INVALID)
def test_invalid_vector_is_refused(index: int, mnemonics: list[str]) -> None:
    with pytest.raises(InputError) as caught:
        TrezorVectorScheme().combine(_shares(mnemonics))
    message = str(caught.value)
    assert message.startswith("cannot combine shares (")
    assert "\n" not in message
    for triple in _word_triples(mnemonics):
        assert triple not in message, f"case {index}: error quotes share words"
