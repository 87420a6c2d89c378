"""A bootable VM disk from the cached Debian base: an ext4 root file system in a qcow2 file,
with the Debian kernel and initramfs beside it for direct kernel boot, cached.

``debian_disk`` takes the bootable flavour of the debootstrap base
(``builder.vm.base.debian_base(bootable=True)``: systemd as init, udev,
linux-image-amd64, openssh-server, python3, sudo; no SSH host keys, an empty
machine id), unpacks it with umoci, writes it into an ext4 file system with
``mkfs.ext4 -d`` (no loop device, no mount) and converts that to qcow2. The
kernel and initramfs are copied out of the tree's ``/boot``: QEMU boots them
directly (``-kernel``, ``-initrd``, ``-append "root=/dev/vda ..."``), so the
disk needs no partition table and no bootloader.

The output directory holds ``disk.qcow2``, ``vmlinuz``, ``initrd.img`` and
``breakglass-disk.json``, the recipe: the base's cache key, suite, mirror and
packages, the kernel version, the kernel command line and the digest of each
file. A build on this disk records that recipe in its manifest's provenance.
Disks are cached under ``$BREAKGLASS_CACHE/disk/`` beside the base.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.core.canonical import dumps
from builder.core.errors import CheckFailed, InputError
from builder.vm.base import (
    _SUITE,
    apt_mirror,
    cache_key,
    cache_root,
    debian_base,
    packages,
    run_logged,
    tool,
)

FORMAT = "breakglass-disk/1"
RECIPE_NAME = "breakglass-disk.json"
DISK_NAME = "disk.qcow2"
KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initrd.img"
# The root file system is the whole virtio disk; ttyS0 carries the console for logs.
CMDLINE = "root=/dev/vda rw console=ttyS0"
DEFAULT_SIZE_MIB = 3072
# Bump when what is done here changes: part of the disk's cache key.
DISK_RECIPE = 1


@dataclass(frozen=True)
class BaseDisk:
    """A disk directory whose files match its recipe."""

    directory: Path
    recipe: dict[str, Any]
    cached: bool = False

    @property
    def disk(self) -> Path:
        return self.directory / DISK_NAME

    @property
    def kernel(self) -> Path:
        return self.directory / KERNEL_NAME

    @property
    def initrd(self) -> Path:
        return self.directory / INITRD_NAME

    @property
    def cmdline(self) -> str:
        return str(self.recipe["cmdline"])

    @property
    def cache_key(self) -> str:
        return str(self.recipe["cache_key"])


def disk_cache_root() -> Path:
    """``$BREAKGLASS_CACHE/disk``, beside the base layouts."""
    return cache_root().parent / "disk"


def disk_cache_key(suite: str, mirror: str, size_mib: int) -> str:
    """Names one disk: its base's key, its size and this module's recipe."""
    return f"{cache_key(suite, mirror, bootable=True)}-disk{size_mib}m-r{DISK_RECIPE}"


def debian_disk(
    out: Path,
    *,
    suite: str = "bookworm",
    mirror: str | None = None,
    size_mib: int = DEFAULT_SIZE_MIB,
    on_line: Callable[[str], None] | None = None,
) -> BaseDisk:
    """Put a bootable Debian disk directory at ``out`` (replacing a disk there), from cache.

    Raises InputError for a bad suite or size, or an ``out`` that holds
    something other than a disk; ToolMissing without umoci, mkfs.ext4 or
    qemu-img; CheckFailed when not root or a step fails. Nothing is left at
    ``out`` or in the cache on failure.
    """
    if not _SUITE.match(suite):
        raise InputError(f"not a debian suite name: {suite!r}")
    if size_mib < 1024:
        raise InputError(f"disk size must be at least 1024 MiB, not {size_mib}")
    if out.exists() and any(out.iterdir()) and not (out / RECIPE_NAME).exists():
        raise InputError(f"output directory is not empty and not a breakglass disk: {out}")
    mirror = mirror or apt_mirror(suite)
    key = disk_cache_key(suite, mirror, size_mib)
    entry = disk_cache_root() / key
    cached = (entry / RECIPE_NAME).exists()
    if not cached:
        _build_into_cache(entry, key, suite, mirror, size_mib, on_line)
    _copy_dir(entry, out)
    loaded = load_disk(out)
    return BaseDisk(loaded.directory, loaded.recipe, cached)


def load_disk(directory: Path) -> BaseDisk:
    """The disk in ``directory``, its files checked against the recipe's digests.

    Raises InputError when the recipe is missing or malformed, CheckFailed when a
    file differs from its digest.
    """
    path = directory / RECIPE_NAME
    try:
        recipe = json.loads(path.read_bytes())
    except (OSError, ValueError):
        raise InputError(
            "not a breakglass disk (no readable recipe)",
            where=str(path),
            hint="make one with `breakglass base debian --disk --out DIR`",
        ) from None
    if not isinstance(recipe, dict) or recipe.get("format") != FORMAT:
        raise InputError(f"not a breakglass disk recipe (want format {FORMAT})", where=str(path))
    files = recipe.get("files")
    if not isinstance(files, dict) or set(files) != {DISK_NAME, KERNEL_NAME, INITRD_NAME}:
        raise InputError("disk recipe names the wrong files", where=str(path))
    for name, want in sorted(files.items()):
        try:
            got = digest_file(directory / name)
        except OSError:
            raise CheckFailed(f"{directory / name}: missing from the disk directory") from None
        if got != want:
            raise CheckFailed(f"{directory / name}: differs from the digest in {RECIPE_NAME}")
    return BaseDisk(directory, recipe)


def _build_into_cache(
    entry: Path,
    key: str,
    suite: str,
    mirror: str,
    size_mib: int,
    on_line: Callable[[str], None] | None,
) -> None:
    needed = "the debian disk"
    umoci, mkfs, qemu_img = (tool(n, needed) for n in ("umoci", "mkfs.ext4", "qemu-img"))
    if os.geteuid() != 0:
        raise CheckFailed("building a debian disk needs root (the rootfs keeps its owners)")
    entry.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}."))
    try:
        base = debian_base(work / "oci", suite=suite, mirror=mirror, on_line=on_line, bootable=True)
        bundle = work / "bundle"
        run_logged([umoci, "unpack", "--image", base.reference, str(bundle)], on_line)
        rootfs = bundle / "rootfs"
        built = work / "disk"
        built.mkdir()
        kernel, initrd = _boot_files(rootfs)
        shutil.copyfile(kernel, built / KERNEL_NAME)
        shutil.copyfile(initrd, built / INITRD_NAME)
        raw = work / "disk.raw"
        run_logged(
            [mkfs, "-q", "-F", "-t", "ext4", "-L", "breakglass-root", "-d", str(rootfs),
             str(raw), f"{size_mib}M"],
            on_line,
        )  # fmt: skip
        run_logged([qemu_img, "convert", "-O", "qcow2", str(raw), str(built / DISK_NAME)], on_line)
        raw.unlink()
        recipe = {
            "format": FORMAT,
            "cache_key": key,
            "base_cache_key": base.cache_key,
            "suite": suite,
            "mirror": mirror,
            "variant": "minbase",
            "packages": list(packages(bootable=True)),
            "kernel_version": kernel.name.removeprefix("vmlinuz-"),
            "cmdline": CMDLINE,
            "size_mib": size_mib,
            "filesystem": "ext4 (mkfs.ext4 -d), whole disk, no partition table",
            "boot": "direct kernel boot: -kernel vmlinuz -initrd initrd.img -append CMDLINE",
            "ssh_host_keys": "none (made at first boot)",
            "files": {n: digest_file(built / n) for n in (DISK_NAME, KERNEL_NAME, INITRD_NAME)},
        }
        (built / RECIPE_NAME).write_bytes(dumps(recipe))
        try:
            built.rename(entry)
        except OSError:
            # Another process filled the same entry first; theirs is as good as ours.
            if not (entry / RECIPE_NAME).exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _boot_files(rootfs: Path) -> tuple[Path, Path]:
    """The one kernel and its initramfs in the tree's /boot."""
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise CheckFailed(f"expected one kernel in the base's /boot, found {len(kernels)}")
    initrd = rootfs / "boot" / f"initrd.img-{kernels[0].name.removeprefix('vmlinuz-')}"
    if not initrd.is_file():
        raise CheckFailed(f"the base has no initramfs for {kernels[0].name}")
    return kernels[0], initrd


def digest_file(path: Path) -> str:
    """``sha256:<hex>`` of a file too large to read at once."""
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def _copy_dir(entry: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        dest = tmp / "disk"
        dest.mkdir()
        for src in sorted(entry.iterdir()):
            # the qcow2 holds unallocated clusters as holes; keep them holes
            subprocess.run(["cp", "--sparse=always", str(src), str(dest / src.name)], check=True)
        if out.exists():
            shutil.rmtree(out)
        dest.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
