"""OCI revision and source annotations: set from a clean checkout, and builds stay bit-identical."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from builder.release.gitsource import REVISION, SOURCE, source_url
from tests.conftest import require_tool, run_cli
from tests.test_build import build, tree


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def _annotations(image_dir: Path) -> dict[str, str]:
    index = json.loads((image_dir / "oci/index.json").read_bytes())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((image_dir / "oci/blobs/sha256" / digest).read_bytes())
    annotations: dict[str, str] = manifest["annotations"]
    return annotations


@pytest.fixture
def checkout(example_project: Path) -> Path:
    """The example project as a committed git repository with an ssh remote."""
    require_tool("git")
    repo = example_project.parent.parent
    _git(repo, "init", "-q")
    _git(repo, "add", "images", "templates")
    _git(repo, "commit", "-qm", "example")
    _git(repo, "remote", "add", "origin", "git@github.com:breakglass-dev/example.git")
    return repo


def test_clones_of_one_commit_build_identical_annotated_images(
    checkout: Path, demo_keys: Path, tmp_path: Path
) -> None:
    clone = tmp_path / "elsewhere" / "clone"
    _git(tmp_path, "clone", "-q", str(checkout), str(clone))
    _git(
        clone,
        "remote",
        "set-url",
        "origin",
        "https://user:token@github.com/breakglass-dev/example.git",
    )
    first = build(checkout / "images/example.yaml", tmp_path / "a", demo_keys)
    second = build(clone / "images/example.yaml", tmp_path / "b", demo_keys, umask=0o077)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    a, b = (Path(json.loads(r.stdout)["image_dir"]) for r in (first, second))
    assert tree(a) == tree(b)
    found = _annotations(a)
    assert found[REVISION] == _git(checkout, "rev-parse", "HEAD")
    assert found[SOURCE] == "https://github.com/breakglass-dev/example"  # no credentials
    assert run_cli("verify", a, "--allowed-signers", demo_keys / "allowed_signers").returncode == 0


def test_uncommitted_inputs_claim_no_commit(
    checkout: Path, demo_keys: Path, tmp_path: Path
) -> None:
    template = next((checkout / "templates").rglob("*.j2"))
    template.write_text(template.read_text() + "\n# local change\n")
    r = build(checkout / "images/example.yaml", tmp_path / "dist", demo_keys)
    assert r.returncode == 0, r.stderr
    found = _annotations(Path(json.loads(r.stdout)["image_dir"]))
    assert REVISION not in found and SOURCE not in found


def test_a_build_outside_a_checkout_has_no_source(
    example_project: Path, demo_keys: Path, tmp_path: Path
) -> None:
    r = build(example_project, tmp_path / "dist", demo_keys)
    assert r.returncode == 0, r.stderr
    found = _annotations(Path(json.loads(r.stdout)["image_dir"]))
    assert REVISION not in found and SOURCE not in found


@pytest.mark.parametrize(
    ("remote", "url"),
    [("git@github.com:o/r.git", "https://github.com/o/r"),
     ("https://x-access-token:secret@github.com/o/r.git", "https://github.com/o/r"),
     ("ssh://git@gitlab.example:2222/g/r.git", "https://gitlab.example/g/r"),
     ("https://github.com/o/r", "https://github.com/o/r"),
     ("/srv/git/r.git", None), ("file:///srv/git/r.git", None), ("../r", None), ("", None)],
)  # fmt: skip
def test_source_url(remote: str, url: str | None) -> None:
    assert source_url(remote) == url


def test_an_ignored_bundle_claims_no_commit(
    example_project: Path, demo_keys: Path, tmp_path: Path
) -> None:
    require_tool("git")
    repo = example_project.parent.parent
    _git(repo, "init", "-q")
    (repo / ".gitignore").write_text("*.sealed.yaml\n")  # the bundle is not in the commit
    _git(repo, "add", ".gitignore", "images", "templates")
    _git(repo, "commit", "-qm", "example without its bundle")
    r = build(example_project, tmp_path / "dist", demo_keys)
    assert r.returncode == 0, r.stderr
    assert REVISION not in _annotations(Path(json.loads(r.stdout)["image_dir"]))
