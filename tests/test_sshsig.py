"""sshsig: our signatures are OpenSSH signatures, and verification fails closed."""

from __future__ import annotations

import base64
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from builder.core import sshsig
from builder.core.errors import CheckFailed, InputError, ToolMissing
from tests.conftest import require_tool

DATA = b'{"image":"breakglass-base","version":"1.2.3"}\n'
KEY_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "keys"
NS = sshsig.MANIFEST_NAMESPACE


def _keypair(directory: Path, name: str) -> tuple[Path, str]:
    keygen = require_tool("ssh-keygen")
    path = directory / name
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@example", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path, path.with_suffix(".pub").read_text().strip()


@pytest.fixture
def alice(tmp_path: Path) -> tuple[Path, str]:
    return _keypair(tmp_path, "alice")


@pytest.fixture
def mallory(tmp_path: Path) -> tuple[Path, str]:
    return _keypair(tmp_path, "mallory")


@pytest.fixture
def signature(alice: tuple[Path, str]) -> str:
    return sshsig.sign(DATA, alice[0], NS)


def _flip_signature_byte(signature: str) -> str:
    lines = signature.splitlines()
    # a character in the middle of the base64 body (line 0 is the BEGIN marker)
    body = lines[3]
    middle = len(body) // 2
    lines[3] = body[:middle] + ("A" if body[middle] != "A" else "B") + body[middle + 1 :]
    return "\n".join(lines) + "\n"


def test_sign_then_verify(alice: tuple[Path, str], signature: str) -> None:
    assert signature.startswith("-----BEGIN SSH SIGNATURE-----\n")
    assert signature.rstrip().endswith("-----END SSH SIGNATURE-----")
    assert sshsig.verify(DATA, signature, {"alice": alice[1]}, NS) == "alice"
    assert sshsig.verify(DATA, signature, {"alice": alice[1]}, NS, identity="alice") == "alice"


def test_verify_names_the_signer_among_several(
    alice: tuple[Path, str], mallory: tuple[Path, str], signature: str
) -> None:
    signers = {"mallory": mallory[1], "alice": alice[1]}
    assert sshsig.verify(DATA, signature, signers, NS) == "alice"


def test_changed_data_is_rejected(alice: tuple[Path, str], signature: str) -> None:
    with pytest.raises(CheckFailed):
        sshsig.verify(DATA + b" ", signature, {"alice": alice[1]}, NS)
    with pytest.raises(CheckFailed):
        sshsig.verify(b"", signature, {"alice": alice[1]}, NS)


def test_changed_signature_byte_is_rejected(alice: tuple[Path, str], signature: str) -> None:
    with pytest.raises(CheckFailed):
        sshsig.verify(DATA, _flip_signature_byte(signature), {"alice": alice[1]}, NS)


def test_garbage_signature_is_rejected(alice: tuple[Path, str]) -> None:
    for garbage in (
        "",
        "not a signature",
        "-----BEGIN SSH SIGNATURE-----\n-----END SSH SIGNATURE-----\n",
        "\u00e9\x00",
        # a lone surrogate, as text read with surrogateescape carries an undecodable byte
        "-----BEGIN SSH SIGNATURE-----\n\udcff\n-----END SSH SIGNATURE-----\n",
    ):
        with pytest.raises(CheckFailed):
            sshsig.verify(DATA, garbage, {"alice": alice[1]}, NS)


def test_wrong_namespace_is_rejected(alice: tuple[Path, str], signature: str) -> None:
    with pytest.raises(CheckFailed):
        sshsig.verify(DATA, signature, {"alice": alice[1]}, sshsig.APPROVAL_NAMESPACE)


def test_unknown_signer_is_rejected(
    alice: tuple[Path, str], mallory: tuple[Path, str], signature: str
) -> None:
    with pytest.raises(CheckFailed):
        sshsig.verify(DATA, signature, {"mallory": mallory[1]}, NS)


def test_signature_of_another_principal_is_rejected_for_identity(
    alice: tuple[Path, str], mallory: tuple[Path, str], signature: str
) -> None:
    signers = {"alice": alice[1], "mallory": mallory[1]}
    with pytest.raises(CheckFailed):
        sshsig.verify(DATA, signature, signers, NS, identity="mallory")


def test_empty_signers_fail_closed(signature: str) -> None:
    with pytest.raises(CheckFailed):
        sshsig.verify(DATA, signature, {}, NS)
    with pytest.raises(CheckFailed):
        sshsig.verify_allowed_signers(DATA, signature, " \n", NS)


@pytest.mark.parametrize(
    "principal",
    ["*", "a*", "al?ce", "alice,mallory", "!alice", "alice mallory", "", 'a"b', "a\nb"],
)
def test_principal_patterns_are_refused(
    principal: str, mallory: tuple[Path, str], alice: tuple[Path, str]
) -> None:
    # allowed_signers treats principals as patterns; a wildcard from a spec must not let
    # mallory's key sign as alice
    signature = sshsig.sign(DATA, mallory[0], NS)
    with pytest.raises((InputError, CheckFailed)):
        sshsig.verify(DATA, signature, {principal: mallory[1]}, NS, identity="alice")
    with pytest.raises(InputError):
        sshsig.verify(DATA, signature, {principal: mallory[1], "alice": alice[1]}, NS)


def test_key_line_cannot_inject_another_signer(
    alice: tuple[Path, str], mallory: tuple[Path, str]
) -> None:
    signature = sshsig.sign(DATA, mallory[0], NS)
    injected = f"{alice[1]}\nalice {mallory[1]}"
    with pytest.raises(InputError):
        sshsig.verify(DATA, signature, {"alice": injected}, NS, identity="alice")


def test_namespace_cannot_inject_options(alice: tuple[Path, str], signature: str) -> None:
    with pytest.raises(InputError):
        sshsig.verify(DATA, signature, {"alice": alice[1]}, 'x" cert-authority namespaces="y')


def test_sign_with_missing_key_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="signing key not found"):
        sshsig.sign(DATA, tmp_path / "nope", NS)


def test_sign_with_unusable_key_is_input_error(tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    bad = tmp_path / "bad_key"
    bad.write_text("not a key\n")
    bad.chmod(0o600)
    with pytest.raises(InputError) as caught:
        sshsig.sign(DATA, bad, NS)
    assert "\n" not in str(caught.value)


def test_stock_ssh_keygen_accepts_our_signature(
    alice: tuple[Path, str], signature: str, tmp_path: Path
) -> None:
    keygen = require_tool("ssh-keygen")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'alice@example namespaces="{NS}" {alice[1]}\n')
    sig = tmp_path / "manifest.sig"
    sig.write_text(signature)

    def run(data: bytes, namespace: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                keygen,
                "-Y",
                "verify",
                "-f",
                str(allowed),
                "-I",
                "alice@example",
                "-n",
                namespace,
                "-s",
                str(sig),
            ],
            input=data,
            capture_output=True,
            check=False,
        )

    ok = run(DATA, NS)
    assert ok.returncode == 0, ok.stderr.decode()
    assert b"Good" in ok.stdout + ok.stderr
    # and the same tool refuses what we refuse
    assert run(DATA + b"x", NS).returncode != 0
    assert run(DATA, sshsig.APPROVAL_NAMESPACE).returncode != 0


def test_sign_error_names_the_key_and_ssh_keygen_first_line(tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    bad = tmp_path / "bad_key"
    bad.write_text("not a key\n")
    bad.chmod(0o600)
    with pytest.raises(InputError) as caught:
        sshsig.sign(DATA, bad, NS)
    assert caught.value.message == (
        f"{bad}: ssh-keygen could not sign (Couldn't load public key {bad}: No such file or directory)"
    )


def test_first_line_of_tool_output() -> None:
    assert sshsig._first_line(b"") == "no message"
    assert sshsig._first_line(b" \n\n") == "no message"
    assert sshsig._first_line(b"  first\nsecond\n") == "first"
    assert sshsig._first_line(b"x" * 200) == "x" * 160
    assert sshsig._first_line(b"bad \xff byte") == "bad \ufffd byte"


def test_verify_without_identity_finds_each_signer(
    alice: tuple[Path, str], mallory: tuple[Path, str], signature: str
) -> None:
    by_mallory = sshsig.sign(DATA, mallory[0], NS)
    signers = {"alice": alice[1], "mallory": mallory[1]}
    assert sshsig.verify(DATA, by_mallory, signers, NS) == "mallory"
    assert sshsig.verify(DATA, signature, signers, NS) == "alice"
    allowed = f'alice namespaces="{NS}" {alice[1]}\n'
    assert sshsig.verify_allowed_signers(DATA, signature, allowed, NS) == "alice"
    with pytest.raises(CheckFailed, match="does not verify against the trusted keys"):
        sshsig.verify_allowed_signers(DATA, by_mallory, allowed, NS)
    with pytest.raises(CheckFailed, match="allowed signers list is empty"):
        sshsig.verify_allowed_signers(DATA, signature, " \n", NS)


WORD_RULE = "must be letters, digits and . _ @ + - (no spaces, quotes or patterns)"


def test_unsafe_names_are_refused_by_what_they_are(alice: tuple[Path, str], signature: str) -> None:
    with pytest.raises(InputError) as caught:
        sshsig.verify(DATA, signature, {"alice": alice[1]}, "name space")
    assert caught.value.message == f"namespace {WORD_RULE}"
    with pytest.raises(InputError) as caught:
        sshsig.verify(DATA, signature, {"alice": alice[1]}, NS, identity="al*")
    assert caught.value.message == f"signer name {WORD_RULE}"
    with pytest.raises(InputError) as caught:
        sshsig.verify(DATA, signature, {"al ice": alice[1]}, NS)
    assert caught.value.message == f"signer name {WORD_RULE}"


def test_verification_prints_nothing(
    alice: tuple[Path, str], mallory: tuple[Path, str], signature: str,
    capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    capfd.readouterr()
    signers = {"alice": alice[1], "mallory": mallory[1]}
    assert sshsig.verify(DATA, signature, signers, NS) == "alice"
    assert sshsig.verify(DATA, signature, signers, NS, identity="alice") == "alice"
    with pytest.raises(CheckFailed):
        sshsig.verify(DATA, signature, signers, NS, identity="mallory")
    # data that is not what was signed: ssh-keygen says so on its stderr, which is not ours
    with pytest.raises(CheckFailed):
        sshsig.verify(DATA + b"x", signature, signers, NS, identity="alice")
    assert capfd.readouterr() == ("", "")


_SIGN_FROM_PIPED_STDIN = """
import sys
from pathlib import Path
from builder.core import sshsig
from builder.core.errors import InputError
try:
    sshsig.sign(b"data", Path(sys.argv[1]), "file")
except InputError as e:
    print(e.message)
print(repr(sys.stdin.buffer.read()))
"""


def test_sign_never_reads_a_passphrase_from_our_stdin(tmp_path: Path) -> None:
    # without a terminal ssh-keygen reads a key's passphrase from its stdin; ours may
    # carry a request piped to us, so sign gives it nothing: the locked key fails at once.
    # The signer runs in a session of its own, so no terminal is there whoever runs the test.
    keygen = require_tool("ssh-keygen")
    key = tmp_path / "locked"
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "hunter2", "-f", str(key)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    # the control, in this process (where mutation testing sees the test reach sign): the
    # same call with a key that needs no passphrase signs
    open_key, open_public = _keypair(tmp_path, "open")
    signed = sshsig.sign(b"data", open_key, "file")
    assert sshsig.verify(b"data", signed, {"open": open_public}, "file") == "open"
    env = {k: v for k, v in os.environ.items() if k not in _ASKPASS}
    child = subprocess.run(
        [sys.executable, "-c", _SIGN_FROM_PIPED_STDIN, str(key)],
        input=b"hunter2\n", capture_output=True, env=env, start_new_session=True,
        cwd=Path(__file__).resolve().parent.parent, timeout=60, check=True,
    )  # fmt: skip
    message, rest = child.stdout.decode().splitlines()
    assert "ssh-keygen could not sign" in message
    assert rest == repr(b"hunter2\n")  # still there for its real reader


_ASKPASS = ("DISPLAY", "WAYLAND_DISPLAY", "SSH_ASKPASS", "SSH_ASKPASS_REQUIRE")


def _ssh_string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _security_key_without_device(path: Path) -> None:
    """An unencrypted OpenSSH ed25519-sk private key whose FIDO token is nowhere."""
    kind = b"sk-ssh-ed25519@openssh.com"
    public = _ssh_string(kind) + _ssh_string(b"\x11" * 32) + _ssh_string(b"ssh:")
    private = (
        struct.pack(">II", 7, 7) + public
        + b"\x00"  # flags: no touch asked for, so the first thing it prints is the failure
        + _ssh_string(b"\x01" * 32) + _ssh_string(b"") + _ssh_string(b"token@example")
    )  # fmt: skip
    private += bytes(range(1, 1 + (-len(private) % 8)))
    blob = (
        b"openssh-key-v1\x00" + _ssh_string(b"none") + _ssh_string(b"none") + _ssh_string(b"")
        + struct.pack(">I", 1) + _ssh_string(public) + _ssh_string(private)
    )  # fmt: skip
    body = base64.b64encode(blob).decode()
    lines = [body[i : i + 70] for i in range(0, len(body), 70)]
    # the armor's first line from the fixtures (key material stays out of test code)
    begin = (KEY_FIXTURES / "openssh-header-only.txt").read_text().strip()
    text = "\n".join([begin, *lines, begin.replace("BEGIN", "END")])
    path.write_text(text + "\n")
    path.chmod(0o600)


def test_sign_failure_reports_the_reason_not_the_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the key loads, then signing fails (no token): the error quotes why, and not the
    # "Signing file ..." line that ssh-keygen prints first unless told to be quiet
    require_tool("ssh-keygen")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("SSH_SK_PROVIDER", raising=False)
    key = tmp_path / "token"
    _security_key_without_device(key)
    with pytest.raises(InputError) as caught:
        sshsig.sign(DATA, key, NS)
    message = caught.value.message
    assert message.startswith(f"{key}: ssh-keygen could not sign (")
    assert "Signing file" not in message
    assert "sign" in message.split("(", 1)[1]


def test_cancelled_signing_stops_ssh_keygen_and_leaves_no_files(alice: tuple[Path, str]) -> None:
    # a build that fails after starting to sign cancels: no ssh-keygen left, no message on disk
    signing = sshsig.start_sign(b"manifest", alice[0], "breakglass-image")
    folder = signing._tmp.path
    assert (folder / "message").read_bytes() == b"manifest"
    signing.cancel()
    assert signing._proc.returncode is not None
    assert not folder.exists()
    signing.cancel()  # a second cancel has nothing left to stop


def test_signing_result_then_cancel_keeps_the_signature(alice: tuple[Path, str]) -> None:
    signing = sshsig.start_sign(b"manifest", alice[0], "breakglass-image")
    armored = signing.result()
    signing.cancel()
    assert armored.startswith("-----BEGIN SSH SIGNATURE-----")
    assert sshsig.verify(b"manifest", armored, {"alice": alice[1]}, "breakglass-image") == "alice"


def test_verifications_run_at_once_and_each_gives_its_own_answer(
    alice: tuple[Path, str], mallory: tuple[Path, str], signature: str
) -> None:
    # an unseal starts one check per approval before it takes any result
    theirs = sshsig.sign(DATA, mallory[0], NS)
    signers = {"alice": alice[1], "mallory": mallory[1]}
    good = sshsig.start_verify(DATA, signature, signers, NS, identity="alice")
    forged = sshsig.start_verify(DATA, theirs, signers, NS, identity="alice")
    changed = sshsig.start_verify(DATA + b"x", theirs, signers, NS, identity="mallory")
    also = sshsig.start_verify(DATA, theirs, signers, NS, identity="mallory")
    running = [good, forged, changed, also]
    assert all(v._proc.pid for v in running)
    folders = [v._tmp.path for v in running]
    assert (folders[0] / "message").read_bytes() == DATA
    assert good.result() == "alice"
    with pytest.raises(CheckFailed) as caught:
        forged.result()
    assert caught.value.message == "signature does not verify against the trusted keys"
    with pytest.raises(CheckFailed):
        changed.result()
    assert also.result() == "mallory"
    assert not any(f.exists() for f in folders)  # taken results leave no file behind


def test_start_verify_checks_its_inputs_as_verify_does(
    alice: tuple[Path, str], signature: str
) -> None:
    with pytest.raises(CheckFailed):
        sshsig.start_verify(DATA, signature, {}, NS, identity="alice")
    with pytest.raises(InputError):
        sshsig.start_verify(DATA, signature, {"*": alice[1]}, NS, identity="alice")
    with pytest.raises(InputError):
        sshsig.start_verify(DATA, signature, {"alice": alice[1]}, NS, identity="al*")
    with pytest.raises(InputError):
        sshsig.start_verify(DATA, signature, {"alice": alice[1] + "\nx"}, NS, identity="alice")
    with pytest.raises(CheckFailed):
        sshsig.Verifying(DATA, signature, " \n", NS, "alice")


def test_cancelled_verification_stops_ssh_keygen_and_leaves_no_files(
    alice: tuple[Path, str], signature: str
) -> None:
    verifying = sshsig.start_verify(DATA, signature, {"alice": alice[1]}, NS, identity="alice")
    folder = verifying._tmp.path
    assert folder.exists()
    verifying.cancel()
    assert verifying._proc.returncode is not None
    assert not folder.exists()
    verifying.cancel()  # a second cancel has nothing left to stop
    taken = sshsig.start_verify(DATA, signature, {"alice": alice[1]}, NS, identity="alice")
    assert taken.result() == "alice"
    taken.cancel()  # after the result: nothing to stop, and no error
    assert taken._proc.returncode == 0


_VERIFY_WITH_PIPED_STDIN = """
import sys
from builder.core import sshsig
signature, key = open(sys.argv[1]).read(), open(sys.argv[2]).read()
verifying = sshsig.start_verify(b"signed", signature, {"alice": key}, "file", identity="alice")
print(verifying.result())
print(repr(sys.stdin.buffer.read()))
"""


def test_verification_never_reads_our_stdin(alice: tuple[Path, str], tmp_path: Path) -> None:
    # the message reaches ssh-keygen from a file of the check's own: a request piped to us
    # is neither taken as the message (which would fail the check) nor swallowed
    (tmp_path / "sig").write_text(sshsig.sign(b"signed", alice[0], "file"))
    (tmp_path / "key").write_text(alice[1])
    child = subprocess.run(
        [sys.executable, "-c", _VERIFY_WITH_PIPED_STDIN, str(tmp_path / "sig"),
         str(tmp_path / "key")],
        input=b"not what was signed\n", capture_output=True, timeout=60, check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert child.stdout.decode().splitlines() == ["alice", repr(b"not what was signed\n")]


def test_ssh_keygen_is_found_on_path_as_shutil_which_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    real = require_tool("ssh-keygen")
    plain, folder = tmp_path / "plain", tmp_path / "folder"
    plain.mkdir()
    (plain / "ssh-keygen").write_text("not executable")
    (folder / "ssh-keygen").mkdir(parents=True)  # a folder of that name is not a program
    path = os.pathsep.join(["", str(plain), str(folder), str(Path(real).parent)])
    monkeypatch.setenv("PATH", path)
    assert sshsig._ssh_keygen() == real == shutil.which("ssh-keygen")
    monkeypatch.setenv("PATH", os.pathsep.join([str(plain), str(folder)]))
    with pytest.raises(ToolMissing) as caught:
        sshsig._ssh_keygen()
    assert caught.value.message == "ssh-keygen is not installed"
    assert caught.value.hint == "apt-get install openssh-client"


def test_scratch_folders_are_private_new_and_removed_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    names = iter([b"\0" * 8, b"\0" * 8, b"\1" * 8])
    monkeypatch.setattr(os, "urandom", lambda n: next(names))
    first, second = sshsig._Scratch("x-"), sshsig._Scratch("x-")
    assert (first.path, second.path) == (tmp_path / f"x-{'00' * 8}", tmp_path / f"x-{'01' * 8}")
    assert first.path.stat().st_mode & 0o777 == 0o700
    (first.path / "message").write_bytes(b"m")
    (first.path / "message.sig").write_bytes(b"s")
    first.cleanup()
    assert not first.path.exists() and second.path.is_dir()
    first.cleanup()  # again: nothing left to remove
    monkeypatch.setattr(os, "urandom", lambda n: b"\1" * 8)
    with pytest.raises(FileExistsError):
        sshsig._Scratch("x-")  # every name taken: it gives up rather than share a folder
    monkeypatch.delenv("TMPDIR")
    monkeypatch.setattr(os, "urandom", lambda n: b"\2" * 8)
    default = sshsig._Scratch("breakglass-test-")
    assert default.path.parent == Path("/tmp")
    default.cleanup()
