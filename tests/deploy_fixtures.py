"""A small synthetic payload for the deploy, Packer and base tests (the Debian rootfs
fixtures ``base_rootfs`` and ``rootfs`` live in conftest)."""

from __future__ import annotations

from pathlib import Path

from builder.core.payload import PayloadFile

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


def passwd_entry(rootfs: Path, user: str, db: str = "passwd") -> list[str] | None:
    for line in (rootfs / "etc" / db).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return fields
    return None
