"""A small synthetic payload and a Debian rootfs for the deploy, Packer and base tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder.payload import PayloadFile
from tests.conftest import require_tool

SSHD_DROPIN = b"""Match User breakglass
    AuthorizedKeysCommand /usr/local/bin/breakglass host authorized-keys %u
    AuthorizedKeysCommandUser root
"""
SUDOERS = b"breakglass ALL=(root) NOPASSWD: /usr/bin/systemctl restart deploy-agent\n"
SERVICE = b"""[Unit]
Description=Expire break-glass windows

[Service]
Type=oneshot
ExecStart=/usr/local/bin/breakglass host expire
"""
TIMER = b"""[Unit]
Description=Expire break-glass windows on time

[Timer]
OnCalendar=minutely

[Install]
WantedBy=timers.target
"""
MANIFEST = b'{"format":"breakglass-manifest/1","scopes":[{"name":"ssh-emergency","emergency_user":"breakglass"}]}\n'
DIRS = {"run/breakglass": 0o700, "var/lib/breakglass": 0o700}


def synthetic_payload(sudoers: bytes = SUDOERS) -> tuple[PayloadFile, ...]:
    return tuple(
        sorted(
            [
                PayloadFile("etc/breakglass/manifest.json", MANIFEST),
                PayloadFile("etc/breakglass/sealed.yaml", b"format: breakglass-sealed-bundle/1\n"),
                PayloadFile("etc/ssh/sshd_config.d/50-breakglass.conf", SSHD_DROPIN),
                PayloadFile("etc/sudoers.d/breakglass", sudoers, 0o440),
                PayloadFile("etc/systemd/system/breakglass-expire.service", SERVICE),
                PayloadFile("etc/systemd/system/breakglass-expire.timer", TIMER),
            ]
        )
    )


def unpack_base(layout: Path, tag: str, dest: Path) -> Path:
    """Unpack the base layout with umoci; return the rootfs."""
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{tag}", str(dest)],
        check=True,
        capture_output=True,
    )
    return dest / "rootfs"


def copy_rootfs(src: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest


def passwd_entry(rootfs: Path, user: str, db: str = "passwd") -> list[str] | None:
    for line in (rootfs / "etc" / db).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return fields
    return None


@pytest.fixture(scope="session")
def base_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cached Debian base, unpacked once per session (read-only: copy it with ``rootfs``)."""
    from builder.base import debian_base

    for tool in ("debootstrap", "umoci"):
        require_tool(tool)
    root = tmp_path_factory.mktemp("base")
    image = debian_base(root / "oci")
    return unpack_base(image.layout, image.tag, root / "bundle")


@pytest.fixture
def rootfs(base_rootfs: Path, tmp_path: Path) -> Path:
    """A fresh copy of the Debian rootfs for one test to provision."""
    return copy_rootfs(base_rootfs, tmp_path / "rootfs")
