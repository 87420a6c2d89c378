"""A bootable Debian base as an OCI image layout, built with debootstrap and umoci, cached.

``debian_base`` runs ``debootstrap --variant=minbase --include=python3,
openssh-server,sudo SUITE`` into the rootfs of a fresh umoci bundle and repacks
it as one layer tagged SUITE. The result is cached under
``$BREAKGLASS_CACHE/base/`` (default ``~/.cache/breakglass/base/``) by a key
over suite, variant, packages, mirror and architecture, so a second call only
copies. The base is not bit-reproducible (package timestamps and generated host
keys differ between runs); builds on top of one cached base are.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder.core.canonical import dumps
from builder.core.errors import CheckFailed, InputError, ToolMissing
from builder.core.hasher import sha256_hex

VARIANT = "minbase"
PACKAGES = ("openssh-server", "python3", "sudo")
# What makes the base boot on its own (a VM, or systemd-nspawn --boot): init, device
# manager, a kernel with its initramfs.
BOOT_PACKAGES = ("linux-image-amd64", "systemd-sysv", "udev")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
_SUITE = re.compile(r"^[a-z][a-z0-9-]*\Z")


@dataclass(frozen=True)
class BaseImage:
    """An OCI layout at ``layout`` holding the base under tag ``tag``."""

    layout: Path
    tag: str
    cache_key: str
    cached: bool

    @property
    def reference(self) -> str:
        """``DIR:TAG``, the form a spec's ``base:`` and umoci take."""
        return f"{self.layout}:{self.tag}"


def cache_root() -> Path:
    """``$BREAKGLASS_CACHE/base``, or ``~/.cache/breakglass/base``."""
    root = os.environ.get("BREAKGLASS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "breakglass") / "base"


def apt_mirror(suite: str, sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses for ``suite``, else deb.debian.org."""
    for path in sorted(sources_dir.glob("sources.list.d/*.sources")):
        for stanza in path.read_text(errors="replace").split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and line[0] != "#"
            )
            suites = fields.get("Suites", "").split()
            uris = fields.get("URIs", "").split()
            if suite in suites and uris and "security" not in uris[0]:
                return uris[0]
    legacy = sources_dir / "sources.list"
    if legacy.exists():
        for line in legacy.read_text(errors="replace").splitlines():
            parts = [p for p in line.split() if not p.startswith("[")]
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
                return parts[1]
    return DEFAULT_MIRROR


def packages(bootable: bool = False) -> tuple[str, ...]:
    """What ``--include`` gets: the base's packages, plus init and a kernel when bootable."""
    return (*PACKAGES, *BOOT_PACKAGES) if bootable else PACKAGES


def cache_key(suite: str, mirror: str, bootable: bool = False) -> str:
    """Names one base: the same inputs find the same cache entry."""
    inputs: dict[str, object] = {
        "suite": suite,
        "variant": VARIANT,
        "packages": list(packages(bootable)),
        "mirror": mirror,
        "arch": platform.machine(),
        # bump when what is done to the rootfs after debootstrap changes
        "recipe": 2,
    }
    if bootable:
        inputs["boot_recipe"] = BOOT_RECIPE
    return f"debian-{suite}-{sha256_hex(dumps(inputs))[:16]}"


def debian_base(
    out: Path,
    *,
    suite: str = "bookworm",
    mirror: str | None = None,
    on_line: Callable[[str], None] | None = None,
    bootable: bool = False,
) -> BaseImage:
    """Put a Debian ``suite`` base OCI layout at ``out`` (replacing a layout there), from cache.

    ``bootable`` adds systemd as init, udev and the Debian kernel with its
    initramfs, and the few files a booted host needs (see ``_boot_setup``):
    the base a VM disk (``builder.vm.disk``) or ``systemd-nspawn --boot`` starts.

    Raises InputError for a bad suite or an ``out`` that holds something other
    than an OCI layout, ToolMissing without debootstrap or umoci, CheckFailed
    when not root or a step fails. Nothing is left at ``out`` or in the cache
    on failure.
    """
    if not _SUITE.match(suite):
        raise InputError(f"not a debian suite name: {suite!r}")
    if out.exists() and any(out.iterdir()) and not (out / "oci-layout").exists():
        raise InputError(f"output directory is not empty and not an OCI layout: {out}")
    mirror = mirror or apt_mirror(suite)
    key = cache_key(suite, mirror, bootable)
    entry = cache_root() / key
    cached = (entry / "oci-layout").exists()
    if not cached:
        _build_into_cache(entry, suite, mirror, on_line, bootable)
    else:
        public_blobs(entry)  # an entry cached before blobs were made 0644
    _copy_layout(entry, out)
    return BaseImage(layout=out, tag=suite, cache_key=key, cached=cached)


def _build_into_cache(
    entry: Path,
    suite: str,
    mirror: str,
    on_line: Callable[[str], None] | None,
    bootable: bool = False,
) -> None:
    debootstrap = tool("debootstrap")
    umoci = tool("umoci")
    if os.geteuid() != 0:
        raise CheckFailed("building a debian base needs root (debootstrap creates device nodes)")
    entry.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}."))
    try:
        layout, bundle = work / "oci", work / "bundle"
        image = f"{layout}:{suite}"
        run_logged([umoci, "init", "--layout", str(layout)], on_line)
        run_logged([umoci, "new", "--image", image], on_line)
        run_logged([umoci, "unpack", "--image", image, str(bundle)], on_line)
        run_logged(
            [
                debootstrap,
                f"--variant={VARIANT}",
                f"--include={','.join(packages(bootable))}",
                suite,
                str(bundle / "rootfs"),
                mirror,
            ],
            on_line,
        )
        _slim(bundle / "rootfs")
        if bootable:
            _boot_setup(bundle / "rootfs")
        run_logged([umoci, "repack", "--image", image, str(bundle)], on_line)
        run_logged([umoci, "gc", "--layout", str(layout)], on_line)
        public_blobs(layout)
        try:
            layout.rename(entry)
        except OSError:
            # Another process filled the same entry first; theirs is as good as ours.
            if not (entry / "oci-layout").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


# Debian's ssh.service checks its config before starting; keys must exist by then.
HOST_KEYS_DROPIN = "etc/systemd/system/ssh.service.d/breakglass-host-keys.conf"
HOST_KEYS_UNIT = """# breakglass base: every host makes its own SSH host keys on first boot.
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
"""


def _slim(rootfs: Path) -> None:
    """Drop downloaded packages, apt lists and the SSH host keys debootstrap made.

    The host keys must go: every image built on this base, and every host
    running it, would otherwise share one private host key. Hosts make their
    own at first boot instead.
    """
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*", "etc/ssh/ssh_host_*"):
        for p in rootfs.glob(pattern):
            p.unlink()
    dropin = rootfs / HOST_KEYS_DROPIN
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(HOST_KEYS_UNIT)
    for log in ("debootstrap/debootstrap.log",):
        (rootfs / log).unlink(missing_ok=True)


# Bump when _boot_setup changes: it is part of the bootable base's cache key.
BOOT_RECIPE = 1
HOSTNAME = "breakglass"
# DHCP on the first NIC, only under a hypervisor: a container sharing its host's network
# (systemd-nspawn without --private-network) must never reconfigure the host's interfaces.
NETWORK_PATH = "etc/systemd/network/80-breakglass-dhcp.network"
NETWORK_UNIT = """# breakglass base: DHCP on the VM's NIC (QEMU user networking, cloud VPCs).
[Match]
Virtualization=vm
Name=en* eth*

[Network]
DHCP=yes
"""
_ENABLED = {
    "etc/systemd/system/multi-user.target.wants/systemd-networkd.service": (
        "/lib/systemd/system/systemd-networkd.service"
    ),
    "etc/systemd/system/sockets.target.wants/systemd-networkd.socket": (
        "/lib/systemd/system/systemd-networkd.socket"
    ),
}


def _boot_setup(rootfs: Path) -> None:
    """What a booted host needs that debootstrap leaves out: a hostname, networking, and
    no machine id (an empty ``/etc/machine-id`` makes systemd create one per host at
    first boot, like the SSH host keys)."""
    (rootfs / "etc/hostname").write_text(f"{HOSTNAME}\n")
    hosts = rootfs / "etc/hosts"
    hosts.write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\tlocalhost\n")
    network = rootfs / NETWORK_PATH
    network.parent.mkdir(parents=True, exist_ok=True)
    network.write_text(NETWORK_UNIT)
    for link, target in _ENABLED.items():
        path = rootfs / link
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.symlink_to(target)
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)


def public_blobs(layout: Path) -> None:
    """Make the layout's blobs 0644, as a registry serves them (umoci writes 0600).

    A base's blobs are public OS content, immutable by their digest: readable
    like this, a build on the base hard-links them into its image instead of
    copying them (``builder.release.oci``), and a copy of the layout keeps them so.
    """
    blobs = layout / "blobs" / "sha256"
    if not blobs.is_dir():
        return
    for blob in blobs.iterdir():
        st = blob.lstat()
        if blob.is_file() and not blob.is_symlink() and st.st_mode & 0o7777 != 0o644:
            os.chmod(blob, 0o644)


def _copy_layout(entry: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        shutil.copytree(entry, tmp / "oci", symlinks=True)
        if out.exists():
            shutil.rmtree(out)
        (tmp / "oci").rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tool(name: str, needed_for: str = "the debian base") -> str:
    """The path of the program ``name`` (also looked up in /usr/sbin); raises ToolMissing."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if not path:
        raise ToolMissing(f"{name} is not installed (needed for {needed_for})")
    return path


def run_logged(argv: list[str], on_line: Callable[[str], None] | None) -> None:
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail = [*tail[-19:], line]
        if on_line:
            on_line(line)
    if proc.wait() != 0:
        said = next((t for t in reversed(tail) if t.strip()), "no output")
        raise CheckFailed(f"{Path(argv[0]).name} {argv[1]} failed: {said.strip()}")
