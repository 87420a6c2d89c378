"""Boot a built qcow2 under QEMU for the end-to-end tests, and reach it over SSH.

The test operator reaches root with its own key, written into a raw copy of the
image by ``debugfs`` (the image itself holds no login key: the build removed its
own). Each ``BootedVM`` boots its own copy, so two boots of fresh copies are two
new hosts. Direct kernel boot with the base disk's kernel and initramfs; the
accelerator comes from ``builder.vm.qemu.accelerator`` (tcg on machines whose kvm
cannot run a guest). The console goes to a log file named in every failure.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from builder.vm import qemu
from builder.vm.disk import BaseDisk
from builder.vm.packer_qemu import source_disk
from tests.conftest import require_tool
from tests.e2e_helpers import free_port

BOOT_TIMEOUT = 600.0  # software emulation on two shared cores: minutes, not seconds
SSH_OPTS = [
    "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
    "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR", "-o", "ServerAliveInterval=5",
]  # fmt: skip


def operator_key(directory: Path) -> Path:
    """An ed25519 key pair for the test operator (root in the VM)."""
    key = directory / "operator"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e-operator", "-f", str(key)],
            check=True,
        )
    return key


def ssh_banner(port: int) -> bytes:
    """The first bytes the guest's sshd sends, or b"" (QEMU accepts before the guest listens)."""
    try:
        with socket.create_connection(("127.0.0.1", port), 3) as s:
            s.settimeout(5)
            return s.recv(64)
    except OSError:
        return b""


@dataclass
class BootedVM:
    """One running VM: its SSH port, console log and disk copy."""

    disk: Path
    port: int
    console: Path
    operator: Path
    proc: subprocess.Popen[bytes] | None = None

    def ssh(
        self, *command: str, user: str = "root", key: Path | None = None, timeout: float = 180,
        stdin: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run ``command`` in the VM over SSH; never raises on a non-zero exit."""
        argv = [require_tool("ssh"), *SSH_OPTS, "-i", str(key or self.operator)]
        # ssh hands the remote shell one string: quote each word so it arrives as it was
        argv += ["-p", str(self.port), f"{user}@127.0.0.1", shlex.join(command)]
        return subprocess.run(
            argv,
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )

    def wait_for_sshd(self, timeout: float = BOOT_TIMEOUT) -> float:
        """Seconds until sshd answers with its banner; AssertionError naming the console."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"qemu exited {self.proc.returncode}; console: {self.tail()}")
            if ssh_banner(self.port).startswith(b"SSH-"):
                return time.monotonic() - start
            time.sleep(2)
        raise AssertionError(f"no sshd after {timeout:.0f} s; console: {self.tail()}")

    def wait_for_shutdown(self, timeout: float = 180) -> None:
        """Until sshd stops answering (a reboot in progress)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not ssh_banner(self.port).startswith(b"SSH-"):
                return
            time.sleep(1)
        raise AssertionError("sshd still answers; the reboot did not start")

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def boot(
    image: Path, disk: BaseDisk, work: Path, operator: Path, name: str = "vm"
) -> Iterator[BootedVM]:
    """Boot a fresh raw copy of the qcow2 ``image`` (root accepting ``operator``); stop it after.

    The copy is writable, so a reboot inside the VM keeps ``/var`` and empties ``/run``.
    """
    qemu_bin = qemu.qemu_path()
    copy = source_disk(image, operator.with_suffix(".pub"), work / f"{name}.raw")
    port = free_port()
    console = work / f"{name}-console.log"
    argv = [
        qemu_bin, "-accel", qemu.accelerator(disk.kernel), "-smp", "2", "-m", "1024",
        "-nodefaults", "-no-user-config", "-display", "none", "-serial", f"file:{console}",
        "-kernel", str(disk.kernel), "-initrd", str(disk.initrd), "-append", disk.cmdline,
        "-drive", f"file={copy},if=virtio,format=raw",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip
    vm = BootedVM(copy, port, console, operator)
    vm.proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        yield vm
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(vm.proc.pid, signal.SIGKILL)
        vm.proc.wait(timeout=30)
        copy.unlink(missing_ok=True)
