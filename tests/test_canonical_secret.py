"""Canonical JSON is stable byte for byte; a Secret never shows its value."""

from __future__ import annotations

import json
import logging
import pickle
import traceback

import pytest
from hypothesis import given
from hypothesis import strategies as st

from builder.core import canonical, hasher
from builder.core.errors import InputError
from builder.core.secret import Secret

VALUE = b"correct-horse-battery-staple"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def test_dumps_is_sorted_compact_utf8_with_newline() -> None:
    document = {"b": 1, "a": {"z": [3, 2, 1], "é": "ünïcode"}, "c": None}
    assert canonical.dumps(document) == (
        '{"a":{"z":[3,2,1],"é":"ünïcode"},"b":1,"c":null}\n'.encode()
    )


def test_dumps_ignores_insertion_order() -> None:
    one = {"x": 1, "y": {"b": True, "a": False}}
    two = {"y": {"a": False, "b": True}, "x": 1}
    assert canonical.dumps(one) == canonical.dumps(two)


def test_dumps_keeps_list_order() -> None:
    assert canonical.dumps([2, 1]) != canonical.dumps([1, 2])


def test_digest_form() -> None:
    assert canonical.digest(b"") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert hasher.sha256_hex(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


@pytest.mark.parametrize("size", [0, 3, hasher._SMALL - 1, hasher._SMALL, 3 * hasher._SMALL + 5])
@pytest.mark.parametrize("openssl_loaded", [False, True])
def test_either_sha256_gives_the_same_digest(
    monkeypatch: pytest.MonkeyPatch, size: int, openssl_loaded: bool
) -> None:
    import hashlib
    import sys

    if not openssl_loaded:
        monkeypatch.delitem(sys.modules, "_hashlib", raising=False)
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert hasher.sha256_hex(data) == hashlib.sha256(data).hexdigest()


@given(json_values)
def test_dumps_round_trips_and_is_stable(document: object) -> None:
    encoded = canonical.dumps(document)
    assert encoded.endswith(b"\n")
    assert b"\n" not in encoded[:-1]
    again = json.loads(encoded)
    assert again == document
    assert canonical.dumps(again) == encoded


@given(st.dictionaries(st.text(max_size=8), st.integers(), min_size=2, max_size=6))
def test_dumps_sorts_keys(document: dict[str, int]) -> None:
    decoded = json.loads(canonical.dumps(document))
    assert list(decoded) == sorted(document)


def test_dumps_refuses_what_json_cannot_say() -> None:
    with pytest.raises(TypeError, match="Secret is not JSON serializable"):
        canonical.dumps({"secret": Secret(VALUE)})
    with pytest.raises(TypeError, match="keys must be str"):
        canonical.dumps({b"bytes": 1})  # refused, never skipped
    for number in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="not JSON compliant"):
            canonical.dumps({"n": [number]})
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        canonical.dumps({"loop": loop})


def test_dumps_of_each_kind_of_value() -> None:
    # what json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False) gives
    assert canonical.dumps('é\n"') == '"é\\n\\""\n'.encode()
    assert canonical.dumps({"b": [1, 2.5, None, True, False], "a": {"z": "ü", "y": ""}}) == (
        '{"a":{"y":"","z":"ü"},"b":[1,2.5,null,true,false]}\n'.encode()
    )
    assert canonical.dumps([]) == b"[]\n" and canonical.dumps(7) == b"7\n"
    # a fresh encoder each call: an object seen in one call is no cycle in the next
    shared = {"k": 1}
    assert canonical.dumps([shared, shared]) == b'[{"k":1},{"k":1}]\n'
    assert canonical.dumps([shared]) == b'[{"k":1}]\n'


def test_secret_reveals_only_through_reveal() -> None:
    secret = Secret(VALUE)
    assert secret.reveal() == VALUE
    assert isinstance(secret.reveal(), bytes)


@pytest.mark.parametrize(
    "render",
    [
        str,
        repr,
        lambda s: f"{s}",
        lambda s: f"{s!r}",
        lambda s: f"{s!s}",
        lambda s: f"{s:>40}",
        lambda s: format(s, "x"),
        lambda s: "{}".format(s),  # noqa: UP032 - str.format is a separate code path
        lambda s: "%s %r" % (s, s),  # noqa: UP031 - %-formatting is a separate code path
        lambda s: str([s, {"k": s}, (s,)]),
    ],
)
def test_secret_never_renders_its_value(render: object) -> None:
    assert callable(render)
    text = render(Secret(VALUE))
    assert "***" in text
    assert VALUE.decode() not in text and "correct" not in text


def test_secret_in_exception_message_and_traceback() -> None:
    secret = Secret(VALUE)
    with pytest.raises(InputError) as caught:
        raise InputError(f"cannot use {secret}", hint=f"check {secret!r}")
    assert "correct" not in str(caught.value)
    assert caught.value.hint is not None and "correct" not in caught.value.hint
    try:
        raise ValueError(secret)
    except ValueError:
        assert "correct" not in traceback.format_exc()


def test_secret_in_log_records(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("breakglass.test").info("share %s / %r", Secret(VALUE), Secret(VALUE))
    assert caplog.text and "correct" not in caplog.text


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_secret_cannot_be_pickled(protocol: int) -> None:
    with pytest.raises(TypeError) as caught:
        pickle.dumps(Secret(VALUE), protocol=protocol)
    assert "correct" not in str(caught.value)
    with pytest.raises(TypeError):
        pickle.dumps({"nested": [Secret(VALUE)]}, protocol=protocol)


def test_secret_has_no_instance_dict() -> None:
    secret = Secret(VALUE)
    assert not hasattr(secret, "__dict__")
    with pytest.raises(AttributeError):
        secret.extra = 1  # type: ignore[attr-defined]


def test_secret_equality_is_by_value() -> None:
    assert Secret(VALUE) == Secret(VALUE)
    assert Secret(VALUE) != Secret(VALUE + b"!")
    assert Secret(VALUE) != VALUE
