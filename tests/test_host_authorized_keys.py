"""``host authorized-keys``: the fast path answers quiet states itself and defers everything else."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from builder.host.authorized_keys import fast_main
from builder.host.request import open_request
from builder.host.unseal import unseal
from tests import hostkit


@pytest.fixture
def image(tmp_path: Path) -> hostkit.Image:
    return hostkit.clone(hostkit.shared_image(), tmp_path / "root")


def _activate(
    image: hostkit.Image, now: dt.datetime, ttl: int = 600, scope: str = "ssh-emergency"
) -> None:
    req = open_request(image.root, now, scope=scope, ttl_seconds=ttl, reason="r", requester="dave")
    approvals = [hostkit.lib_approve(req, image.approvers[n], now) for n in ("alice", "bob")]
    assert unseal(image.root, now, req.id, approvals).phase == "ACTIVE"


def _public(image: hostkit.Image) -> str:
    scopes = image.manifest["scopes"]
    assert isinstance(scopes, list)
    return str(next(s for s in scopes if s["name"] == "ssh-emergency")["credentials"][0]["public"])


def test_fast_path_quiet_states(image: hostkit.Image, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(image.root)
    assert fast_main(["--root", root, "breakglass"]) == 0
    assert capsys.readouterr().out == ""
    _activate(image, dt.datetime.now(dt.UTC).replace(microsecond=0))
    assert fast_main([f"--root={root}", "breakglass"]) == 0
    assert capsys.readouterr().out == _public(image) + "\n"
    assert fast_main(["--root", root, "root"]) == 0
    assert capsys.readouterr().out == ""
    assert fast_main(["--root", root, "--json", "breakglass"]) == 0
    assert '"keys": ["ssh-ed25519 ' in capsys.readouterr().out


def test_fast_path_defers_what_needs_settling(image: hostkit.Image) -> None:
    root = str(image.root)
    assert fast_main(["--help"]) is None
    assert fast_main(["--root", root]) is None
    assert fast_main(["--root", root, "a", "b"]) is None
    _activate(image, dt.datetime(2020, 1, 1, tzinfo=dt.UTC), ttl=60)  # long expired
    assert fast_main(["--root", root, "breakglass"]) is None
    assert hostkit.plaintext_files(image.root) != []  # the fast path changed nothing


def test_fast_path_defers_on_stray_plaintext(image: hostkit.Image) -> None:
    stray = image.root / "run/breakglass/ssh-emergency/emergency-ssh-key"
    stray.parent.mkdir(parents=True)
    stray.write_text("left behind by a crash")
    assert fast_main(["--root", str(image.root), "breakglass"]) is None
    r = hostkit.run("host", "authorized-keys", "--root", str(image.root), "breakglass")
    assert r.returncode == 0 and r.stdout == ""
    assert not stray.exists()


def test_fast_path_and_cli_agree(image: hostkit.Image) -> None:
    _activate(image, dt.datetime.now(dt.UTC).replace(microsecond=0))
    code = "import sys; from builder.host.authorized_keys import fast_main; sys.exit(fast_main(sys.argv[1:]))"
    fast = subprocess.run(
        [sys.executable, "-c", code, "--root", str(image.root), "breakglass"],
        capture_output=True, text=True, cwd=hostkit.REPO, check=False,
    )  # fmt: skip
    cli = hostkit.run("host", "authorized-keys", "--root", str(image.root), "breakglass")
    assert fast.returncode == cli.returncode == 0
    assert fast.stdout == cli.stdout == _public(image) + "\n"
    # the fast path must not pull in the CLI or the crypto
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; import builder.host.authorized_keys; "
         "print(sorted(m for m in ('click', 'pyrage', 'ruamel', 'jinja2', 'shamir_mnemonic') if m in sys.modules))"],
        capture_output=True, text=True, cwd=hostkit.REPO, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "[]"
