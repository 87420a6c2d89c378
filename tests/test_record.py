"""``builder.core.record`` behaves as ``@dataclass(frozen=True)`` for what it supports."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import pytest

from builder.core.record import FrozenInstanceError, field, record, replace


@record
class Point:
    """A record with every kind of field."""

    x: int
    label: str = "p"
    tags: tuple[str, ...] = field(default_factory=tuple)
    secret: bytes = field(default=b"", repr=False)
    note: str = field(default="", compare=False)
    weight: dict[str, int] = field(default_factory=dict, hash=False)


@dataclasses.dataclass(frozen=True)
class DataPoint:
    """The same fields as a dataclass: what Point must match."""

    x: int
    label: str = "p"
    tags: tuple[str, ...] = dataclasses.field(default_factory=tuple)
    secret: bytes = dataclasses.field(default=b"", repr=False)
    note: str = dataclasses.field(default="", compare=False)
    weight: dict[str, int] = dataclasses.field(default_factory=dict, hash=False)


@record(order=True)
class Ranked:
    rank: int
    name: str


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((1,), {}),
    ((1, "a"), {}),
    ((), {"x": 2, "label": "b", "secret": b"k", "note": "n"}),
    ((3,), {"tags": ("t",), "weight": {"w": 1}}),
]


def _both(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    return Point(*args, **kwargs), DataPoint(*args, **kwargs)


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_a_record_is_built_and_shown_as_the_dataclass_is(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    ours, theirs = _both(args, kwargs)
    assert repr(ours) == repr(theirs).replace("DataPoint", "Point")
    assert b"k" not in repr(ours).encode()  # repr=False keeps a field out of the text
    assert vars(ours) == vars(theirs)
    assert list(vars(ours)) == [f.name for f in dataclasses.fields(DataPoint)]  # field order


def test_equality_and_hash_follow_compare_and_hash() -> None:
    a, b = Point(1, note="one"), Point(1, note="two")
    assert a == b and hash(a) == hash(b)  # note is not compared
    assert Point(1) != Point(2) and Point(1) != Point(1, "q")
    assert Point(1, weight={"a": 1}) != Point(1, weight={"a": 2})  # compared, not hashed
    assert hash(Point(1, weight={"a": 1})) == hash(Point(1, weight={"a": 2}))
    assert Point(1).__eq__(DataPoint(1)) is NotImplemented
    assert Point(1) != (1, "p")  # type: ignore[comparison-overlap]
    assert hash(Point(1, "a", secret=b"s")) == hash(DataPoint(1, "a", secret=b"s"))


def test_defaults_come_fresh_from_their_factory() -> None:
    a, b = Point(1), Point(1)
    assert a.weight == {} and a.weight is not b.weight
    assert Point.label == "p"  # a plain default stays on the class, as with dataclasses


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, r"Point\(\) missing required argument: 'x'"),
        ((1, "a", [], b"", "", {}, 7), {}, r"takes 6 positional arguments but 7 were given"),
        ((1,), {"x": 2}, r"got multiple values for argument 'x'"),
        ((1,), {"y": 2}, r"got an unexpected keyword argument 'y'"),
    ],
)
def test_a_bad_call_is_a_type_error(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)
    with pytest.raises(TypeError):
        DataPoint(*args, **kwargs)


def test_a_record_is_frozen() -> None:
    p = Point(1)
    with pytest.raises(FrozenInstanceError, match="cannot assign to field 'x'"):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del p.label
    with pytest.raises(AttributeError):  # what callers of dataclasses catch
        p.other = 1  # type: ignore[attr-defined]
    assert p.x == 1


def test_order_compares_fields_in_order() -> None:
    items = [Ranked(2, "b"), Ranked(1, "z"), Ranked(2, "a")]
    assert sorted(items) == [Ranked(1, "z"), Ranked(2, "a"), Ranked(2, "b")]
    assert Ranked(1, "a") <= Ranked(1, "a") < Ranked(1, "b") and Ranked(3, "a") >= Ranked(2, "z")
    with pytest.raises(TypeError):
        _ = Ranked(1, "a") < (1, "a")  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = Point(1) < Point(2)  # type: ignore[operator]


def test_copies_and_pickles_round_trip() -> None:
    p = Point(1, "a", ("t",), b"s", "n", {"w": 1})
    assert copy.copy(p) == p and copy.deepcopy(p) == p
    assert pickle.loads(pickle.dumps(p)) == p  # noqa: S301 - our own bytes
    assert Point.__match_args__ == ("x", "label", "tags", "secret", "note", "weight")


def test_what_record_does_not_support_is_refused() -> None:
    with pytest.raises(TypeError, match="without a default follows one with"):

        @record
        class Late:
            a: int = 1
            b: int  # type: ignore[misc]

    with pytest.raises(TypeError, match="cannot inherit fields"):

        @record
        class Child(Ranked):
            extra: int

    with pytest.raises(TypeError, match="record defines __repr__"):

        @record
        class Own:
            a: int

            def __repr__(self) -> str:
                return "own"

    with pytest.raises(ValueError, match=r"Shared\.items: a mutable default"):

        @record
        class Shared:
            items: list[int] = []  # noqa: RUF012 - the mistake under test

    with pytest.raises(ValueError, match="both default and default_factory"):
        field(default=1, default_factory=int)


@record(order=True)
class One:
    value: int


@dataclasses.dataclass(frozen=True, order=True)
class DataOne:
    value: int


def test_a_record_of_one_field_compares_and_hashes_as_a_dataclass() -> None:
    assert One(1) == One(1) and One(1) != One(2) and One(1) < One(2)
    assert hash(One(5)) == hash(DataOne(5))
    assert sorted([One(3), One(1), One(2)]) == [One(1), One(2), One(3)]


def test_post_init_runs_after_the_fields_are_set() -> None:
    # PayloadFile checks its path there: a record must not skip it
    from builder.core.payload import PayloadFile

    with pytest.raises(ValueError, match="payload path must be relative"):
        PayloadFile("/etc/shadow", b"")
    with pytest.raises(ValueError, match="payload path must be relative"):
        PayloadFile(path="a/../../b", data=b"")
    assert PayloadFile("etc/motd", b"hi").path == "etc/motd"


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_replace_copies_with_changes_as_dataclasses_replace_does(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    ours, theirs = _both(args, kwargs)
    changes: dict[str, Any] = {"label": "moved", "tags": ("u",)}
    changed = replace(ours, **changes)
    expected = dataclasses.replace(theirs, **changes)
    assert repr(changed) == repr(expected).replace("DataPoint", "Point")
    assert vars(changed) == vars(expected)
    assert (changed.x, changed.secret, changed.note) == (ours.x, ours.secret, ours.note)
    assert changed.weight is ours.weight  # a field not changed is the same object, as there
    assert replace(ours) == ours and replace(ours) is not ours
    assert vars(ours) == vars(theirs)  # the value replaced is left as it was


def test_replace_refuses_what_dataclasses_replace_refuses() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        replace(Point(1), colour="red")
    with pytest.raises(TypeError, match="takes a record, not DataPoint"):
        replace(DataPoint(1), x=2)
    with pytest.raises(TypeError, match="takes a record, not int"):
        replace(1)


def test_replace_runs_post_init() -> None:
    from builder.core.payload import PayloadFile

    with pytest.raises(ValueError, match="payload path must be relative"):
        replace(PayloadFile("etc/motd", b"hi"), path="/etc/shadow")
    assert replace(PayloadFile("etc/motd", b"hi"), data=b"yo").data == b"yo"
