"""Property tests for the parsers of the release path (Hypothesis).

Whatever text reaches the spec loader, and whatever bytes reach the sealed-bundle
reader, the answer is a valid object or an InputError; never another exception
(which the CLI would report as an internal error). Bundles round-trip exactly.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.core.errors import InputError
from builder.release.bundle import SealedBundle
from builder.release.seal import seal_spec
from builder.release.spec import ImageSpec, load_spec
from tests.conftest import ROOT

EXAMPLE = (ROOT / "images" / "example.yaml").read_text(encoding="utf-8")
BUNDLE = (ROOT / "images" / "example.sealed.yaml").read_bytes()
NOW = dt.datetime(2026, 11, 29, 19, 0, tzinfo=dt.UTC)
FUZZ = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# values that reach deep into validation: right and wrong types, near-miss strings
SCALARS = st.one_of(
    st.sampled_from(
        [
            "",
            "0",
            "1",
            "2",
            "-1",
            "4h",
            "25h",
            "0s",
            "1.0.0",
            "v1",
            "true",
            "null",
            "~",
            "[]",
            "{}",
            "[a, b]",
            "'*'",
            "ssh-*",
            "age1",
            "ssh-ed25519 AAAA x",
            "/bin/sh *",
            "..",
            "'",
            '"',
        ]
    ),
    st.text(max_size=12),
)


@st.composite
def mutated(draw: st.DrawFn, original: str) -> str:
    """``original`` with a few lines dropped, repeated, swapped or their values replaced."""
    lines = original.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "repeat", "swap", "value", "indent", "cut"]))
        line = lines[i]
        if op == "drop":
            del lines[i]
        elif op == "repeat":
            lines.insert(i, line)
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], line
        elif op == "value" and ":" in line:
            key = line.split(":", 1)[0]
            lines[i] = f"{key}: {draw(SCALARS)}\n"
        elif op == "indent":
            lines[i] = draw(st.sampled_from(["", " ", "  ", "    "])) + line.lstrip(" ")
        else:
            lines[i] = line[: draw(st.integers(0, len(line)))]
    return "".join(lines)


def load_text(text: str) -> ImageSpec | None:
    """Load ``text`` as a spec file; None when it is refused with an InputError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images" / "fuzz.yaml"
        path.parent.mkdir()
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            return load_spec(path)
        except InputError as e:
            assert e.message and "\n" not in e.message, repr(e.message)
            return None


@FUZZ
@given(st.text())
def test_arbitrary_text_is_a_spec_or_an_input_error(text: str) -> None:
    load_text(text)


@FUZZ
@given(mutated(EXAMPLE))
def test_mutated_example_is_a_spec_or_an_input_error(text: str) -> None:
    spec = load_text(text)
    if spec is not None:
        # what loads keeps the policy rules: two-person rule unless explicitly waived
        quorum = sum(sorted(g.threshold for g in spec.policy.groups)[: spec.policy.group_threshold])
        assert quorum >= 2 or spec.policy.allow_single_approver
        assert all(s.max_ttl <= spec.policy.max_ttl <= 24 * 3600 for s in spec.scopes)
        assert {c.scope for c in spec.credentials} == {s.name for s in spec.scopes}


def test_the_example_itself_loads() -> None:
    assert load_text(EXAMPLE) is not None


def read_bundle(data: bytes) -> SealedBundle | None:
    try:
        return SealedBundle.from_bytes(data, "fuzz.sealed.yaml")
    except InputError as e:
        assert e.message and "\n" not in e.message, repr(e.message)
        return None


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_a_bundle_or_an_input_error(data: bytes) -> None:
    read_bundle(data)


# each example parses a full bundle (with its ciphertext) twice: fewer of them
@settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(mutated(BUNDLE.decode("utf-8")))
def test_mutated_bundle_is_a_bundle_or_an_input_error(text: str) -> None:
    bundle = read_bundle(text.encode("utf-8", errors="surrogatepass"))
    if bundle is not None:
        assert bundle.scopes
        assert read_bundle(bundle.to_bytes()) == bundle


def test_committed_bundle_bytes_round_trip_exactly() -> None:
    bundle = read_bundle(BUNDLE)
    assert bundle is not None
    assert bundle.to_bytes() == BUNDLE


APPROVERS = {
    name: (
        (ROOT / "examples" / "keys" / f"{name}.age")
        .read_text()
        .split("public key: ")[1]
        .split()[0],
        " ".join((ROOT / "examples" / "keys" / f"{name}.pub").read_text().split()[:2]),
    )
    for name in ("alice", "bob", "carol")
}


@st.composite
def small_specs(draw: st.DrawFn) -> str:
    names = draw(st.sampled_from([["alice", "bob"], ["alice", "bob", "carol"]]))
    threshold = draw(st.integers(2, len(names)))
    kinds = draw(
        st.lists(st.sampled_from(["ssh-ed25519", "token", "password"]), min_size=1, max_size=3)
    )
    scopes = draw(st.integers(1, 2))
    approvers = "".join(
        f"  - name: {n}\n    recipient: {APPROVERS[n][0]}\n    signing_key: {APPROVERS[n][1]} {n}\n"
        for n in names
    )
    scope_text = "".join(f"  - name: scope-{i}\n    max_ttl: 1h\n" for i in range(scopes))
    credentials = "".join(
        f"  - name: cred-{i}\n    scope: scope-{i % scopes}\n    generate: {kind}\n"
        for i, kind in enumerate(kinds)
    )
    if len(kinds) < scopes:
        credentials += "  - name: cred-extra\n    scope: scope-1\n    generate: token\n"
    return (
        f"name: prop\nversion: 0.1.0\napprovers:\n{approvers}"
        f"policy:\n  threshold: {threshold}\n  max_ttl: 2h\n  rotate_every: 30d\n"
        f"scopes:\n{scope_text}credentials:\n{credentials}"
    )


@settings(max_examples=6, deadline=None, database=None)
@given(small_specs())
def test_sealed_bundle_round_trips(text: str) -> None:
    spec = load_text(text)
    assert spec is not None, text
    bundle, enrolment = seal_spec(spec, NOW)
    data = bundle.to_bytes()
    again = SealedBundle.from_bytes(data, "prop.sealed.yaml")
    assert again == bundle
    assert again.to_bytes() == data
    assert [c["name"] for c in enrolment["credentials"]] == [
        c.name for s in bundle.scopes for c in s.credentials
    ]
