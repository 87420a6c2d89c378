"""Reading YAML strictly, with the file, line and column of every value.

ruamel.yaml's round-trip loader keeps positions (and comments, for ``bump``).
``Node`` walks a loaded document and raises InputError located at the value
that is wrong, suggesting the near-miss for an unknown key (as pypa/build does).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from builder.core import bounded, duration
from builder.core.errors import InputError

if TYPE_CHECKING:
    from ruamel.yaml import YAML

T = TypeVar("T")


def round_trip_yaml() -> YAML:
    # imported here: ``Node`` also walks plain JSON documents, which need no ruamel
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.preserve_quotes = True
    return yaml


def load(path: Path, kind: str = "spec") -> Node:
    """Load a YAML file into a located ``Node``; malformed YAML raises InputError with its position.

    A file over the cap of ``kind`` (``builder.core.bounded``) is refused before it is parsed.
    """
    return loads(read_text(path, kind), str(path), kind)


def read_text(path: Path, kind: str = "spec") -> str:
    """The text of a YAML file within the cap of ``kind``; InputError when it cannot be read."""
    try:
        return bounded.read(path, kind).decode("utf-8")
    except FileNotFoundError:
        raise InputError("file not found", where=str(path)) from None
    except OSError as e:
        raise InputError(f"cannot read file ({e.strerror})", where=str(path)) from None
    except UnicodeDecodeError:
        raise InputError("file is not utf-8", where=str(path)) from None


def fast_loads(text: str, filename: str, kind: str = "sealed bundle") -> Node | None:
    """The document through ruamel's C safe loader, without positions; None when that loader
    is not installed or the text does not parse.

    For a file that is read often and almost always valid (the sealed bundle, a spec): check
    the fast result, and on any error parse again with ``loads`` for the located message.
    """
    bounded.check_size(len(text), kind, filename)
    _check_flow_depth(text, kind, filename)
    try:
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        yaml = YAML(typ="safe", pure=False)
        if getattr(yaml.Parser, "__name__", "") != "CParser":
            return None  # ruamel.yaml.clib missing: the pure safe loader is barely faster
        data = yaml.load(text)
    except (ImportError, YAMLError, RecursionError, ValueError, TypeError):
        return None
    bounded.check_tree(data, kind, filename, strings=False)
    return Node(data, filename, (0, 0))


def fast_plain_loads(text: str, filename: str, kind: str = "spec") -> Node | None:
    """``fast_loads`` when its document is sure to equal the round-trip loader's, else None.

    The two loaders agree on plain documents: mappings with string keys, lists, strings,
    integers, booleans and nulls. Where they might not, this gives None and the caller
    uses ``loads``: anchors (an anchored boolean is an integer to the round-trip loader),
    merge keys, a ``%YAML`` directive (the C loader reads a 1.1 document by 1.2 rules),
    floats and dates (other types there), and any error of the fast loader.
    """
    if "&" in text or "<<" in text or "%YAML" in text:
        return None
    try:
        node = fast_loads(text, filename, kind)
    except InputError:
        return None  # ``loads`` words it, with its position
    return node if node is not None and _plain(node.value) else None


def _plain(value: Any) -> bool:
    kind = type(value)
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if kind is list:
        return all(_plain(v) for v in value)
    return kind is str or kind is int or kind is bool or value is None


def loads(text: str, filename: str, kind: str = "spec") -> Node:
    """Parse YAML text within the bounds of ``kind``: size, depth and node count.

    Raises InputError with the position ruamel reports, or naming the bound.
    """
    # a character is at least one byte: a text longer than the cap cannot fit under it
    bounded.check_size(len(text), kind, filename)
    _check_flow_depth(text, kind, filename)
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        data = round_trip_yaml().load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
        problem = _one_line(e.problem or e.context or "malformed yaml")
        raise InputError(f"malformed yaml: {problem}", where=where) from None
    except YAMLError as e:
        first = (str(e).strip().splitlines() or ["malformed yaml"])[0]
        raise InputError(f"malformed yaml: {first}", where=filename) from None
    except RecursionError:
        # ruamel recurses once per nesting level; no spec or bundle is nested this deep
        raise InputError("malformed yaml: nested too deeply", where=filename) from None
    except (IndexError, ValueError):
        # ruamel converts scalars as it goes and crashes on some odd ones ("-_", "._"), or on
        # an integer of thousands of digits, instead of raising
        raise InputError("malformed yaml: a value that cannot be read", where=filename) from None
    # aliases make a tree whose walk could be exponential; the walk stops at the node cap
    bounded.check_tree(data, kind, filename, strings=False)
    # the document starts where its first node does, past any leading comments
    pos = (data.lc.line, data.lc.col) if isinstance(data, CommentedMap | CommentedSeq) else (0, 0)
    return Node(data, filename, pos)


class Node:
    """A value from a YAML document, with where it came from.

    Positions come from ruamel's round-trip containers (their ``lc``); a plain
    JSON document gives every value its parent's position.
    """

    def __init__(self, value: Any, filename: str, pos: tuple[int, int]) -> None:
        self.value = value
        self.filename = filename
        self.pos = pos

    @property
    def where(self) -> str:
        return f"{self.filename}:{self.pos[0] + 1}:{self.pos[1] + 1}"

    def error(self, message: str, hint: str | None = None) -> InputError:
        return InputError(message, where=self.where, hint=hint)

    # -- mappings -------------------------------------------------------------

    def mapping(
        self, what: str, allowed: set[str], required: frozenset[str] | set[str] = frozenset()
    ) -> Node:
        """Check this node is a mapping with only ``allowed`` keys and every ``required`` one."""
        if not isinstance(self.value, dict):
            raise self.error(f"{what} must be a mapping, got {_type_name(self.value)}")
        for key in self.value:
            if not isinstance(key, str) or key not in allowed:
                import difflib  # only to word an unknown key

                near = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                suggestion = f" (did you mean '{near[0]}'?)" if near else ""
                raise self.key_node(key).error(f"unknown key '{key}' in {what}{suggestion}")
        for key in sorted(required):
            if key not in self.value:
                raise self.error(f"{what} is missing required key '{key}'")
        return self

    def has(self, key: str) -> bool:
        return isinstance(self.value, dict) and key in self.value

    def key_node(self, key: Any) -> Node:
        pos = self.pos
        if hasattr(self.value, "lc"):
            try:
                line, col = self.value.lc.key(key)
                pos = (line, col)
            except (KeyError, TypeError):
                pass
        return Node(key, self.filename, pos)

    def get(self, key: str) -> Node:
        pos = self.pos
        if hasattr(self.value, "lc"):
            try:
                line, col = self.value.lc.value(key)
                pos = (line, col)
            except (KeyError, TypeError):
                pos = self.key_node(key).pos
        return Node(
            self.value.get(key) if isinstance(self.value, dict) else None, self.filename, pos
        )

    # -- scalars --------------------------------------------------------------

    def text(self, what: str) -> str:
        if not isinstance(self.value, str) or not self.value.strip():
            raise self.error(f"{what} must be a non-empty string, got {_type_name(self.value)}")
        return str(self.value)

    def opt_text(self, what: str) -> str | None:
        return None if self.value is None else self.text(what)

    def integer(self, what: str) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.error(f"{what} must be an integer, got {_type_name(self.value)}")
        return int(self.value)

    def flag(self, what: str) -> bool:
        if not isinstance(self.value, bool):
            raise self.error(f"{what} must be true or false, got {_type_name(self.value)}")
        return self.value

    # -- sequences ------------------------------------------------------------

    def items(self, what: str) -> Iterator[Node]:
        if not isinstance(self.value, list):
            raise self.error(f"{what} must be a list, got {_type_name(self.value)}")
        for i, item in enumerate(self.value):
            pos = self.pos
            if hasattr(self.value, "lc"):
                try:
                    line, col = self.value.lc.item(i)
                    pos = (line, col)
                except (KeyError, TypeError, IndexError):
                    pass
            yield Node(item, self.filename, pos)

    def texts(self, what: str) -> tuple[str, ...]:
        return tuple(item.text(f"each entry of {what}") for item in self.items(what))


def to_plain(value: Any) -> Any:
    """A ruamel tree as plain dicts, lists and scalars (for free-form sections like ``vars``)."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value if not isinstance(value, str) else str(value)
    return str(value)


_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _check_flow_depth(text: str, kind: str, filename: str) -> None:
    """Refuse flow collections (``[[[...``) nested deeper than ``bounded.MAX_DEPTH`` before parsing.

    ruamel's scanner takes time quadratic in flow depth (3,000 levels: seconds).
    Brackets inside quoted strings and comments are counted too, so this can
    only over-count: a spec would need dozens of unclosed brackets in its
    text to trip it.
    """
    brackets = _NOT_BRACKET.sub("", text)
    if len(brackets) <= bounded.MAX_DEPTH:
        return
    depth = 0
    for ch in brackets:
        depth = depth + 1 if ch in "[{" else max(0, depth - 1)
        if depth > bounded.MAX_DEPTH:
            raise InputError(
                f"{kind}: nested deeper than {bounded.MAX_DEPTH} levels", where=filename
            )


def _one_line(problem: str) -> str:
    """ruamel's problem text as one short line: it may quote whole multi-line values."""
    text = " ".join(problem.split())
    duplicate = _DUPLICATE_KEY.match(text)
    if duplicate:
        # the values may be long armored blocks; the key and the position are what matter
        text = f"duplicate key '{duplicate.group(1)}'"
    return text if len(text) <= 200 else text[:200] + "..."


_DUPLICATE_KEY = re.compile(r'found duplicate key "(.*?)" with value')


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string" if value.strip() else "an empty string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


# Field checks that every section of a spec shares.

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")


def node_name(node: Node, what: str) -> str:
    """A name (image, approver, scope, ...): lowercase letters, digits and dashes."""
    value = node.text(what)
    if not NAME_RE.match(value):
        raise node.error(f"{what} '{value}' must be lowercase letters, digits and dashes")
    return value


def unique(node: Node, seen: set[str], value: str, what: str) -> None:
    """Record ``value`` in ``seen``; a second occurrence is an error located at ``node``."""
    if value in seen:
        raise node.error(f"duplicate {what} '{value}'")
    seen.add(value)


def node_duration(node: Node, what: str) -> int:
    """A duration such as ``15m``, in seconds."""
    try:
        return duration.parse(node.value)
    except InputError as e:
        raise node.error(f"{what}: {e.message}") from None
