"""The click-free host dispatcher answers exactly as the click CLI does.

Each host command line runs twice, once through the console entry point
(``python -m builder``, the fast path) and once through ``builder.cli.main``
(click), on two identical roots; stdout, stderr and the exit code must match.
A second check proves the fast path imports neither click, jinja2 nor ruamel.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests import hostkit

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
FROZEN = {"BREAKGLASS_UNSAFE_FROZEN_NOW": NOW.strftime("%Y-%m-%dT%H:%M:%SZ")}


def _run(fast: bool, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    head = ["-m", "builder"] if fast else ["-c", "from builder.cli import main; main()"]
    return subprocess.run(
        [hostkit.PYTHON, *head, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=hostkit.REPO,
        check=False,
    )


def _both(
    roots: tuple[Path, Path], args: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """The same command on each root: fast on the first, click on the second, roots unified."""
    fast = _run(True, [a.replace("{root}", str(roots[0])) for a in args], env or {})
    slow = _run(False, [a.replace("{root}", str(roots[1])) for a in args], env or {})
    return (
        _normalise(fast, roots[0]),
        _normalise(slow, roots[1]),
    )


def _timeless(text: str) -> str:
    """The two runs start a moment apart: times and seconds left may differ by a tick."""
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "TIME", text)
    return re.sub(r"\d+s left|\"seconds_left\": \d+", "LEFT", text)


def _normalise(p: subprocess.CompletedProcess[str], root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(
        p.args,
        p.returncode,
        _timeless(p.stdout.replace(str(root), "ROOT")),
        _timeless(p.stderr.replace(str(root), "ROOT")),
    )


def _same(roots: tuple[Path, Path], args: list[str], env: dict[str, str] | None = None) -> int:
    fast, slow = _both(roots, args, env)
    assert "Traceback" not in fast.stderr + slow.stderr
    assert (fast.returncode, fast.stdout, fast.stderr) == (
        slow.returncode,
        slow.stdout,
        slow.stderr,
    ), args
    return fast.returncode


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    image = hostkit.shared_image()
    a = hostkit.clone(image, tmp_path / "a").root
    b = hostkit.clone(image, tmp_path / "b").root
    return a, b


def test_every_host_command_answers_alike(roots: tuple[Path, Path], tmp_path: Path) -> None:
    r = "--root={root}"
    for args in (
        ["host", "status", r],
        ["host", "status", "--json", "--root", "{root}"],
        ["host", "tick", r],
        ["host", "tick", r, "--json"],
        ["host", "reseal", r],
        ["host", "reseal", "--json", r],
        ["host", "authorized-keys", r, "breakglass"],
        ["host", "authorized-keys", r, "--json", "breakglass"],
        ["host", "audit", "verify", r],
        ["host", "audit", "verify", r, "--json"],
    ):
        assert _same(roots, args) == 0
    # errors: one line, the same exit code, from the host functions or from click
    errors = [
        ["host", "audit", "verify", r, "--expect-head", "sha256:00"],
        ["host", "unseal", r, "nope", "x"],
        ["host", "unseal", r, "nope"],
        ["host", "request", r, "--scope", "ssh-emergency", "--ttl", "99d", "--reason", "x",
         "--requester", "dave"],
        ["host", "request", r, "--scope", "nope", "--ttl", "5m", "--reason", "x",
         "--requester", "dave"],
        ["host", "request", r, "--scope", "ssh-emergency", "--ttl", "5m"],
        ["host", "status", "--bogus", r],
        ["host", "status", "--root"],
        ["host", "status", "--root", "{root}/etc/breakglass/manifest.json"],
        ["host", "status", r, "extra"],
        ["host", "authorized-keys", r],
    ]  # fmt: skip
    for args in errors:
        assert _same(roots, args) != 0
    # a root with no image at all: both paths give the same answer (an error, today)
    empty = (tmp_path / "empty-a", tmp_path / "empty-b")
    _same(empty, ["host", "status", "--root", "{root}"])
    _same(empty, ["host", "audit", "verify", "--root", "{root}"])
    assert _same(empty, ["host", "request", "--root", "{root}", "--scope", "s", "--ttl", "5m",
                         "--reason", "x", "--requester", "dave"]) != 0  # fmt: skip


def test_request_and_unseal_answer_alike(roots: tuple[Path, Path], tmp_path: Path) -> None:
    image = hostkit.shared_image()
    request = ["host", "request", "--root", "{root}", "--scope", "ssh-emergency", "--ttl", "10m",
               "--reason", "db down", "--requester", "dave", "--json"]  # fmt: skip
    fast, slow = _both(roots, request, FROZEN)
    assert fast.returncode == slow.returncode == 0
    assert fast.stderr == slow.stderr
    docs = [json.loads(p.stdout) for p in (fast, slow)]
    assert sorted(docs[0]) == sorted(docs[1])
    ids = [d["request_id"] for d in docs]
    from builder.approval.request import UnsealRequest
    from builder.host.layout import Layout

    approvals = []
    for root, rid in zip(roots, ids, strict=True):
        req = UnsealRequest.from_dict(json.loads(Layout(root).request_file(rid).read_bytes()))
        approvals.append(
            [hostkit.lib_approve(req, image.approvers[a], NOW) for a in ("alice", "bob")]
        )
    for step in (0, 1):
        outs = []
        for fast_path, root, rid, approval in zip(
            (True, False), roots, ids, approvals, strict=True
        ):
            p = _run(
                fast_path, ["host", "unseal", "--root", str(root), rid, approval[step]], FROZEN
            )
            outs.append((p.returncode, _timeless(p.stdout.replace(rid, "ID")), p.stderr))
        assert outs[0] == outs[1]
        assert outs[0][0] == 0
    assert "ACTIVE" in outs[0][1]
    assert _same(roots, ["host", "status", "--root", "{root}"], FROZEN) == 0
    for args in (["host", "authorized-keys", "--root", "{root}", "breakglass"],
                 ["host", "reseal", "--root", "{root}", "--json"],
                 ["host", "audit", "verify", "--root", "{root}"]):  # fmt: skip
        fast, slow = _both(roots, args, FROZEN)
        assert (fast.returncode, fast.stderr) == (slow.returncode, slow.stderr) == (0, fast.stderr)
        if args[1] != "audit":
            assert fast.stdout == slow.stdout


def test_fast_path_imports_no_cli_or_render_libraries(roots: tuple[Path, Path]) -> None:
    code = (
        "import sys; sys.argv = ['breakglass', *sys.argv[1:]]\n"
        "from builder.entry import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'jinja2', 'ruamel'))\n"
        "print('IMPORTED', bad, file=sys.stderr)\n"
    )
    for args in (["host", "status"], ["host", "tick"], ["host", "audit", "verify"],
                 ["host", "authorized-keys", "breakglass"], ["host", "reseal"]):  # fmt: skip
        p = subprocess.run(
            [hostkit.PYTHON, "-c", code, *args, "--root", str(roots[0])],
            capture_output=True, text=True, cwd=hostkit.REPO, check=False,
        )  # fmt: skip
        assert "IMPORTED []" in p.stderr, (args, p.stderr)
