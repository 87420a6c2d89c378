"""OpenSSH signatures (sshsig), made and checked by the stock ``ssh-keygen``.

Signing goes through ``ssh-keygen -Y sign`` so that keys held by ssh-agent or
on FIDO hardware work unchanged; verification through ``ssh-keygen -Y verify``
so that what we accept is exactly what any OpenSSH user can check.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from builder.core.errors import CheckFailed, InputError, ToolMissing
from builder.core.toolpath import which

MANIFEST_NAMESPACE = "breakglass-manifest"
APPROVAL_NAMESPACE = "breakglass-approval"

# principal names and namespaces: no allowed_signers pattern characters (* ? ! ,), quotes or spaces
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")
# "TYPE BASE64 [comment]" on one line, no options in front
_KEY_LINE = re.compile(r"(?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/]+={0,2}(?: [^\r\n]*)?")


def _ssh_keygen() -> str:
    path = which("ssh-keygen")
    if not path:
        raise ToolMissing("ssh-keygen is not installed", hint="apt-get install openssh-client")
    return path


class _Scratch:
    """A new private folder (0700) for one ``ssh-keygen`` run's files, in ``$TMPDIR`` or
    ``/tmp``, made as ``tempfile.mkdtemp`` makes one (a random name, never an existing
    folder) without importing tempfile and shutil (a tenth of a host unseal)."""

    def __init__(self, prefix: str) -> None:
        base = os.environ.get("TMPDIR") or "/tmp"  # noqa: S108 (a new 0700 folder, below)
        for _ in range(100):
            self.path = Path(base) / f"{prefix}{os.urandom(8).hex()}"
            try:
                self.path.mkdir(0o700)
                return
            except FileExistsError:
                continue
        raise FileExistsError(f"no new folder name under {base}")

    def cleanup(self) -> None:
        """Remove the folder and the files in it (ssh-keygen makes no folders); again: no-op."""
        try:
            for entry in os.scandir(self.path):
                os.unlink(entry.path)
            self.path.rmdir()
        except FileNotFoundError:
            pass


def sign(data: bytes, key: Path, namespace: str) -> str:
    """Sign ``data`` with the private key file ``key`` (or a ``.pub`` whose key is in ssh-agent).

    Returns the armored ``-----BEGIN SSH SIGNATURE-----`` text.
    """
    return start_sign(data, key, namespace).result()


class Signing:
    """``ssh-keygen -Y sign`` running: the caller goes on with other work, then takes
    ``result()`` (which raises what ``sign`` raises) once, or ``cancel()``."""

    def __init__(self, data: bytes, key: Path, namespace: str) -> None:
        self.key = key
        self._tmp = _Scratch("breakglass-sign-")
        try:
            self._msg = self._tmp.path / "message"
            self._msg.write_bytes(data)
            self._proc = subprocess.Popen(
                [
                    _ssh_keygen(),
                    "-q",
                    "-Y",
                    "sign",
                    "-f",
                    str(key),
                    "-n",
                    namespace,
                    str(self._msg),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except BaseException:
            self._tmp.cleanup()
            raise

    def result(self) -> str:
        try:
            _, stderr = self._proc.communicate()
            sig = self._msg.with_name("message.sig")
            if self._proc.returncode != 0 or not sig.exists():
                raise InputError(
                    f"ssh-keygen could not sign ({_first_line(stderr)})", where=str(self.key)
                )
            return sig.read_bytes().decode()
        finally:
            self._tmp.cleanup()

    def cancel(self) -> None:
        """Stop, for a caller that will not take the result (after ``result()``: nothing to
        stop; the temporary folder's cleanup may run twice)."""
        if self._proc.returncode is None:  # not yet waited for by ``result()``
            self._proc.kill()  # Popen sends nothing to a process that has exited
            self._proc.communicate()
        self._tmp.cleanup()


def start_sign(data: bytes, key: Path, namespace: str) -> Signing:
    """Start signing ``data`` as ``sign`` does; the signature comes from ``.result()``."""
    if not key.exists():
        raise InputError("signing key not found", where=str(key))
    return Signing(data, key, namespace)


def verify(
    data: bytes,
    signature: str,
    signers: Mapping[str, str],
    namespace: str,
    *,
    identity: str | None = None,
) -> str:
    """Check ``signature`` over ``data`` against ``signers`` (principal -> public key line).

    With ``identity``, only that principal may have signed. Returns the principal
    whose key made the signature. Raises CheckFailed when it does not verify.
    An empty ``signers`` is an error: verification fails closed.
    """
    allowed = _allowed_signers(signers, namespace, identity)
    return verify_allowed_signers(data, signature, allowed, namespace, identity=identity)


def start_verify(
    data: bytes, signature: str, signers: Mapping[str, str], namespace: str, *, identity: str
) -> Verifying:
    """Start checking, as ``verify`` does, that ``identity`` signed ``data``; the caller goes
    on with other work (another check, say) and takes ``.result()``, or ``.cancel()``s."""
    return Verifying(data, signature, _allowed_signers(signers, namespace, identity), namespace,
                     identity)  # fmt: skip


def _allowed_signers(signers: Mapping[str, str], namespace: str, identity: str | None) -> str:
    if not signers:
        raise CheckFailed("no trusted signers given; refusing to verify")
    # allowed_signers treats principals as patterns and each line as options + key: a
    # "*" principal or a newline in a key would let another key sign in someone's name
    _check_word("namespace", namespace)
    if identity is not None:
        _check_word("signer name", identity)
    for principal, key in signers.items():
        _check_word("signer name", principal)
        if not _KEY_LINE.fullmatch(key.strip()):
            raise InputError(f"trusted key of {principal} is not one ssh public key line")
    return "".join(
        f'{principal} namespaces="{namespace}" {key.strip()}\n'
        for principal, key in signers.items()
    )


def verify_allowed_signers(
    data: bytes,
    signature: str,
    allowed_signers: str,
    namespace: str,
    *,
    identity: str | None = None,
) -> str:
    """Like ``verify`` but with an OpenSSH ``allowed_signers`` file's text."""
    if identity:
        return Verifying(data, signature, allowed_signers, namespace, identity).result()
    if not allowed_signers.strip():
        raise CheckFailed("the allowed signers list is empty; refusing to verify")
    tmp = _Scratch("breakglass-verify-")
    try:
        allowed_path, sig_path = _write_inputs(tmp.path, allowed_signers, signature)
        for principal in _principals(allowed_path, sig_path):
            proc = _keygen(
                "-Y", "verify", "-f", str(allowed_path), "-I", principal,
                "-n", namespace, "-s", str(sig_path),
                data=data,
            )  # fmt: skip
            if proc.returncode == 0:
                return principal
    finally:
        tmp.cleanup()
    raise CheckFailed("signature does not verify against the trusted keys")


class Verifying:
    """``ssh-keygen -Y verify`` of one signer running: several run at once (an unseal checks
    each approval's signature so). Take ``result()`` (the principal, or CheckFailed as
    ``verify`` raises it) once, or ``cancel()``; either leaves no process or file behind."""

    def __init__(
        self, data: bytes, signature: str, allowed_signers: str, namespace: str, identity: str
    ) -> None:
        if not allowed_signers.strip():
            raise CheckFailed("the allowed signers list is empty; refusing to verify")
        self.identity = identity
        self._tmp = _Scratch("breakglass-verify-")
        try:
            folder = self._tmp.path
            allowed_path, sig_path = _write_inputs(folder, allowed_signers, signature)
            message = folder / "message"
            message.write_bytes(data)
            # the message from a file, never our own stdin (see ``_keygen``), and never a pipe
            # this process must fill while the other checks wait
            with message.open("rb") as stdin:
                self._proc = subprocess.Popen(
                    [
                        _ssh_keygen(), "-Y", "verify", "-f", str(allowed_path), "-I", identity,
                        "-n", namespace, "-s", str(sig_path),
                    ],
                    stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
        except BaseException:
            self._tmp.cleanup()
            raise

    def result(self) -> str:
        try:
            if self._proc.wait() != 0:
                raise CheckFailed("signature does not verify against the trusted keys")
            return self.identity
        finally:
            self._tmp.cleanup()

    def cancel(self) -> None:
        """Stop, for a caller that will not take the result."""
        if self._proc.returncode is None:  # not yet waited for by ``result()``
            self._proc.kill()  # Popen sends nothing to a process that has exited
            self._proc.wait()
        self._tmp.cleanup()


def _write_inputs(folder: Path, allowed_signers: str, signature: str) -> tuple[Path, Path]:
    allowed_path = folder / "allowed_signers"
    allowed_path.write_bytes(allowed_signers.encode())
    sig_path = folder / "sig"
    # a lone surrogate (text read with surrogateescape) becomes "?": it fails to parse
    sig_path.write_bytes(signature.encode(errors="replace"))
    return allowed_path, sig_path


def _check_word(what: str, text: str) -> None:
    if not _WORD.fullmatch(text):
        raise InputError(
            f"{what} must be letters, digits and . _ @ + - (no spaces, quotes or patterns)"
        )


def _principals(allowed_path: Path, sig_path: Path) -> list[str]:
    proc = _keygen("-Y", "find-principals", "-f", str(allowed_path), "-s", str(sig_path))
    # a name goes back to ssh-keygen's command line as the same bytes
    return [os.fsdecode(p) for p in proc.stdout.split()]


def _keygen(*args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run ``ssh-keygen args``; ``data`` is all it can read on its standard input.

    Never our own stdin: without a terminal ssh-keygen reads a key's passphrase
    from it, which would swallow a request piped to us.
    """
    return subprocess.run([_ssh_keygen(), *args], input=data, capture_output=True, check=False)


def _first_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[0][:160] if lines else "no message"
