"""The sealed bundle's fast parse (C safe loader, or the image's JSON copy) gives exactly
what the located round-trip parse gives, and errors keep their line and column."""

from __future__ import annotations

import pytest

from builder.core.canonical import dumps
from builder.core.errors import InputError
from builder.core.yamlfile import fast_loads, loads
from builder.release.bundle import SealedBundle
from tests.conftest import ROOT, missing

BUNDLE = ROOT / "images/example.sealed.yaml"


def test_fast_and_round_trip_parses_agree() -> None:
    data = BUNDLE.read_bytes()
    if fast_loads(data.decode(), "x") is None:
        missing("ruamel.yaml.clib (a dependency: the fast bundle parse)")
    slow = SealedBundle._from_node(loads(data.decode(), str(BUNDLE)))
    assert SealedBundle.from_bytes(data, str(BUNDLE)) == slow


def test_an_error_still_names_its_line_and_column() -> None:
    text = BUNDLE.read_text().replace("group_threshold: 1", "group_threshold: one", 1)
    with pytest.raises(
        InputError, match=r"sealed\.yaml:\d+:\d+: group_threshold must be an integer"
    ):
        SealedBundle.from_bytes(text.encode(), "sealed.yaml")


def test_the_json_copy_parses_to_the_same_bundle_and_must_be_canonical() -> None:
    bundle = SealedBundle.from_bytes(BUNDLE.read_bytes(), str(BUNDLE))
    copy = dumps(bundle.to_dict())
    assert SealedBundle.from_json(copy, "sealed.json") == bundle
    with pytest.raises(InputError, match="not in canonical form"):
        SealedBundle.from_json(copy.replace(b'{"', b'{ "', 1), "sealed.json")
    with pytest.raises(InputError, match=r"sealed\.json:1:1: unsupported sealed bundle format"):
        SealedBundle.from_json(copy.replace(b"sealed-bundle/1", b"sealed-bundle/9"), "sealed.json")
    with pytest.raises(InputError, match=r"sealed\.json: sealed bundle is not json"):
        SealedBundle.from_json(b"format: yaml\n", "sealed.json")


@pytest.mark.parametrize("text", ["-_", "._", "a: -_\n"])
def test_scalars_that_crash_the_yaml_library_are_input_errors(text: str) -> None:
    with pytest.raises(InputError, match="malformed yaml"):
        loads(text, "odd.yaml")
