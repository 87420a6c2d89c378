"""The build's record of its inputs, and the no-op rebuild it answers before anything heavy loads.

A build writes ``OUT/.breakglass-build/KEY.json`` beside its output (KEY:
the spec's and the signing key's resolved paths). The record names every
input the build read and every file it left in ``OUT/NAME/VERSION``:

- the spec, the sealed bundle, every file of the templates folder (and the
  folder's listing, so a new template counts), the base layout's files and
  listing, the host runtime's sources when the image carries them;
- the signing key's public key (never anything of the private key) and its
  type: only ed25519 and RSA sign deterministically, so only their builds
  are recorded;
- the tool: every module the build process had loaded (path, size and
  mtime), the interpreter, zlib, and ``SOURCE_DATE_EPOCH``;
- the outputs: each file's size and digest.

``fast_main`` runs ``build`` with only the standard library: when every input
and output is as recorded it prints what the full build prints for an
unchanged version and exits 0, before click, jinja2 or ruamel load. Any
difference (a file changed, added or gone, another tool, an odd command
line) falls through to the full build, which decides as it always did. A
file whose inode, size, mtime and ctime are all as recorded is taken as
unchanged (ctime is the kernel's, no user can set it); any other is hashed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

TYPE_CHECKING = False  # typing costs the start of every no-op rebuild
if TYPE_CHECKING:
    from typing import Any

    from builder.release.build import BuildPlan, BuildResult

RECORD_DIR = ".breakglass-build"
FORMAT = 1
# ECDSA and security keys sign differently each time
DETERMINISTIC_KEYS = ("ssh-ed25519", "ssh-rsa")
_CHUNK = 1 << 20
REPORT_URL = "https://github.com/breakglass-dev/breakglass/issues"


def _sha256() -> Any:
    if "hashlib" not in sys.modules:
        try:  # the interpreter's own: importing OpenSSL's costs a no-op rebuild milliseconds
            from _sha256 import sha256  # type: ignore[import-not-found]

            return sha256()
        except ImportError:  # pragma: no cover - other interpreters
            pass
    from hashlib import sha256  # loaded already by a full build: several times faster

    return sha256()


def file_digest(path: str) -> str:
    h = _sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return str(h.hexdigest())


def record_path(out: Path, spec: Path, sign_key: Path | None) -> Path:
    h = _sha256()
    h.update(repr((str(spec.resolve()), str(sign_key.resolve()) if sign_key else None)).encode())
    return out / RECORD_DIR / f"{h.hexdigest()[:32]}.json"


def result_output(
    as_json: bool, name: str, version: str, image_dir: Path, result: dict[str, Any]
) -> str:
    """What ``build`` prints for a finished build (``result``: image and manifest digests,
    whether signed and whether anything changed); one text for both paths."""
    if as_json:
        import json

        doc = {"image_dir": str(image_dir), **result}
        return json.dumps(doc, indent=2, sort_keys=True)
    state = "built" if result["changed"] else "unchanged (identical content already built)"
    return (
        f"{state}: {name} {version} -> {image_dir}\n"
        + (f"image {result['image_digest']}\n" if result["image_digest"] else "")
        + f"manifest {result['manifest_digest']}"
        + ("" if result["signed"] else "\nwarning: unsigned (pass --sign-key)")
    )


# -- the signing key: its public half, read without decrypting anything ---------------------


def _ssh_string(data: bytes, pos: int) -> tuple[bytes, int]:
    n = int.from_bytes(data[pos : pos + 4], "big")
    if pos + 4 + n > len(data):
        raise ValueError("truncated")
    return data[pos + 4 : pos + 4 + n], pos + 4 + n


def public_key(path: Path) -> tuple[str, str] | None:
    """``(type, base64 blob)`` of the key in an OpenSSH private key file or a ``.pub`` file.

    The private key format keeps the public key in the clear before the
    (possibly encrypted) private part. None for any other format.
    """
    import binascii

    try:
        text = path.read_bytes()
    except OSError:
        return None
    try:
        if path.suffix == ".pub":
            blob_b64 = text.split()[1]
            blob = binascii.a2b_base64(blob_b64)
        else:
            lines = text.strip().splitlines()
            if not lines[0].startswith(b"-----BEGIN "):
                return None
            # the format is told by the armored body's magic, not by the armor's words
            data = binascii.a2b_base64(b"".join(lines[1:-1]))
            magic = b"openssh-key-v1\0"
            if not data.startswith(magic):
                return None
            pos = len(magic)
            for _ in range(3):  # cipher, kdf, kdf options
                _, pos = _ssh_string(data, pos)
            if int.from_bytes(data[pos : pos + 4], "big") != 1:
                return None
            blob, _ = _ssh_string(data, pos + 4)
        key_type, _ = _ssh_string(blob, 0)
        return key_type.decode("ascii"), binascii.b2a_base64(blob, newline=False).decode("ascii")
    except (ValueError, IndexError, UnicodeDecodeError, binascii.Error):
        return None


# -- files -------------------------------------------------------------------------------


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    import stat

    if not stat.S_ISREG(st.st_mode):
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _entry(path: str, digest: str | None = None) -> list[Any]:
    """``[digest, inode, size, mtime_ns, ctime_ns]`` of a regular file; ``digest`` when the
    caller knows it (a blob named by its digest, just checked)."""
    st = _stat(path)
    if st is None:
        raise FileNotFoundError(path)
    return [digest or file_digest(path), *st]


def _same(path: str, entry: list[Any]) -> bool:
    st = _stat(path)
    if st is None:
        return False
    if st == entry[1:]:
        return True
    return bool(st[1] == entry[2] and file_digest(path) == entry[0])


def _listing(root: str, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """Every regular file under ``root`` (ending in one of ``suffixes``, outside
    ``__pycache__``, when given), relative, sorted; links followed, as the build reads them."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        if suffixes is not None:
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel = os.path.relpath(dirpath, root)
        for name in filenames:
            if suffixes is not None and not name.endswith(suffixes):
                continue
            if os.path.isfile(os.path.join(dirpath, name)):
                found.append(name if rel == "." else f"{rel}/{name}")
    return sorted(found)


def _blob_digest(rel: str) -> str | None:
    """The digest a content-addressed blob's name states (``blobs/sha256/HEX``)."""
    parts = rel.split("/")
    if len(parts) >= 3 and parts[-3:-1] == ["blobs", "sha256"] and len(parts[-1]) == 64:
        return parts[-1]
    return None


def _tool() -> dict[str, Any]:
    import zlib

    return {
        "python": [sys.version, sys.executable, sys.implementation.cache_tag],
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "source_date_epoch": os.environ.get("SOURCE_DATE_EPOCH"),
    }


def _modules() -> list[list[Any]]:
    """Every module source this process loaded: the build's code, its libraries', python's."""
    found = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path not in found:
            try:
                st = os.stat(path)
            except OSError:
                continue
            found[path] = [path, st.st_size, st.st_mtime_ns]
    return sorted(found.values())


# -- writing -----------------------------------------------------------------------------


def write(
    plan: BuildPlan,
    result: BuildResult,
    out: Path,
    sign_key: Path | None,
    runtime: tuple[str, tuple[str, ...], list[str]] | None = None,
) -> Path | None:
    """Record a finished OCI build of ``plan`` at ``out``; the record's path, or None when this
    build cannot be answered from a record (a key that signs differently each time).

    ``runtime``, for an image that carries the host runtime: the package folder it copies,
    the suffixes it takes from there, and the other files it reads (the libraries')."""
    import json

    key = None
    if sign_key is not None:
        key = public_key(sign_key)
        if key is None or key[0] not in DETERMINISTIC_KEYS:
            return None
    spec = plan.spec
    inputs: dict[str, list[Any]] = {}
    trees: list[list[Any]] = []  # [root, suffixes or None, listing]

    def tree(root: str, suffixes: tuple[str, ...] | None, blobs: bool) -> None:
        listing = _listing(root, suffixes)
        trees.append([root, list(suffixes) if suffixes else None, listing])
        for rel in listing:
            name = os.path.join(root, rel)
            # a base blob is named by its digest, and planning just hashed it
            inputs[name] = _entry(name, _blob_digest(rel) if blobs else None)

    for source in (spec.path, spec.sealed_path):
        inputs[str(source.resolve())] = _entry(str(source))
    tree(str(spec.templates_dir.resolve()), None, False)
    if plan.base is not None:
        tree(str(plan.base.resolve()), None, True)
    if runtime is not None:
        package, suffixes, files = runtime
        tree(package, suffixes, False)
        for name in files:
            inputs[name] = _entry(name)
    image_dir = result.image_dir
    listing = _listing(str(image_dir))
    if not result.changed and set(listing) != _complete(image_dir, result.signed, listing):
        return None  # a file missing or one too many: not recorded as fine
    outputs = {}
    for rel in listing:
        named = _blob_digest(rel)
        if result.changed:  # just written (or linked from the base planning hashed)
            outputs[rel] = _entry(str(image_dir / rel), named)
            continue
        # found there: the full build compared its manifest, not every blob, so hash them
        outputs[rel] = _entry(str(image_dir / rel))
        if named is not None and outputs[rel][0] != named:
            return None  # a damaged layout is for `verify` to find, never recorded as fine
    record = {
        "format": FORMAT,
        "tool": _tool(),
        "modules": _modules(),
        "sign_key": [str(sign_key.resolve()), *key] if sign_key is not None and key else None,
        "inputs": inputs,
        "trees": trees,
        "image": [spec.name, spec.version],
        "outputs": outputs,
        "result": {
            "image_digest": result.image_digest,
            "manifest_digest": result.manifest_digest,
            "signed": result.signed,
        },
    }
    path = record_path(out, spec.path, sign_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    # not synced: a record lost or cut short by a crash only means the next build does the work
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _complete(image_dir: Path, signed: bool, listing: list[str]) -> set[str]:
    """The files a build leaves in ``image_dir``: the layout's blobs as its index and manifests
    name them, the manifest, its signature when signed, and ``oci.tar`` if one was asked for."""
    import json

    from builder.release.build import MANIFEST_NAME, SIGNATURE_NAME

    def blob(digest: str) -> str:
        return "oci/blobs/" + digest.replace(":", "/", 1)

    wanted = {"oci/oci-layout", "oci/index.json", MANIFEST_NAME}
    wanted |= {SIGNATURE_NAME} if signed else set()
    wanted |= {"oci.tar"} & set(listing)
    try:
        index = json.loads((image_dir / "oci/index.json").read_bytes())
        for entry in index["manifests"]:
            wanted.add(blob(entry["digest"]))
            manifest = json.loads((image_dir / blob(entry["digest"])).read_bytes())
            wanted.add(blob(manifest["config"]["digest"]))
            wanted |= {blob(layer["digest"]) for layer in manifest["layers"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()
    return wanted


# -- checking ----------------------------------------------------------------------------


def unchanged(
    out: Path, spec: Path, sign_key: Path | None
) -> tuple[list[str], dict[str, Any]] | None:
    """``([name, version], result)`` when the record for this build says nothing changed and
    the output is there as it was written; else None (the full build decides)."""
    import json

    try:
        record = json.loads(record_path(out, spec, sign_key).read_bytes())
        if record.get("format") != FORMAT or record["tool"] != _tool():
            return None
        for path, size, mtime in record["modules"]:
            st = os.stat(path)
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                return None
        if sign_key is None:
            if record["sign_key"] is not None:
                return None
        else:
            key = public_key(sign_key)
            if key is None or record["sign_key"] != [str(sign_key.resolve()), *key]:
                return None
        for root, suffixes, listing in record["trees"]:
            if _listing(root, tuple(suffixes) if suffixes else None) != listing:
                return None
        for path, entry in record["inputs"].items():
            if not _same(path, entry):
                return None
        name, version = record["image"]
        image_dir = out / name / version
        outputs = record["outputs"]
        if _listing(str(image_dir)) != sorted(outputs):
            return None
        for rel, entry in outputs.items():
            if not _same(str(image_dir / rel), entry):
                return None
        result = record["result"]
        return [name, version], {
            "image_digest": str(result["image_digest"]),
            "manifest_digest": str(result["manifest_digest"]),
            "signed": bool(result["signed"]),
            "changed": False,
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _parse(argv: list[str]) -> tuple[Path, Path, Path | None, bool] | None:
    """``build`` argv as (spec, out, sign key, --json) when it is one this module answers:
    SPEC with --out, --sign-key and --json only; else None (click parses it)."""
    options: dict[str, str] = {}
    positional: list[str] = []
    as_json = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--json":
            as_json = True
            continue
        name, eq, value = arg.partition("=")
        if name in ("--out", "--sign-key"):
            if not eq:
                if i >= len(argv):
                    return None
                value = argv[i]
                i += 1
            if not value or value.startswith("-"):
                return None
            options[name] = value
        elif arg.startswith("-"):
            return None  # --help, --tar, --dry-run, --backend, --: the full command
        else:
            positional.append(arg)
    if len(positional) != 1 or not positional[0]:
        return None
    sign = options.get("--sign-key")
    return (
        Path(positional[0]),
        Path(options.get("--out", "dist")),
        Path(sign) if sign else None,
        as_json,
    )


def fast_main(argv: list[str]) -> int | None:
    """Run ``build ARGV`` without click: the exit code, or None when click must answer.

    A build the record answers prints the no-op result; any other runs in full, as the
    click command would, with its errors reported as ``builder.cli.main`` reports them.
    """
    parsed = _parse(argv)
    if parsed is None:
        return None
    spec, out, sign_key, as_json = parsed
    found = unchanged(out, spec, sign_key)
    if found is not None:
        (name, version), result = found
        text = result_output(as_json, name, version, out / name / version, result)
    else:
        # paths click refuses get click's own message
        if spec.is_dir() or out.is_file() or (sign_key is not None and sign_key.is_dir()):
            return None
        try:
            text = full_build(spec, out, sign_key, as_json)
        except KeyboardInterrupt:
            return _fail("interrupted", None, 130)
        except Exception as e:
            from builder.core.errors import BreakglassError

            if isinstance(e, BreakglassError):
                return _fail(e.message, e.hint, e.exit_code)
            return _fail(
                f"internal error ({type(e).__name__}); please report it at {REPORT_URL}", None, 3
            )
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 0


def _fail(message: str, hint: str | None, code: int) -> int:
    from builder.core.display import escape

    sys.stdout.flush()
    sys.stderr.write(f"breakglass: error: {escape(message, backslash=False)}\n")
    if hint:
        sys.stderr.write(f"hint: {escape(hint, backslash=False)}\n")
    sys.stderr.flush()
    return code


def record(plan: BuildPlan, result: BuildResult, out: Path, sign_key: Path | None) -> None:
    """``write`` for a finished OCI build; a record that cannot be written is no error (the
    next build does the work)."""
    runtime = None
    if plan.base is not None:  # an OCI image on a base carries the host runtime
        from builder.release import runtime_payload

        runtime = runtime_payload.sources()
    with contextlib.suppress(OSError):
        write(plan, result, out, sign_key, runtime)


def full_build(spec: Path, out: Path, sign_key: Path | None, as_json: bool) -> str:
    """The OCI build of ``spec`` as ``breakglass build`` runs it, recorded; what it prints."""
    from builder.release.build import build_oci, plan
    from builder.release.spec import load_spec

    parsed = load_spec(spec)
    planned = plan(parsed)
    result = build_oci(planned, out, sign_key)
    record(planned, result, out, sign_key)
    doc = {
        "image_digest": result.image_digest,
        "manifest_digest": result.manifest_digest,
        "signed": result.signed,
        "changed": result.changed,
    }
    return result_output(as_json, parsed.name, parsed.version, result.image_dir, doc)
