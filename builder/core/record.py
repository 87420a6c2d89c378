"""Frozen value classes, declared as dataclasses are, built without generating code.

``@dataclass(frozen=True)`` compiles an ``__init__``, ``__repr__``, ``__eq__``,
``__hash__``, ``__setattr__`` and ``__delattr__`` for every class it decorates: about
0.6 ms a class at import, 12 ms of every ``build`` for the twenty classes a build
loads. ``@record`` gives a class the same behaviour from shared methods that read the
class's field list, so declaring one costs microseconds. Type checkers see a frozen
dataclass (``dataclass_transform``), so assigning to a field is still a type error.

It covers what the package's records use: fields in declaration order, passed by
position or keyword; plain defaults; ``field(default=, default_factory=, repr=,
compare=, hash=)``; ``order=True``; ``__post_init__``. A class that needs
inheritance of fields, ``ClassVar`` or ``InitVar`` stays a dataclass; ``record``
refuses what it does not support rather than guess.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T")

_MISSING: Any = object()


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a record (as ``dataclasses.FrozenInstanceError``)."""


class Field:
    __slots__ = ("compare", "default", "default_factory", "hash", "repr")

    def __init__(
        self,
        default: Any,
        default_factory: Any,
        repr: bool,
        compare: bool,
        hash: bool | None,
    ) -> None:
        self.default, self.default_factory = default, default_factory
        self.repr, self.compare, self.hash = repr, compare, hash


def field(
    *,
    default: Any = _MISSING,
    default_factory: Callable[[], Any] = _MISSING,
    repr: bool = True,
    compare: bool = True,
    hash: bool | None = None,
) -> Any:
    """A field's options, as ``dataclasses.field`` takes them."""
    if default is not _MISSING and default_factory is not _MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, repr, compare, hash)


class _Fields:
    """What the shared methods need to know of one record class."""

    __slots__ = ("defaults", "factories", "hashed", "index", "key", "names", "post_init", "shown")

    def __init__(self, cls: type) -> None:
        if any(hasattr(base, "__record__") for base in cls.__mro__[1:]):
            raise TypeError(f"{cls.__qualname__}: a record cannot inherit fields")
        self.names: tuple[str, ...] = ()
        self.defaults: dict[str, Any] = {}
        self.factories: dict[str, Callable[[], Any]] = {}
        shown, compared, hashed = [], [], []
        # the class's own annotations, as written (inspect.get_annotations would import inspect)
        for name, note in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063
            if str(note).startswith(("ClassVar", "typing.ClassVar", "InitVar", "dataclasses.")):
                raise TypeError(f"{cls.__qualname__}.{name}: not supported by record")
            spec = cls.__dict__.get(name, _MISSING)
            if not isinstance(spec, Field):
                spec = Field(spec, _MISSING, True, True, None)
            if spec.default is not _MISSING:
                if isinstance(spec.default, (list, dict, set)):
                    raise ValueError(
                        f"{cls.__qualname__}.{name}: a mutable default; use default_factory"
                    )
                self.defaults[name] = spec.default
                setattr(cls, name, spec.default)  # as dataclasses leaves it: the class attribute
            elif spec.default_factory is not _MISSING:
                self.factories[name] = spec.default_factory
                if name in cls.__dict__:
                    delattr(cls, name)
            elif self.defaults or self.factories:
                raise TypeError(
                    f"{cls.__qualname__}: field {name} without a default follows one with"
                )
            self.names += (name,)
            if spec.repr:
                shown.append(name)
            if spec.compare:
                compared.append(name)
            if spec.hash or (spec.hash is None and spec.compare):
                hashed.append(name)
        self.index = frozenset(self.names)
        self.post_init = "__post_init__" in cls.__dict__  # run last by __init__, as dataclasses do
        self.shown = tuple(shown)
        # the compared and the hashed fields as one tuple each, read in C (sorting compares often)
        self.key, self.hashed = _getter(compared), _getter(hashed)


def _getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    if len(names) == 1:
        name = names[0]
        return lambda value: (getattr(value, name),)
    return attrgetter(*names) if names else lambda value: ()


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    fields: _Fields = self.__record__
    names = fields.names
    if len(args) > len(names):
        raise TypeError(
            f"{type(self).__name__}() takes {len(names)} positional arguments but {len(args)} were given"
        )
    values = dict(zip(names, args, strict=False))
    for name, value in kwargs.items():
        if name not in fields.index:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument '{name}'")
        if name in values:
            raise TypeError(f"{type(self).__name__}() got multiple values for argument '{name}'")
        values[name] = value
    state = self.__dict__
    for name in names:
        if name in values:
            state[name] = values[name]
        elif name in fields.defaults:
            state[name] = fields.defaults[name]
        elif name in fields.factories:
            state[name] = fields.factories[name]()
        else:
            raise TypeError(f"{type(self).__name__}() missing required argument: '{name}'")
    if fields.post_init:
        self.__post_init__()


def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__record__.shown)
    return f"{type(self).__qualname__}({shown})"


def _key(self: Any) -> tuple[Any, ...]:
    return self.__record__.key(self)  # type: ignore[no-any-return]


def _eq(self: Any, other: object) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _key(self) == _key(other)


def _hash(self: Any) -> int:
    return hash(self.__record__.hashed(self))


def _frozen(self: Any, name: str, *value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field '{name}'")


def _ordering(op: Callable[[tuple[Any, ...], tuple[Any, ...]], bool]) -> Callable[[Any, Any], Any]:
    def compare(self: Any, other: Any) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return op(_key(self), _key(other))

    return compare


_ORDER = {
    "__lt__": _ordering(lambda a, b: a < b),
    "__le__": _ordering(lambda a, b: a <= b),
    "__gt__": _ordering(lambda a, b: a > b),
    "__ge__": _ordering(lambda a, b: a >= b),
}


def _build(cls: type[T], order: bool) -> type[T]:
    fields = _Fields(cls)
    methods: dict[str, Any] = {
        "__record__": fields,
        "__match_args__": fields.names,
        "__init__": _init,
        "__repr__": _repr,
        "__eq__": _eq,
        "__hash__": _hash,
        "__setattr__": _frozen,
        "__delattr__": _frozen,
    }
    if order:
        methods.update(_ORDER)
    for name, method in methods.items():
        if name in cls.__dict__:
            raise TypeError(f"{cls.__qualname__}: record defines {name}")
        type.__setattr__(cls, name, method)
    return cls


@overload
def record(cls: type[T], /) -> type[T]: ...


@overload
def record(*, order: bool = False) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[T] | None = None, /, *, order: bool = False) -> Any:
    """``@record`` or ``@record(order=True)``: the class as a frozen dataclass."""
    if cls is None:
        return lambda cls: _build(cls, order)
    return _build(cls, order)


def replace(value: T, /, **changes: Any) -> T:
    """A copy of the record ``value`` with ``changes`` to its fields, as
    ``dataclasses.replace`` makes one: through ``__init__``, so ``__post_init__`` checks it."""
    fields = getattr(type(value), "__record__", None)
    if not isinstance(fields, _Fields):
        raise TypeError(f"replace() takes a record, not {type(value).__name__}")
    return type(value)(**{**{name: getattr(value, name) for name in fields.names}, **changes})
