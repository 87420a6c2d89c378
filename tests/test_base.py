"""``breakglass base debian``: argument errors (fast) and a cached base umoci reads (e2e)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from builder.vm.base import DEFAULT_MIRROR, apt_mirror, cache_key
from tests.conftest import require_tool


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "builder", "base", "debian", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def test_bad_suite_is_one_line_error_and_writes_nothing(tmp_path: Path) -> None:
    proc = _cli("--out", str(tmp_path / "out"), "--suite", "Bookworm;rm")
    assert proc.returncode == 2
    assert proc.stderr == "breakglass: error: not a debian suite name: 'Bookworm;rm'\n"
    assert not (tmp_path / "out").exists()


def test_refuses_to_replace_a_directory_that_is_not_a_layout(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = _cli("--out", str(out))
    assert proc.returncode == 2
    assert proc.stderr.startswith("breakglass: error: output directory is not empty")
    assert proc.stderr.count("\n") == 1
    assert (out / "keep.txt").read_text() == "mine"


def test_apt_mirror_reads_deb822_then_legacy_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    assert apt_mirror("bookworm", tmp_path) == DEFAULT_MIRROR
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://legacy.example/debian bookworm main\n"
    )
    assert apt_mirror("bookworm", tmp_path) == "http://legacy.example/debian"
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
    )
    assert apt_mirror("bookworm", tmp_path) == "http://mirror.example/debian"
    assert apt_mirror("trixie", tmp_path) == DEFAULT_MIRROR


def test_cache_key_follows_its_inputs() -> None:
    assert cache_key("bookworm", "http://a") == cache_key("bookworm", "http://a")
    assert cache_key("bookworm", "http://a") != cache_key("bookworm", "http://b")
    assert cache_key("bookworm", "http://a") != cache_key("trixie", "http://a")


@pytest.mark.e2e
def test_base_debian_layout_is_read_by_umoci_and_cached(tmp_path: Path) -> None:
    umoci = require_tool("umoci")
    require_tool("debootstrap")
    first = _cli("--out", str(tmp_path / "a"), "--json")
    assert first.returncode == 0, first.stderr
    second = _cli("--out", str(tmp_path / "b"), "--json")
    assert second.returncode == 0, second.stderr
    doc = json.loads(second.stdout)
    assert doc["cached"] is True and doc["tag"] == "bookworm"
    assert doc["cache_key"] == json.loads(first.stdout)["cache_key"]
    tags = subprocess.run(
        [umoci, "ls", "--layout", str(tmp_path / "b")], capture_output=True, text=True, check=True
    )
    assert tags.stdout.split() == ["bookworm"]
    bundle = tmp_path / "bundle"
    subprocess.run(
        [umoci, "unpack", "--image", f"{tmp_path / 'b'}:bookworm", str(bundle)],
        check=True,
        capture_output=True,
    )
    rootfs = bundle / "rootfs"
    for binary in ("usr/bin/python3", "usr/sbin/sshd", "usr/bin/sudo"):
        assert (rootfs / binary).exists(), binary
    assert not list((rootfs / "var/cache/apt/archives").glob("*.deb"))


def test_disk_refuses_a_small_size_and_a_foreign_directory(tmp_path: Path) -> None:
    proc = _cli("--disk", "--size", "100", "--out", str(tmp_path / "d"))
    assert proc.returncode == 2
    assert proc.stderr == "breakglass: error: disk size must be at least 1024 MiB, not 100\n"
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = _cli("--disk", "--out", str(out))
    assert proc.returncode == 2 and "not a breakglass disk" in proc.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_a_disk_whose_file_changed_is_refused(tmp_path: Path) -> None:
    from builder.core.canonical import dumps
    from builder.core.errors import CheckFailed, InputError
    from builder.vm.disk import FORMAT, RECIPE_NAME, load_disk

    with pytest.raises(InputError, match="not a breakglass disk"):
        load_disk(tmp_path)
    import hashlib

    files = {}
    for name in ("disk.qcow2", "vmlinuz", "initrd.img"):
        (tmp_path / name).write_bytes(name.encode())
        files[name] = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    (tmp_path / RECIPE_NAME).write_bytes(
        dumps({"format": FORMAT, "files": files, "cmdline": "root=/dev/vda"})
    )
    assert load_disk(tmp_path).cmdline == "root=/dev/vda"
    (tmp_path / "vmlinuz").write_bytes(b"other kernel")
    with pytest.raises(CheckFailed, match="vmlinuz: differs from the digest"):
        load_disk(tmp_path)


def test_bootable_base_is_its_own_cache_entry() -> None:
    from builder.vm.base import BOOT_PACKAGES, packages

    assert cache_key("bookworm", "http://a", bootable=True) != cache_key("bookworm", "http://a")
    assert set(BOOT_PACKAGES) <= set(packages(bootable=True))
    assert not set(BOOT_PACKAGES) & set(packages())


def test_cached_base_blobs_are_made_public_so_builds_link_them(tmp_path: Path) -> None:
    from builder.vm.base import public_blobs

    blobs = tmp_path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    blob = blobs / ("ab" * 32)
    blob.write_bytes(b"layer")
    blob.chmod(0o600)
    public_blobs(tmp_path)
    assert blob.stat().st_mode & 0o7777 == 0o644
