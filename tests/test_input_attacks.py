"""Hostile input against the readers and what a person reads (issue: bad input, terminal injection).

Each test is an attack from the issue: deep nesting, huge integers, lone
surrogates, duplicate keys and wrong types must end in one ``breakglass:
error:`` line (never "internal error", never a traceback, never a key on the
sshd path); a 30 MB spec is refused at its size cap before it is parsed;
control and bidi characters in a request are shown escaped to the approver.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest

from builder.approval.request import REQUEST_ARMOR, load_request
from builder.core import bounded
from builder.core.display import escape
from builder.core.errors import CheckFailed, InputError
from builder.host.request import open_request
from builder.release.spec import load_spec
from tests import hostkit
from tests.conftest import ROOT


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a refused command: one error line (and at most one hint), no traceback,
    nothing on stdout."""
    stdout, stderr = proc.stdout, proc.stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert stdout == "", f"printed on stdout: {stdout!r}"
    lines = stderr.splitlines()
    assert lines and lines[0].startswith("breakglass: error: "), stderr
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), stderr
    assert proc.returncode in (1, 2)
    return lines[0]


# ----------------------------------------------------------------- bounded JSON reader

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (DEEP, "nested deeper than"),
        ('{"a":' + "[" * 40 + "]" * 40 + "}", "nested deeper than"),
        ('{"a":' + "9" * 5000 + "}", "more than 20 digits"),
        ('{"a":1e999}', "out of range"),
        ('{"a":NaN}', "not a json number"),
        ('{"a":-Infinity}', "not a json number"),
        ('{"a":"\\ud800"}', "invalid unicode"),
        ('{"\\udfff":1}', "invalid unicode"),
        ('{"a":1,"a":2}', "duplicate key 'a'"),
        ('{"a":', "not valid json"),
        (b'{"a":"\xff"}', "not utf-8"),
        (b'{"a":"\xed\xa0\x80"}', "not utf-8"),  # a surrogate encoded in UTF-8 is not UTF-8
        (b"\xef\xbb\xbf{}", "not valid json"),
        ("[" + "0," * 200_000 + "0]", "more than"),
    ],
)
def test_bounded_json_refuses(text: str | bytes, message: str) -> None:
    with pytest.raises(InputError, match=message) as e:
        bounded.load_json(text, "request")
    assert "\n" not in e.value.message


def test_bounded_json_accepts_what_we_write() -> None:
    doc = {"a": [1, -2, 1.5, "😀", "\\ud83d", None, True], "b": {"c": 2**63}}
    assert bounded.load_json(json.dumps(doc), "request") == doc
    assert bounded.load_json('"\\ud83d\\ude00"', "request") == "😀"  # a valid surrogate pair


def test_size_cap_is_checked_before_parsing(tmp_path: Path) -> None:
    huge = tmp_path / "state.json"
    huge.write_bytes(b" " * (bounded.cap("host state") + 1))
    with pytest.raises(InputError, match="larger than its cap"):
        bounded.read(huge, "host state")
    with pytest.raises(InputError, match="larger than its cap"):
        bounded.load_json(b"{}" + b" " * bounded.cap("approval"), "approval")


# ----------------------------------------------------------------- the sshd path


@pytest.fixture
def image(tmp_path: Path) -> hostkit.Image:
    return hostkit.clone(hostkit.shared_image(), tmp_path / "root")


def _active(image: hostkit.Image) -> dict[str, object]:
    from builder.host.unseal import unseal

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    req = open_request(image.root, now, scope="ssh-emergency", ttl_seconds=600, reason="r",
                       requester="dave")  # fmt: skip
    approvals = [hostkit.lib_approve(req, image.approvers[n], now) for n in ("alice", "bob")]
    assert unseal(image.root, now, req.id, approvals).phase == "ACTIVE"
    doc = json.loads((image.root / "var/lib/breakglass/state.json").read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize(
    "hostile",
    [
        "deep-files",
        "deep-state",
        "huge-int",
        "surrogate",
        "duplicate-phase",
        "wrong-types",
        "oversized",
    ],
)
def test_authorized_keys_never_tracebacks_or_prints_a_key(
    image: hostkit.Image, hostile: str
) -> None:
    doc = _active(image)
    state = image.root / "var/lib/breakglass/state.json"
    text = json.dumps(doc)
    if hostile == "deep-files":
        text = text.replace('"files": [', '"files": [' + "[" * 50_000 + "]" * 50_000 + ",")
    elif hostile == "deep-state":
        text = DEEP
    elif hostile == "huge-int":
        text = text.replace('"burned"', '"x": ' + "9" * 5000 + ', "burned"')
    elif hostile == "surrogate":
        text = text.replace('"scope": "ssh-emergency"', '"scope": "\\ud800"', 1)
    elif hostile == "duplicate-phase":
        text = '{"phase": "DORMANT", ' + text[1:]
    elif hostile == "wrong-types":
        text = text.replace('"files": [', '"files": 7, "x": [')
    else:
        text = text + " " * bounded.cap("host state")
    state.write_text(text)
    r = hostkit.run("host", "authorized-keys", "--root", str(image.root), "breakglass")
    assert "ssh-ed25519" not in r.stdout
    one_error_line(r)


def test_authorized_keys_on_a_deep_manifest(image: hostkit.Image) -> None:
    _active(image)
    manifest = image.root / "etc/breakglass/manifest.json"
    manifest.write_text('{"scopes": ' + DEEP + "}")
    r = hostkit.run("host", "authorized-keys", "--root", str(image.root), "breakglass")
    assert "Traceback" not in r.stderr and "ssh-ed25519" not in r.stdout
    assert r.stdout == ""


# ----------------------------------------------------------------- YAML readers


def test_a_30_mb_spec_is_refused_at_its_cap(tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    text = (ROOT / "images/example.yaml").read_text()
    spec.write_text(text + "#" * (30 * 1024 * 1024))
    with pytest.raises(InputError, match="spec is larger than its cap"):
        load_spec(spec)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("      deep: " + "[" * 3000 + "]" * 3000 + "\n", "nested deeper than"),
        ("      deep: " + "{a: " * 40 + "}" * 40 + "\n", "nested deeper than"),
        ("      big: " + "9" * 5000 + "\n", "cannot be read"),
        (
            "      a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"      {c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                for p, c in zip("abcdefgh", "bcdefghi", strict=True)
            ),
            "more than",
        ),
    ],
)
def test_hostile_spec_values(tmp_path: Path, extra: str, message: str) -> None:
    spec = tmp_path / "example.yaml"
    spec.write_text((ROOT / "images/example.yaml").read_text() + extra)
    with pytest.raises(InputError, match=message):
        load_spec(spec)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("scopes",), 7, "scopes must be a list"),
        (("approvers",), {"alice": 1}, "approvers must be a list"),
        (("scopes", 0, "sudo"), "/usr/bin/true", "sudo must be a list"),
        (("policy", "on_activate"), "true", "on_activate must be a list"),
        (("credentials",), None, "credentials must be a list"),
        (("agents", 0, "templates"), ["a"], "templates must be a mapping"),
    ],
)
def test_wrong_types_where_lists_belong(
    tmp_path: Path, path: tuple[str | int, ...], value: object, message: str
) -> None:
    from builder.core.yamlfile import load, to_plain

    doc = to_plain(load(ROOT / "images/example.yaml").value)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    spec = tmp_path / "example.yaml"
    spec.write_text(json.dumps(doc))  # JSON is YAML
    with pytest.raises(InputError, match=message):
        load_spec(spec)


def test_a_bundle_over_its_cap_is_refused() -> None:
    from builder.release.bundle import SealedBundle

    data = (ROOT / "images/example.sealed.yaml").read_bytes()
    with pytest.raises(InputError, match="sealed bundle is larger than its cap"):
        SealedBundle.from_bytes(data + b"#" * bounded.cap("sealed bundle"), "sealed.yaml")


def test_manifest_wrong_types_are_refused() -> None:
    from builder.release.manifest import Manifest
    from tests.fuzz_targets import _manifest_doc

    doc = _manifest_doc()
    doc["agents"] = 7
    from builder.core import canonical

    with pytest.raises(CheckFailed, match="agents is missing or malformed"):
        Manifest.from_bytes(canonical.dumps(doc))


def test_a_request_line_over_its_cap_is_refused() -> None:
    with pytest.raises(InputError, match="larger than its cap"):
        load_request(REQUEST_ARMOR + "A" * (bounded.cap("request") * 2))


# ----------------------------------------------------------------- what a person reads

HOSTILE_REASON = "db down\r\n          scope: nothing-much\x1b[1A\x1b[2K\u202edecnyc"


def test_escape_makes_every_control_visible() -> None:
    shown = escape(HOSTILE_REASON)
    assert shown == ("db down\\r\\n          scope: nothing-much\\x1b[1A\\x1b[2K\\u202edecnyc")
    for code in [*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F),
                 *range(0x2066, 0x206A)]:  # fmt: skip
        assert escape(chr(code)).startswith("\\"), hex(code)
    assert escape("plain text, ünïcode ok") == "plain text, ünïcode ok"
    assert escape("a\\x1b") == "a\\\\x1b"  # typed escapes cannot pass for real ones


def test_the_approver_sees_control_characters_escaped(image: hostkit.Image, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    req = open_request(image.root, now, scope="ssh-emergency", ttl_seconds=600,
                       reason=HOSTILE_REASON, requester="dave")  # fmt: skip
    path = tmp_path / "req.json"
    path.write_bytes(req.canonical())
    keys = image.approvers["alice"]
    r = hostkit.run(
        "approve", str(path), "--identity", str(keys.identity), "--signing-key",
        str(keys.signing_key), "--approver", "alice", input=b"n\n",
    )  # fmt: skip
    assert r.returncode == 1 and r.stdout == ""
    for raw in ("\r", "\x1b", "\u202e"):
        assert raw not in r.stderr
    reason = [line for line in r.stderr.splitlines() if "reason:" in line]
    assert reason == [
        "         reason: db down\\r\\n          scope: nothing-much\\x1b[1A\\x1b[2K\\u202edecnyc"
    ]
    # exactly one scope line: the real one
    assert [
        line.strip() for line in r.stderr.splitlines() if line.strip().startswith("scope:")
    ] == ["scope: ssh-emergency"]


def test_status_escapes_what_it_shows() -> None:
    from builder.host.status import render

    doc = {
        "state": "ACTIVE",
        "burned": {"a\x1b[2Jb": "x"},
        "active": {"scope": "s\r\nDORMANT", "expires_at": "t", "seconds_left": 1},
        "image": {"name": "ex\u202eelpma", "version": "1", "manifest_digest": "d"},
    }
    text = render(doc)
    assert "\x1b" not in text and "\u202e" not in text and "\r" not in text
    assert text.splitlines()[0] == "ACTIVE: scope s\\r\\nDORMANT until t (1s left)"


def test_error_lines_stay_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "example.yaml"
    text = (ROOT / "images/example.yaml").read_text()
    spec.write_text(text.replace("emergency_user: breakglass", 'emergency_user: "a\\nb\\e[2J"'))
    r = hostkit.run("lint", str(spec))
    line = one_error_line(r)
    assert "a\\nb\\x1b[2J" in line


def test_a_reason_longer_than_an_audit_line_can_hold_is_refused(image: hostkit.Image) -> None:
    from builder.approval.request import MAX_REASON

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with pytest.raises(InputError, match=f"reason is longer than {MAX_REASON} characters"):
        open_request(image.root, now, scope="ssh-emergency", ttl_seconds=600,
                     reason="x" * (MAX_REASON + 1), requester="dave")  # fmt: skip
    assert not (image.root / "var/lib/breakglass/requests").exists() or not any(
        (image.root / "var/lib/breakglass/requests").iterdir()
    )
