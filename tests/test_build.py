"""Build: real OCI layouts that skopeo and umoci read, bit-identical rebuilds, no plaintext anywhere."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

from tests.conftest import require_tool, run_cli

CANARY = "canary-token-2b9e61f0c7d84a35be77"
CANARY_FILE = "canary-file-secret-94d1c3a7e0f2"


@pytest.fixture
def canary_project(example_project: Path) -> Path:
    """The example with a token from the environment and an opaque secret from a file, sealed."""
    text = example_project.read_text()
    text = text.replace(
        "generate: token",
        "from_env: BG_TEST_CANARY\n    kind: token\n"
        "  - name: deploy-extra\n    scope: agent-backup\n    from_file: extra.secret",
    )
    example_project.write_text(text)
    (example_project.parent / "extra.secret").write_text(CANARY_FILE)
    result = run_cli("seal", "--rotate", example_project, env={"BG_TEST_CANARY": CANARY})
    assert result.returncode == 0, result.stderr
    (example_project.parent / "extra.secret").unlink()
    return example_project


def build(
    spec: Path, out: Path, keys: Path, umask: int = 0o022
) -> subprocess.CompletedProcess[str]:
    old = os.umask(umask)
    try:
        return run_cli("build", spec, "--out", out, "--sign-key", keys / "release", "--json")
    finally:
        os.umask(old)


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_skopeo_and_umoci_read_the_image(
    example_project: Path, demo_keys: Path, tmp_path: Path
) -> None:
    require_tool("skopeo")
    require_tool("umoci")
    result = build(example_project, tmp_path / "dist", demo_keys)
    assert result.returncode == 0, result.stderr
    image_dir = Path(json.loads(result.stdout)["image_dir"])
    info = json.loads(
        subprocess.run(
            ["skopeo", "inspect", f"oci:{image_dir / 'oci'}:1.0.0"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    )
    assert info["Digest"] == json.loads(result.stdout)["image_digest"]
    assert len(info["Layers"]) == 1
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{image_dir / 'oci'}:1.0.0", str(bundle)],
        capture_output=True,
        check=True,
    )
    rootfs = bundle / "rootfs"
    assert (rootfs / "etc/breakglass/manifest.json").read_bytes() == (
        image_dir / "breakglass-manifest.json"
    ).read_bytes()
    assert (rootfs / "etc/breakglass/sealed.yaml").read_bytes() == example_project.with_name(
        "example.sealed.yaml"
    ).read_bytes()
    normal = (rootfs / "etc/breakglass/agents/deploy-agent/normal/agent.toml").read_text()
    overlay = (rootfs / "etc/breakglass/agents/deploy-agent/breakglass/agent.toml").read_text()
    assert 'mode = "normal"' in normal and "/token" in normal
    assert 'token_file = "/run/breakglass/agent-backup/deploy-token"' in overlay
    dropin = (rootfs / "etc/ssh/sshd_config.d/50-breakglass.conf").read_text()
    assert "AuthorizedKeysCommand /usr/local/bin/breakglass host authorized-keys %u" in dropin
    assert (rootfs / "etc/sudoers.d/breakglass").stat().st_mode & 0o777 == 0o440
    assert (rootfs / "run/breakglass").stat().st_mode & 0o777 == 0o700


def test_two_builds_are_bit_identical(
    example_project: Path, demo_keys: Path, tmp_path: Path
) -> None:
    first = build(example_project, tmp_path / "a" / "dist", demo_keys, umask=0o022)
    second = build(example_project, tmp_path / "b" / "elsewhere", demo_keys, umask=0o077)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    a = tree(Path(json.loads(first.stdout)["image_dir"]))
    b = tree(Path(json.loads(second.stdout)["image_dir"]))
    assert a == b
    assert len(a) >= 6  # oci-layout, index, 3 blobs, manifest, signature


def test_rebuild_is_a_noop_and_changed_content_is_refused(
    example_project: Path, demo_keys: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dist"
    assert build(example_project, out, demo_keys).returncode == 0
    again = build(example_project, out, demo_keys)
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False
    template = example_project.parent.parent / "templates/deploy-agent/normal.toml.j2"
    before = tree(out)
    template.write_text(template.read_text() + "# changed\n")
    changed = build(example_project, out, demo_keys)
    assert changed.returncode == 2
    assert "already exists with different content" in changed.stderr
    assert "hint: versions are immutable; run `breakglass bump" in changed.stderr
    assert tree(out) == before


def test_canary_appears_in_no_build_output(
    canary_project: Path, demo_keys: Path, tmp_path: Path
) -> None:
    result = build(canary_project, tmp_path / "dist", demo_keys)
    assert result.returncode == 0, result.stderr
    seen = [result.stdout, result.stderr]
    for path in sorted((tmp_path / "dist").rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        seen.append(data.decode("latin-1"))
        if data[:2] == b"\x1f\x8b":  # a layer: look inside every file it holds
            with tarfile.open(fileobj=BytesIO(gzip.decompress(data))) as tar:
                for member in tar.getmembers():
                    f = tar.extractfile(member)
                    if f is not None:
                        seen.append(f.read().decode("latin-1"))
    rendered = run_cli("build", canary_project, "--dry-run", "--json")
    seen += [rendered.stdout, rendered.stderr]
    assert len(seen) > 8
    for text in seen:
        assert CANARY not in text
        assert CANARY_FILE not in text


def test_dry_run_writes_nothing(example_project: Path, tmp_path: Path) -> None:
    result = run_cli("build", example_project, "--out", tmp_path / "dist", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    paths = [f["path"] for f in json.loads(result.stdout)["files"]]
    assert "etc/breakglass/manifest.json" in paths and "etc/breakglass/sealed.yaml" in paths
    assert not (tmp_path / "dist").exists()


def _tiny_base(dest: Path) -> None:
    """An OCI layout with one layer holding the account files a base build extends."""
    from builder.core.payload import PayloadFile
    from builder.release import layer, oci

    files = (
        PayloadFile("etc/group", b"root:x:0:\nshadow:x:42:\n"),
        PayloadFile("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
        PayloadFile("etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o640, gid=42),
    )
    packed = layer.pack(files, source_date_epoch=0)
    oci.write_layout(oci.assemble(packed, tag="tiny", source_date_epoch=0), dest)


def test_two_builds_on_a_base_in_different_directories_are_bit_identical_with_bytecode(
    demo_keys: Path, tmp_path: Path
) -> None:
    from tests.conftest import ROOT

    results = []
    for where in ("one", "two/deeper"):
        project = tmp_path / where
        (project / "images").mkdir(parents=True)
        for name in ("images", "templates"):
            subprocess.run(["cp", "-r", str(ROOT / name), str(project)], check=True)
        _tiny_base(project / "base-oci")
        spec = project / "images/example.yaml"
        spec.write_text(spec.read_text() + "base: ../base-oci:tiny\n")
        proc = build(spec, project / "dist", demo_keys)
        assert proc.returncode == 0, proc.stderr
        results.append(Path(json.loads(proc.stdout)["image_dir"]))
    assert tree(results[0]) == tree(results[1])
    index = json.loads((results[0] / "oci/index.json").read_bytes())
    manifest_blob = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((results[0] / "oci/blobs/sha256" / manifest_blob).read_bytes())
    top = manifest["layers"][-1]["digest"].split(":")[1]
    blob = (results[0] / "oci/blobs/sha256" / top).read_bytes()
    with tarfile.open(fileobj=BytesIO(gzip.decompress(blob))) as t:
        names = t.getnames()
    pyc = [n for n in names if n.endswith(".pyc")]
    assert (
        "usr/lib/breakglass/builder/host/__pycache__/unseal.cpython-311.pyc".replace(
            "cpython-311", __import__("sys").implementation.cache_tag
        )
        in pyc
    )
    assert len(pyc) > 50


def test_a_build_on_a_base_is_the_same_from_a_cold_a_warm_and_a_damaged_cache(
    demo_keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import ROOT

    for name in ("images", "templates"):
        subprocess.run(["cp", "-r", str(ROOT / name), str(tmp_path)], check=True)
    _tiny_base(tmp_path / "base-oci")
    spec = tmp_path / "images/example.yaml"
    spec.write_text(spec.read_text() + "base: ../base-oci:tiny\n")
    cache = tmp_path / "cache"
    monkeypatch.setenv("BREAKGLASS_CACHE", str(cache))
    trees = []
    for run in ("cold", "warm", "damaged"):
        if run == "damaged":
            for entry in (*(cache / "layers").iterdir(), *(cache / "bytecode").iterdir()):
                entry.write_bytes(entry.read_bytes()[:-1] + b"!")
        proc = build(spec, tmp_path / run, demo_keys)
        assert proc.returncode == 0, proc.stderr
        trees.append(tree(Path(json.loads(proc.stdout)["image_dir"])))
        if run == "cold":
            assert len(list((cache / "layers").iterdir())) == 1
            assert len(list((cache / "bytecode").iterdir())) == 1
    assert trees[0] == trees[1] == trees[2]
