"""Fuzz targets, one per reader of untrusted input, and a seeded structure-aware mutator.

Each target feeds bytes to a reader the way the project reads them (from
memory, and every few inputs through a file on disk in a scratch root) and
lets only the project's own errors (``BreakglassError``) escape; anything
else is a finding. The mutator starts from valid samples of each format,
made by the project's own code, and applies what an attacker would:
truncation, byte flips and splices, deep nesting, lone surrogates, huge and
non-finite numbers, wrong types at any position, duplicate and unknown keys,
control and bidi characters, oversized documents, and for YAML aliases and
tags.

``python -m tests.fuzz_targets --total N`` runs N inputs across the targets
(``make fuzz``); ``tests/test_fuzz.py`` runs a bounded number in the default
suite. A finding is written to ``fuzz-findings/TARGET-N.bin`` and the run
exits 1.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from builder.core import bounded, canonical
from builder.core.errors import BreakglassError

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 29, 19, 0, tzinfo=UTC)
BOOT = ("0f0e0d0c-0b0a-0908-0706-050403020100", 1000)
ARMOR = "-----BEGIN AGE ENCRYPTED FILE-----\nYWdlLWVuY3J5cHRpb24ub3Jn\n-----END AGE ENCRYPTED FILE-----\n"
AGE_RECIPIENT = "age1y4x56c2gc2m7cetlpaunlr83d6w6qjae63wrvuk70uyp69g76ems6ucxcu"

# --------------------------------------------------------------------------- samples


def _request_doc() -> dict[str, Any]:
    from builder.approval.quorum import Group
    from builder.approval.request import ImageRef, UnsealRequest

    return UnsealRequest(
        id="0123456789abcdef0123456789abcdef",
        image=ImageRef("example", "1.0.0", "sha256:" + "a" * 64),
        scope="ssh-emergency",
        ttl_seconds=900,
        reason="deploy agent down, idp unreachable",
        requester="dave",
        created_at=NOW,
        not_after=NOW + timedelta(minutes=30),
        ephemeral_recipient=AGE_RECIPIENT,
        group_threshold=1,
        groups=(Group("default", 2, ("alice", "bob", "carol")),),
        shares={"alice": ARMOR, "bob": ARMOR, "carol": ARMOR},
    ).to_dict()


def _approval_doc() -> dict[str, Any]:
    from builder.approval.request import Approval

    return Approval(
        request_id="0123456789abcdef0123456789abcdef",
        request_digest="sha256:" + "b" * 64,
        approver="alice",
        approved_at=NOW,
        not_after=NOW + timedelta(minutes=30),
        share=ARMOR,
        signature="-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n",
    ).to_dict()


def _manifest_doc() -> dict[str, Any]:
    from builder.core.payload import BUNDLE_PATH, PayloadFile
    from builder.release.bundle import SealedBundle
    from builder.release.manifest import compose
    from builder.release.spec import load_spec

    spec = load_spec(ROOT / "images/example.yaml")
    raw = (ROOT / "images/example.sealed.yaml").read_bytes()
    bundle = SealedBundle.from_bytes(raw, "example.sealed.yaml")
    files = (
        PayloadFile(BUNDLE_PATH, raw),
        PayloadFile("etc/sudoers.d/breakglass", b"x", mode=0o440),
    )
    return compose(spec, bundle, files, {"builder": "breakglass", "source_date_epoch": 0})


def _state_docs() -> list[dict[str, Any]]:
    from builder.host.state import Active, HostState, Pending

    pending = Pending("0" * 32, "ssh-emergency", 900, "dave", NOW, 2, ("alice",))
    active = Active(
        "0" * 32,
        "ssh-emergency",
        NOW,
        NOW + timedelta(minutes=15),
        ("run/breakglass/ssh-emergency/emergency-ssh-key",),
        BOOT[0],
        BOOT[1],
    )
    return [
        HostState().to_dict(),
        HostState("PENDING", pending=pending).to_dict(),
        HostState("ACTIVE", active=active, burned={"ssh-emergency": "0" * 32}).to_dict(),
        active.to_dict(),  # the activation grant holds the active record
    ]


def _audit_lines() -> list[bytes]:
    from builder.host import audit
    from builder.host.layout import Layout

    with tempfile.TemporaryDirectory() as tmp:
        layout = Layout(Path(tmp))
        audit.append(layout, NOW, "request-created", request_id="0" * 32, scope="s", who="dave",
                     details={"reason": "why", "ttl_seconds": 900})  # fmt: skip
        audit.append(layout, NOW, "approval-accepted", request_id="0" * 32, scope="s",
                     who="root", details={"approver": "alice", "count": 1, "needed": 2})  # fmt: skip
        audit.append(layout, NOW, "activated", request_id="0" * 32, scope="s", who="root")
        return layout.audit.read_bytes().splitlines(keepends=True)


def _yaml_plain(path: Path) -> Any:
    from builder.core.yamlfile import load, to_plain

    return to_plain(load(path, "sealed bundle").value)


# --------------------------------------------------------------------------- mutator

_SENTINEL = "\x00fuzz\x00"
_SENTINEL_JSON = json.dumps(_SENTINEL)

# raw JSON text that replaces a sentinel value: what a hostile writer would put there
_RAW_TOKENS = [
    "9" * 5000,
    "-" + "1" * 25,
    "1e999",
    "-1e999",
    "NaN",
    "Infinity",
    "1.5",
    '"\\ud800"',
    '"a\\udfff"',
    '"\\u0000"',
    "[" * 5000 + "]" * 5000,
    "{" + '"a":{' * 100 + "}" * 101,
    "[" * 40 + "1" + "]" * 40,
    '"' + "x" * 70000 + '"',
]
_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**63, "", " ", "x", "-", "../../etc/passwd", "a\nb",
    "\x1b[2J\r\u202escope: all", "ssh-ed25519 AAAA\nssh-rsa BBBB", [], {}, [[]], {"": None},
    ["x"], [1, 2], {"name": 1}, "2026-11-29T19:00:00Z", "9999-99-99T99:99:99Z", 1.0,
]  # fmt: skip


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        copy = dict(doc)
        copy[head] = _replace(doc[head], rest, value)
        return copy
    copy_list = list(doc)
    copy_list[head] = _replace(doc[head], rest, value)
    return copy_list


def _delete(doc: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        if isinstance(doc, dict):
            return {k: v for k, v in doc.items() if k != path[0]}
        return [v for i, v in enumerate(doc) if i != path[0]]
    head = path[0]
    if isinstance(doc, dict):
        return {**doc, head: _delete(doc[head], path[1:])}
    return [(_delete(v, path[1:]) if i == head else v) for i, v in enumerate(doc)]


def _dump(doc: Any, canonical_form: bool) -> bytes:
    if canonical_form:
        try:
            return canonical.dumps(doc)
        except UnicodeEncodeError:
            pass
    return json.dumps(doc, sort_keys=canonical_form, separators=(",", ":")).encode() + b"\n"


class Mutator:
    """Seeded mutations of one format's samples; ``next()`` gives the next input."""

    def __init__(self, samples: list[Any], rng: random.Random, *, canonical_form: bool,
                 raw: list[bytes] | None = None, yaml: bool = False) -> None:  # fmt: skip
        self.samples = samples
        self.rng = rng
        self.canonical_form = canonical_form
        self.raw = raw or [_dump(s, canonical_form) for s in samples]
        self.yaml = yaml
        self.paths = [_paths(s) for s in samples]

    def next(self) -> bytes:
        r = self.rng.random()
        if r < 0.45:
            return self._structure()
        if r < 0.9:
            return self._bytes(self.rng.choice(self.raw))
        if self.yaml:
            return self._yaml_special()
        return self._bytes(self._structure())

    def _structure(self) -> bytes:
        rng = self.rng
        i = rng.randrange(len(self.samples))
        doc, paths = self.samples[i], self.paths[i]
        path = rng.choice(paths)
        kind = rng.random()
        raw_token = None
        if kind < 0.4:
            doc = _replace(doc, path, rng.choice(_VALUES))
        elif kind < 0.65:
            raw_token = rng.choice(_RAW_TOKENS)
            doc = _replace(doc, path, _SENTINEL)
        elif kind < 0.8 and path:
            doc = _delete(doc, path)
        elif kind < 0.9:
            doc = _replace(doc, path, {"unknown": 1, "name": "x"} if rng.random() < 0.5 else [doc])
        else:
            # a duplicate key: the same object once more with one key written twice
            data = _dump(doc, self.canonical_form)
            pos = data.find(b'{"', rng.randrange(max(1, len(data))))
            if pos >= 0:
                end = data.find(b'":', pos)
                if end > pos:
                    key = data[pos + 1 : end + 2]
                    return data[: pos + 1] + key + b"0," + data[pos + 1 :]
            return data
        data = _dump(doc, self.canonical_form)
        if raw_token is not None:
            data = data.replace(_SENTINEL_JSON.encode(), raw_token.encode(), 1)
        return data

    def _bytes(self, data: bytes) -> bytes:
        rng = self.rng
        b = bytearray(data)
        for _ in range(rng.choice((1, 1, 1, 2, 4))):
            op = rng.random()
            n = len(b)
            pos = rng.randrange(n + 1)
            if op < 0.25 and n:
                del b[pos:]  # truncation
            elif op < 0.5 and n:
                b[min(pos, n - 1)] ^= 1 << rng.randrange(8)
            elif op < 0.65:
                b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
            elif op < 0.8:
                token = rng.choice(
                    [b"\\ud800", b"\xed\xa0\x80", b"\xff", b"\x00", b"\x1b[2J", b"\r\n", b"[[[[",
                     b"{", b"}", b"]", b'"', b"\\", b"9" * 30, b"-0", b"1e400", b"\xe2\x80\xae"]
                )  # fmt: skip
                b[pos:pos] = token
            elif n:
                end = min(n, pos + rng.randrange(1, 64))
                b[pos:pos] = b[pos:end]  # splice a copy of a nearby run
        return bytes(b)

    def _yaml_special(self) -> bytes:
        rng = self.rng
        base = rng.choice(self.raw).decode("utf-8", "replace")
        choice = rng.randrange(6)
        if choice == 0:
            bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
                for i in range(9)
            )
            return bomb.encode()
        if choice == 1:
            depth = rng.choice((40, 300, 3000))
            return ("name: " + "[" * depth + "]" * depth + "\n").encode()
        if choice == 2:
            depth = rng.choice((40, 200))
            return "".join("  " * i + f"k{i}:\n" for i in range(depth)).encode()
        if choice == 3:
            tag = rng.choice(["!!python/object/apply:os.system ['true']", "!!binary aGVsbG8=",
                              "!!timestamp 2026-11-29", "!custom {a: 1}", "!!set {a, b}"])  # fmt: skip
            lines = base.splitlines()
            i = rng.randrange(len(lines))
            if ":" in lines[i]:
                lines[i] = lines[i].split(":", 1)[0] + ": " + tag
            return "\n".join(lines).encode()
        if choice == 4:
            return (base + "\n" + base).encode()  # every key twice
        return base.encode() + b"#" * (bounded.CAPS["spec"] + 1)


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    name: str
    mutator: Mutator
    run: Callable[[bytes, int], None]
    weight: int  # share of a run's inputs (YAML targets parse 100x slower)


class Scratch:
    """One scratch root per run, reused by every input that goes through the disk."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="bg-fuzz-")
        self.root = Path(self.tmp.name)
        (self.root / "etc/breakglass").mkdir(parents=True)
        (self.root / "var/lib/breakglass").mkdir(parents=True)
        (self.root / "run/breakglass").mkdir(parents=True)
        self.good_manifest = canonical.dumps(_manifest_doc())
        (self.root / "etc/breakglass/manifest.json").write_bytes(self.good_manifest)

    def write(self, rel: str, data: bytes) -> Path:
        path = self.root / rel
        path.write_bytes(data)
        return path


def _spec_target(scratch: Scratch) -> Callable[[bytes, int], None]:
    from builder.release.spec import load_spec

    def run(data: bytes, n: int) -> None:
        load_spec(scratch.write("example.yaml", data))

    return run


def _bundle_target(data: bytes, n: int) -> None:
    from builder.release.bundle import SealedBundle

    SealedBundle.from_bytes(data, "sealed.yaml")


def _request_target(data: bytes, n: int) -> None:
    from builder.approval.approve import summary
    from builder.approval.request import REQUEST_ARMOR, UnsealRequest, _document
    from builder.core.display import escape

    text = data.decode("utf-8", "surrogateescape")
    if n % 2:
        text = REQUEST_ARMOR + base64.urlsafe_b64encode(data).decode().rstrip("=")
    request = UnsealRequest.from_dict(_document(text, REQUEST_ARMOR, "request"))
    for _label, value in summary(request):
        assert escape(value).isprintable(), "a displayed value is not printable after escaping"
    assert UnsealRequest.from_dict(request.to_dict()) == request


def _approval_target(data: bytes, n: int) -> None:
    from builder.approval.request import APPROVAL_ARMOR, Approval, _document

    text = data.decode("utf-8", "surrogateescape")
    if n % 2:
        text = APPROVAL_ARMOR + base64.urlsafe_b64encode(data).decode().rstrip("=")
    approval = Approval.from_dict(_document(text, APPROVAL_ARMOR, "approval"))
    assert Approval.from_dict(approval.to_dict()) == approval


def _manifest_target(scratch: Scratch) -> Callable[[bytes, int], None]:
    from builder.host.authorized_keys import keys_for
    from builder.host.image import load_image
    from builder.host.layout import Layout
    from builder.release.manifest import Manifest

    def run(data: bytes, n: int) -> None:
        if n % 32 == 0:
            scratch.write("etc/breakglass/manifest.json", data)
            try:
                for scope in ("ssh-emergency", "agent-backup"):
                    keys_for(scratch.root, scope, "breakglass")
                load_image(Layout(scratch.root))
            finally:
                scratch.write("etc/breakglass/manifest.json", scratch.good_manifest)
        m = Manifest.from_bytes(data)
        (m.name, m.version, m.policy, m.files, m.scopes, m.agents, m.approver_keys(), m.digest)

    return run


def _enrolment_target(scratch: Scratch) -> Callable[[bytes, int], None]:
    from builder.fleet.drift import Enrolment, load_enrolment

    def run(data: bytes, n: int) -> None:
        if n % 32 == 0:
            load_enrolment(scratch.write("enrolment.json", data))
        else:
            Enrolment.from_dict(bounded.load_json(data, "enrolment"))

    return run


def _state_target(scratch: Scratch) -> Callable[[bytes, int], None]:
    from builder.host import grant, state
    from builder.host.authorized_keys import _quiet, open_scope

    def run(data: bytes, n: int) -> None:
        if n % 32 == 0:
            # the same bytes as the state file and as the activation grant (the sshd path)
            scratch.write("var/lib/breakglass/state.json", data)
            scratch.write("run/breakglass/.grant.json", data)
            _quiet(scratch.root, NOW, BOOT)
            open_scope(scratch.root, NOW, BOOT)
            grant.read(scratch.root)
            state.active_scope(scratch.root, NOW)
            state.load(scratch.root)
        else:
            state.HostState.from_dict(bounded.load_json(data, "host state"))

    return run


def _audit_target(scratch: Scratch, lines: list[bytes]) -> Callable[[bytes, int], None]:
    from builder.host import audit
    from builder.host.expire import _last_event
    from builder.host.layout import Layout

    layout = Layout(scratch.root)

    def run(data: bytes, n: int) -> None:
        if n % 32 == 0:
            keep = n % len(lines)
            log = b"".join(lines[:keep]) + data + b"".join(lines[keep + 1 :])
            scratch.write("var/lib/breakglass/audit.jsonl", log)
            _last_event(layout)
            try:
                audit.read_events(layout)
            finally:
                audit.verify(layout)
        else:
            bounded.load_json(data, "audit line")

    return run


def targets(seed: int) -> tuple[list[Target], Scratch]:
    """Every fuzz target with its mutator, seeded; the caller keeps the Scratch alive."""
    rng = random.Random(seed)
    scratch = Scratch()
    spec_raw = (ROOT / "images/example.yaml").read_bytes()
    bundle_raw = (ROOT / "images/example.sealed.yaml").read_bytes()
    enrolment_raw = (ROOT / "images/example.enrolment.json").read_bytes()
    lines = _audit_lines()
    return [
        Target("spec", Mutator([_yaml_plain(ROOT / "images/example.yaml")], rng,
                               canonical_form=False, raw=[spec_raw], yaml=True),
               _spec_target(scratch), 1),
        Target("bundle", Mutator([_yaml_plain(ROOT / "images/example.sealed.yaml")], rng,
                                 canonical_form=False, raw=[bundle_raw], yaml=True),
               _bundle_target, 1),
        Target("request", Mutator([_request_doc()], rng, canonical_form=True),
               _request_target, 90),
        Target("approval", Mutator([_approval_doc()], rng, canonical_form=True),
               _approval_target, 90),
        Target("manifest", Mutator([_manifest_doc()], rng, canonical_form=True),
               _manifest_target(scratch), 20),
        Target("enrolment", Mutator([json.loads(enrolment_raw)], rng, canonical_form=True),
               _enrolment_target(scratch), 40),
        Target("state", Mutator(_state_docs(), rng, canonical_form=True),
               _state_target(scratch), 60),
        Target("audit", Mutator([json.loads(x) for x in lines], rng, canonical_form=True,
                                raw=lines), _audit_target(scratch, lines), 60),
    ], scratch  # fmt: skip


class Finding(Exception):
    """An input made a reader raise something other than the project's own error."""


def run_target(target: Target, count: int, *, save: Path | None = None) -> int:
    """Feed ``count`` inputs to ``target``; raise Finding at the first escape. Returns ``count``."""
    for n in range(count):
        data = target.mutator.next()
        try:
            target.run(data, n)
        except BreakglassError as e:
            # the CLI prints messages escaped to one line (builder.core.display); here: non-empty
            if not e.message.strip():
                raise Finding(f"{target.name}: an empty error message") from e
        except Exception as e:
            if save is not None:
                save.mkdir(exist_ok=True)
                (save / f"{target.name}-{n}.bin").write_bytes(data)
            raise Finding(f"{target.name}: input {n} raised {type(e).__name__}: {e}") from e
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--total", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="run one target")
    args = parser.parse_args(argv)
    found, scratch = targets(args.seed)
    if args.only:
        found = [t for t in found if t.name == args.only]
    weights = sum(t.weight for t in found)
    started = time.monotonic()
    total = 0
    with scratch.tmp:
        for t in found:
            count = -(-args.total * t.weight // weights)
            t0 = time.monotonic()
            try:
                run_target(t, count, save=Path("fuzz-findings"))
            except Finding as e:
                print(f"fuzz: FINDING {e}", file=sys.stderr)
                return 1
            total += count
            print(f"fuzz: {t.name:9} {count:>8} inputs in {time.monotonic() - t0:6.1f}s")
    print(f"fuzz: {total} inputs across {len(found)} targets in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
