"""The age layer: our ciphertext opens with the stock age CLI, and bad input is a clean InputError."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import bech32
import pyrage
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.core import agecrypt
from builder.core.errors import InputError
from builder.core.secret import Secret
from tests.conftest import ROOT, require_tool

FIXTURE_KEYS = ROOT / "tests" / "fixtures" / "keys"

PLAINTEXT = b"emergency credential \x00\xff with binary bytes\n"


@pytest.fixture
def x25519(tmp_path: Path) -> tuple[str, Path]:
    """A fresh X25519 recipient and the identity file holding its secret key."""
    identity = agecrypt.generate_x25519()
    path = tmp_path / "x25519.key"
    path.write_bytes(agecrypt.identity_text(identity).reveal() + b"\n")
    return agecrypt.public_of(identity), path


@pytest.fixture
def ssh_ed25519(tmp_path: Path) -> tuple[str, Path]:
    """A fresh ssh-ed25519 key pair from ssh-keygen: the public line and the private key file."""
    keygen = require_tool("ssh-keygen")
    path = tmp_path / "id_ed25519"
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "approver@example", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path.with_suffix(".pub").read_text().strip(), path


def _age_decrypt(ciphertext: str, identity: Path, tmp_path: Path) -> bytes:
    age = require_tool("age")
    sealed = tmp_path / "sealed.age"
    sealed.write_text(ciphertext, encoding="ascii")
    proc = subprocess.run(
        [age, "-d", "-i", str(identity), str(sealed)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def _plugin_recipient(name: str) -> str:
    # a well-formed bech32 recipient for a plugin; the payload is a compressed P-256 point shape
    words = bech32.convertbits(list(b"\x02" + os.urandom(32)), 8, 5, True)
    assert words is not None
    return str(bech32.bech32_encode(f"age1{name}", words))


def _assert_one_line(error: InputError) -> None:
    message = str(error)
    assert message and "\n" not in message and "\r" not in message
    assert message == message.strip() and not message.endswith(".")


@pytest.mark.parametrize("kind", ["x25519", "ssh_ed25519"])
def test_encrypt_opens_with_age_cli_and_with_our_layer(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    recipient, identity_file = request.getfixturevalue(kind)
    ciphertext = agecrypt.encrypt(Secret(PLAINTEXT), [recipient])
    assert ciphertext.startswith("-----BEGIN AGE ENCRYPTED FILE-----\n")
    assert ciphertext.rstrip().endswith("-----END AGE ENCRYPTED FILE-----")
    assert _age_decrypt(ciphertext, identity_file, tmp_path) == PLAINTEXT
    identities = agecrypt.load_identities(identity_file)
    assert agecrypt.decrypt(ciphertext, identities, what="test file").reveal() == PLAINTEXT


def test_encrypt_to_several_recipients_opens_for_each(
    x25519: tuple[str, Path], ssh_ed25519: tuple[str, Path], tmp_path: Path
) -> None:
    ciphertext = agecrypt.encrypt(PLAINTEXT, [x25519[0], ssh_ed25519[0]])
    for _, identity_file in (x25519, ssh_ed25519):
        assert _age_decrypt(ciphertext, identity_file, tmp_path) == PLAINTEXT
        identities = agecrypt.load_identities(identity_file)
        assert agecrypt.decrypt(ciphertext, identities, what="f").reveal() == PLAINTEXT


def test_ciphertext_does_not_contain_the_plaintext(x25519: tuple[str, Path]) -> None:
    ciphertext = agecrypt.encrypt(b"hunter2-hunter2-hunter2", [x25519[0]])
    assert "hunter2" not in ciphertext


def test_encrypt_to_no_recipients_is_refused() -> None:
    with pytest.raises(InputError, match="no recipients"):
        agecrypt.encrypt(PLAINTEXT, [])


def test_decrypt_with_no_identities_is_refused(x25519: tuple[str, Path]) -> None:
    ciphertext = agecrypt.encrypt(PLAINTEXT, [x25519[0]])
    with pytest.raises(InputError, match="no identities"):
        agecrypt.decrypt(ciphertext, [], what="f")


def test_truncated_ciphertext_is_refused(x25519: tuple[str, Path]) -> None:
    ciphertext = agecrypt.encrypt(PLAINTEXT, [x25519[0]])
    identities = agecrypt.load_identities(x25519[1])
    binary = pyrage.encrypt(PLAINTEXT, [pyrage.x25519.Recipient.from_str(x25519[0])])
    for cut in (ciphertext[: len(ciphertext) // 2], ciphertext[:-40], binary[:-1], binary[:50]):
        with pytest.raises(InputError) as caught:
            agecrypt.decrypt(cut, identities, what="sealed file")
        assert str(caught.value).startswith("cannot decrypt sealed file (")
        _assert_one_line(caught.value)


def test_bit_flip_anywhere_is_refused(x25519: tuple[str, Path]) -> None:
    identities = agecrypt.load_identities(x25519[1])
    binary = bytes(pyrage.encrypt(PLAINTEXT, [pyrage.x25519.Recipient.from_str(x25519[0])]))
    # header, header MAC, nonce and payload positions alike
    for position in range(0, len(binary), 7):
        flipped = bytearray(binary)
        flipped[position] ^= 0x01
        with pytest.raises(InputError) as caught:
            agecrypt.decrypt(bytes(flipped), identities, what="f")
        _assert_one_line(caught.value)


def test_wrong_identity_is_refused(x25519: tuple[str, Path], tmp_path: Path) -> None:
    ciphertext = agecrypt.encrypt(PLAINTEXT, [x25519[0]])
    with pytest.raises(InputError) as caught:
        agecrypt.decrypt(ciphertext, [agecrypt.generate_x25519()], what="share")
    assert str(caught.value).startswith("cannot decrypt share (")
    _assert_one_line(caught.value)


def test_wrong_ssh_identity_is_refused(
    ssh_ed25519: tuple[str, Path], x25519: tuple[str, Path]
) -> None:
    ciphertext = agecrypt.encrypt(PLAINTEXT, [x25519[0]])
    with pytest.raises(InputError):
        agecrypt.decrypt(ciphertext, agecrypt.load_identities(ssh_ed25519[1]), what="share")


def test_leading_whitespace_before_armor_is_accepted(x25519: tuple[str, Path]) -> None:
    # age (and the CCTV vectors) allow it; YAML block scalars and paper copies add it
    ciphertext = agecrypt.encrypt(PLAINTEXT, [x25519[0]])
    identities = agecrypt.load_identities(x25519[1])
    assert (
        agecrypt.decrypt("\n \t\r\n" + ciphertext + "\n\n", identities, what="f").reveal()
        == PLAINTEXT
    )


def test_recipient_kinds(x25519: tuple[str, Path], ssh_ed25519: tuple[str, Path]) -> None:
    assert agecrypt.recipient_kind(x25519[0]) == "x25519"
    assert agecrypt.recipient_kind(f"  {x25519[0]}\n") == "x25519"
    assert agecrypt.recipient_kind(ssh_ed25519[0]) == "ssh-ed25519"
    assert agecrypt.recipient_kind(_plugin_recipient("yubikey")) == "plugin:yubikey"


def test_ssh_rsa_recipient_kind(tmp_path: Path) -> None:
    keygen = require_tool("ssh-keygen")
    path = tmp_path / "id_rsa"
    subprocess.run(
        [keygen, "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    assert agecrypt.recipient_kind(path.with_suffix(".pub").read_text()) == "ssh-rsa"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "age1",
        "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
        agecrypt.SECRET_KEY_PREFIX + "Q" * 58,
        "ssh-ed25519 AAAAnotbase64!!",
        "ssh-ed25519 ",
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ",
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
        "ecdsa-sha2-nistp256 AAAAE2VjZHNh",
        (FIXTURE_KEYS / "openssh-header-only.txt").read_text().strip(),
        "not a recipient",
    ],
)
def test_malformed_recipient_is_refused(text: str) -> None:
    with pytest.raises(InputError) as caught:
        agecrypt.recipient_kind(text)
    _assert_one_line(caught.value)
    with pytest.raises(InputError):
        agecrypt.encrypt(PLAINTEXT, [text])


def test_recipient_with_a_flipped_character_is_refused(x25519: tuple[str, Path]) -> None:
    recipient = x25519[0]
    last = "q" if recipient[-1] != "q" else "p"
    with pytest.raises(InputError):
        agecrypt.recipient_kind(recipient[:-1] + last)


def test_secret_bytes_round_trip() -> None:
    identity = agecrypt.generate_x25519()
    scalar = agecrypt.secret_bytes(identity)
    assert isinstance(scalar, Secret) and len(scalar.reveal()) == 32
    rebuilt = agecrypt.identity_from_secret(scalar)
    assert agecrypt.public_of(rebuilt) == agecrypt.public_of(identity)
    assert agecrypt.identity_text(rebuilt) == agecrypt.identity_text(identity)
    ciphertext = agecrypt.encrypt(PLAINTEXT, [agecrypt.public_of(identity)])
    assert agecrypt.decrypt(ciphertext, [rebuilt], what="f").reveal() == PLAINTEXT


def test_identity_from_secret_rejects_wrong_length() -> None:
    for raw in (b"", b"\x01" * 31, b"\x01" * 33):
        with pytest.raises(InputError):
            agecrypt.identity_from_secret(Secret(raw))


def test_identity_text_is_masked() -> None:
    identity = agecrypt.generate_x25519()
    text = agecrypt.identity_text(identity)
    assert str(text) == "***" and "AGE-SECRET-KEY" not in repr(text)
    assert text.reveal().startswith(agecrypt.SECRET_KEY_PREFIX.encode())


def test_load_identities_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read identity file"):
        agecrypt.load_identities(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(InputError, match="no identity"):
        agecrypt.load_identities(empty)
    bad = tmp_path / "bad"
    bad.write_text(agecrypt.SECRET_KEY_PREFIX + "NOTAKEY\n")
    with pytest.raises(InputError, match="malformed age identity") as caught:
        agecrypt.load_identities(bad)
    assert "NOTAKEY" not in str(caught.value)


_IDENTITY = pyrage.x25519.Identity.generate()


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from(
        [
            b"",
            b"age-encryption.org/v1\n",
            b"-----BEGIN AGE ENCRYPTED FILE-----\n",
            b"age-encryption.org/v1\n-> X25519 ",
        ]
    ),
    data=st.binary(max_size=512),
)
def test_arbitrary_bytes_give_input_error(prefix: bytes, data: bytes) -> None:
    try:
        agecrypt.decrypt(prefix + data, [_IDENTITY], what="f")
    except InputError as e:
        _assert_one_line(e)
    else:
        pytest.fail("random bytes decrypted")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_gives_recipient_kind_or_input_error(text: str) -> None:
    try:
        kind = agecrypt.recipient_kind(text)
    except InputError as e:
        _assert_one_line(e)
    else:
        assert kind in {"x25519", "ssh-ed25519", "ssh-rsa"} or kind.startswith("plugin:")
