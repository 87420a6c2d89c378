"""QEMU on this machine: which accelerator really runs a guest, and the arguments that boot a
breakglass disk directly (kernel and initramfs given to QEMU, no bootloader).

``/dev/kvm`` can exist and still be unable to run a guest (nested virtualisation
switched off, a host CPU that lacks what the guest's CPU model needs). A boot
sector that only writes to a port runs fine under such a kvm while a Linux
kernel hangs before its first console line. So the accelerator is chosen by
booting the very kernel the VM will run, without a root file system, into a
deliberate panic (``panic=-1`` and ``-no-reboot`` make QEMU exit): kvm is used
when that finishes under kvm within a few seconds, else tcg (software
emulation, always available, about 10 s for the probe here).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

from builder.core.errors import ToolMissing

QEMU = "qemu-system-x86_64"
PANIC_LINE = "Kernel panic"
KVM_PROBE_SECONDS = 15.0
TCG_PROBE_SECONDS = 90.0


def qemu_path() -> str:
    """The QEMU system emulator for x86-64. Raises ToolMissing when it is not installed."""
    path = shutil.which(QEMU)
    if not path:
        raise ToolMissing(
            f"{QEMU} is not installed (needed to boot VM images)",
            hint="install it, e.g. `apt-get install qemu-system-x86`",
        )
    return path


def probe(accelerator: str, kernel: Path, timeout: float) -> bool:
    """True when ``kernel`` boots to its (deliberate) panic under ``accelerator`` in ``timeout``."""
    qemu = qemu_path()
    with tempfile.TemporaryDirectory(prefix="breakglass-probe-") as tmp:
        console = Path(tmp) / "console.log"
        argv = [
            qemu, "-accel", accelerator, "-m", "128", "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot", "-serial", f"file:{console}",
            "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1 loglevel=3",
        ]  # fmt: skip
        try:
            proc = subprocess.run(
                argv, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            return False
        said = console.read_text(errors="replace") if console.exists() else ""
    return proc.returncode == 0 and PANIC_LINE in said


@functools.cache
def accelerator(kernel: Path) -> str:
    """``kvm`` when ``kernel`` boots under kvm, else ``tcg``; probed once per process and kernel."""
    return "kvm" if probe("kvm", kernel, KVM_PROBE_SECONDS) else "tcg"


def direct_boot_args(kernel: Path, initrd: Path, cmdline: str) -> list[list[str]]:
    """QEMU arguments, as Packer's ``qemuargs`` pairs, that boot ``kernel`` with ``initrd``."""
    return [["-kernel", str(kernel)], ["-initrd", str(initrd)], ["-append", cmdline]]
