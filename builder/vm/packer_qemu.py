"""Packer's ``qemu`` builder on a breakglass disk: the block breakglass completes, the
throwaway build key, and the qcow2 that comes out.

A spec names the disk (``packer.base_disk``, made by ``breakglass base debian
--disk``) and keeps in its ``qemu`` block only its own choices (memory, cpus,
name). breakglass fills in the rest:

- the source: a raw copy of the disk in the build's scratch directory, with a
  throwaway ed25519 public key written into ``/root/.ssh/authorized_keys`` by
  ``debugfs`` (no mount, no loop device); the base disk itself never holds a
  key. Packer's SSH communicator logs in with that key, and so does the pyinfra
  deploy; the key pair lives in the scratch directory and is removed with it;
- direct kernel boot with the disk's kernel, initramfs and command line;
- the accelerator, probed (``builder.vm.qemu.accelerator``) unless the block sets one;
- the output: ``vm_name`` and ``output_directory`` in the scratch directory,
  qcow2. The file is moved to ``IMAGE_DIR/NAME.qcow2`` and its digest goes into
  the signed manifest (``provenance.disks``).

Before Packer shuts the VM down, the cleanup provisioner of
``builder.vm.packer_build`` removes the build key, the SSH host keys the build
boot made, the machine id and the random seed, so every VM made from the
image starts as a new host.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.core.errors import CheckFailed, InputError, ToolMissing
from builder.vm import qemu
from builder.vm.disk import BaseDisk

BUILD_KEY_COMMENT = "breakglass-build-key"
# Keys breakglass owns in a qemu block built on a base disk: the spec must not set them.
OWNED_KEYS = (
    "iso_url", "iso_checksum", "disk_image", "use_backing_file", "output_directory", "vm_name",
    "ssh_username", "ssh_password", "ssh_private_key_file", "communicator", "format",
)  # fmt: skip
DEFAULTS: dict[str, Any] = {
    "headless": True,
    "memory": 1024,
    "cpus": 2,
    "disk_interface": "virtio",  # the kernel command line says root=/dev/vda
    "net_device": "virtio-net",
    "skip_resize_disk": True,  # the file system fills the disk; a bigger disk would stay unused
    "ssh_timeout": "20m",  # software emulation on a busy machine boots slowly
    "shutdown_command": "systemctl poweroff",
    "shutdown_timeout": "5m",
}


@dataclass(frozen=True)
class QemuBuild:
    """One qemu builder's prepared block and where its qcow2 will appear."""

    name: str
    block: dict[str, Any]
    output: Path  # the qcow2 Packer writes, inside the scratch directory
    console: Path  # the VM's serial console, for a failed build's cause
    key: Path  # the throwaway build key's private half, in the scratch directory


def make_build_key(scratch: Path) -> Path:
    """A fresh ed25519 key pair without passphrase at ``scratch/build-key``; returns its path."""
    keygen = shutil.which("ssh-keygen")
    if not keygen:
        raise ToolMissing("ssh-keygen is not installed (needed for the build key)")
    key = scratch / "build-key"
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", BUILD_KEY_COMMENT, "-f", str(key)],
        check=True,
        capture_output=True,
    )
    return key


def source_disk(disk: Path, public_key: Path, dest: Path) -> Path:
    """A raw copy of the qcow2 ``disk`` at ``dest`` whose root accepts ``public_key``.

    Returns ``dest``. Raises ToolMissing without qemu-img or debugfs, CheckFailed
    when a step fails.
    """
    qemu_img, debugfs = _tool("qemu-img"), _tool("debugfs")
    _run([qemu_img, "convert", "-O", "raw", str(disk), str(dest)], "qemu-img convert")
    commands = dest.with_suffix(".debugfs")
    commands.write_text(
        "mkdir /root/.ssh\n"
        f"write {public_key} /root/.ssh/authorized_keys\n"
        "set_inode_field /root/.ssh mode 040700\n"
        "set_inode_field /root/.ssh/authorized_keys mode 0100600\n"
        "set_inode_field /root/.ssh uid 0\nset_inode_field /root/.ssh gid 0\n"
        "set_inode_field /root/.ssh/authorized_keys uid 0\n"
        "set_inode_field /root/.ssh/authorized_keys gid 0\n"
    )
    _run([debugfs, "-w", "-f", str(commands), str(dest)], "debugfs")
    check = subprocess.run(
        [debugfs, "-R", "cat /root/.ssh/authorized_keys", str(dest)],
        capture_output=True,
        check=False,
    )
    if public_key.read_bytes().strip() not in check.stdout:
        raise CheckFailed("could not write the build key into the source disk")
    return dest


def prepare(
    block: Mapping[str, Any], name: str, disk: BaseDisk, scratch: Path, key: Path
) -> QemuBuild:
    """The qemu block Packer gets: the spec's choices, breakglass's source, boot and key.

    Raises InputError when the spec sets a key breakglass owns.
    """
    taken = sorted(k for k in OWNED_KEYS if k in block)
    if taken:
        raise InputError(
            f"packer builder {name!r}: {taken[0]!r} is set by breakglass for a base_disk build",
            hint="remove it from the qemu block; see docs/packer.md",
        )
    source = source_disk(disk.disk, key.with_suffix(".pub"), scratch / f"source-{name}.raw")
    out_dir = scratch / f"output-{name}"
    console = scratch / f"console-{name}.log"
    full: dict[str, Any] = {**DEFAULTS, **block}
    full.update(
        {
            "iso_url": str(source),
            "iso_checksum": "none",  # made a moment ago, in our own scratch directory
            "disk_image": True,
            "format": "qcow2",
            "output_directory": str(out_dir),
            "vm_name": f"{name}.qcow2",
            "communicator": "ssh",
            "ssh_username": "root",
            "ssh_private_key_file": str(key),
        }
    )
    full.setdefault("accelerator", qemu.accelerator(disk.kernel))
    boot = qemu.direct_boot_args(disk.kernel, disk.initrd, disk.cmdline)
    full["qemuargs"] = [*boot, ["-serial", f"file:{console}"], *block.get("qemuargs", [])]
    return QemuBuild(name, full, out_dir / f"{name}.qcow2", console, key)


def console_tail(build: QemuBuild, lines: int = 5) -> str:
    """The last lines of the VM's console, one line, for an error message."""
    try:
        text = build.console.read_text(errors="replace")
    except OSError:
        return ""
    tail = [t.strip() for t in text.splitlines() if t.strip()][-lines:]
    return " | ".join(tail)


def _tool(name: str) -> str:
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if not path:
        raise ToolMissing(f"{name} is not installed (needed for a qemu build)")
    return path


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        raise CheckFailed(f"{what} failed: {said[-1] if said else 'no output'}")
