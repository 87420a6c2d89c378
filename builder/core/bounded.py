"""Reading untrusted documents within bounds: size, nesting, numbers, Unicode, duplicate keys.

Every reader of a document that another machine or person could have
written (request, approval, manifest, enrolment, host state, audit line,
sealed bundle, spec) goes through here first, so that hostile input ends as
one ``InputError`` line, never as a ``RecursionError``, a ``MemoryError`` or
minutes of parsing. The size cap is checked before any parsing; JSON is then
parsed with hooks that refuse duplicate keys, integers longer than
``MAX_INT_DIGITS``, floats that are not finite and the constants ``NaN`` and
``Infinity``; the parsed tree is walked once for depth, node count and lone
surrogates (``"\\ud800"`` is valid JSON but not valid Unicode). Only ``_json``
(json's C scanner) and ``math`` are imported: the sshd login path uses this
module, and ``json`` itself imports ``re`` (a few milliseconds per login);
``json`` is imported only to word an error.

The caps (bytes) are listed in ``docs/formats.md``; change both together.
"""

from __future__ import annotations

import math

from builder.core.errors import InputError

TYPE_CHECKING = False  # typing itself costs the start of every host command
if TYPE_CHECKING:
    from os import PathLike
    from typing import Any

KIB = 1024
MIB = 1024 * KIB

CAPS = {
    "spec": 256 * KIB,
    "sealed bundle": 2 * MIB,
    "manifest": 8 * MIB,
    "request": 1 * MIB,
    "approval": 64 * KIB,
    "enrolment": 4 * MIB,
    "host state": 256 * KIB,
    "audit line": 64 * KIB,
    "audit head": 4 * KIB,
    "receipt": 64 * KIB,
    "check-in": 64 * KIB,
    "activation grant": 64 * KIB,
}
MAX_DEPTH = 32  # our deepest format (a manifest) nests 5 levels; spec ``vars`` get the rest
MAX_NODES = 200_000  # also stops YAML alias expansion ("billion laughs") in a tree walk
MAX_INT_DIGITS = 20  # every integer we write fits in 64 bits
MAX_FLOAT_CHARS = 32


def cap(kind: str) -> int:
    """The size cap in bytes for documents of ``kind`` (a key of ``CAPS``)."""
    return CAPS[kind]


def check_size(size: int, kind: str, where: str | None = None) -> None:
    """Raise InputError when ``size`` bytes is more than ``kind`` may be."""
    if size > CAPS[kind]:
        raise InputError(f"{kind} is larger than its cap of {CAPS[kind]} bytes", where=where)


def read(path: str | PathLike[str], kind: str) -> bytes:
    """Read at most the cap of ``kind`` from ``path``; a larger file raises InputError.

    OSError (including FileNotFoundError) propagates for the caller to word.
    """
    limit = CAPS[kind]
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    check_size(len(data), kind, str(path))
    return data


class NotJson(InputError):
    """The data is not JSON at all (as opposed to JSON that breaks a bound)."""


class _Refused(ValueError):
    """Raised inside the decoder hooks; turned into InputError by ``load_json``."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"duplicate key {_short(key)!r}")
            seen.add(key)
    return doc


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text) if len(text) <= MAX_FLOAT_CHARS else math.inf
    if not math.isfinite(value):
        raise _Refused("a number is out of range")
    return value


def _constant(text: str) -> Any:
    raise _Refused(f"{text} is not a json number")


class _Context:
    """What json's C scanner reads from a ``JSONDecoder``: our hooks, strict strings."""

    strict = True
    object_hook = None
    object_pairs_hook = staticmethod(_pairs)
    parse_float = staticmethod(_float)
    parse_int = staticmethod(_int)
    parse_constant = staticmethod(_constant)


def _c_scanner() -> Any:
    try:
        from _json import make_scanner
    except ImportError:  # pragma: no cover - CPython always has it
        return None
    return make_scanner(_Context())  # type: ignore[arg-type]  # reads the hooks only


# ``json.JSONDecoder(**hooks).decode`` without importing json: the same C scanner it uses
_SCAN = _c_scanner()
_WS = " \t\n\r"


def _decode(text: str) -> Any:
    """``JSONDecoder(hooks).decode(text)``; any failure is judged again by ``json`` itself."""
    if _SCAN is not None:
        start = len(text) - len(text.lstrip(_WS))
        try:
            doc, end = _SCAN(text, start)
        except (StopIteration, ValueError, SystemError):
            # _Refused and not json alike: json words the error below (the C scanner raises
            # json.decoder.JSONDecodeError only once json.decoder is imported, else SystemError)
            pass
        else:
            if not text[end:].strip(_WS):
                return doc
    import json

    decoder = json.JSONDecoder(
        object_pairs_hook=_pairs, parse_int=_int, parse_float=_float, parse_constant=_constant
    )
    return decoder.decode(text)


def load_json(data: bytes | str, kind: str, where: str | None = None) -> Any:
    """Parse one JSON document of ``kind`` within its bounds.

    Raises InputError (one line, no input echoed beyond a short key) when the
    data is over the cap, not UTF-8, not JSON, or breaks a bound above.
    """
    check_size(len(data), kind, where)
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise NotJson(f"{kind} is not utf-8", where=where) from None
    else:
        text = data
    try:
        doc = _decode(text)
    except _Refused as e:
        raise InputError(f"{kind}: {e}", where=where) from None
    except RecursionError:
        raise InputError(f"{kind}: nested deeper than {MAX_DEPTH} levels", where=where) from None
    except ValueError as e:
        from json import JSONDecodeError

        if isinstance(e, JSONDecodeError):
            raise NotJson(
                f"{kind} is not valid json ({e.msg} at line {e.lineno} column {e.colno})",
                where=where,
            ) from None
        # e.g. int() on a form the hook let through
        raise InputError(f"{kind} is not valid json ({type(e).__name__})", where=where) from None
    # lone surrogates can only come from \uD800-\uDFFF escapes; skip the string checks otherwise
    check_tree(doc, kind, where, strings="\\u" in text)
    return doc


def check_tree(value: Any, kind: str, where: str | None = None, *, strings: bool = True) -> None:
    """Walk a parsed tree once: depth, node count and (with ``strings``) valid Unicode.

    Raises InputError at the first bound it breaks. Iterative, so a deep tree
    cannot exhaust the stack here.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise InputError(f"{kind} has more than {MAX_NODES} values", where=where)
        if isinstance(item, dict):
            if depth > MAX_DEPTH:
                raise InputError(f"{kind}: nested deeper than {MAX_DEPTH} levels", where=where)
            for key, child in item.items():
                stack.append((key, depth + 1))
                stack.append((child, depth + 1))
        elif isinstance(item, list | tuple):
            if depth > MAX_DEPTH:
                raise InputError(f"{kind}: nested deeper than {MAX_DEPTH} levels", where=where)
            stack.extend((child, depth + 1) for child in item)
        elif strings and isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InputError(f"{kind}: a string holds invalid unicode", where=where) from None


def _short(key: str) -> str:
    return key if len(key) <= 40 else key[:40] + "..."
