"""The pyinfra install deploy: staging (fast) and real runs against a Debian chroot (e2e)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from builder.core.errors import CheckFailed, InputError
from builder.core.payload import PayloadFile
from builder.vm.deploy import EmergencyUser, deploy_command, provision, stage_payload
from builder.vm.deploy.stage import load_index
from tests.deploy_fixtures import (
    DIRS,
    SUDOERS,
    passwd_entry,
    synthetic_payload,
)


def test_stage_writes_tree_and_index_with_users_from_manifest(tmp_path: Path) -> None:
    staged = stage_payload(synthetic_payload(), DIRS, tmp_path / "staged")
    index = load_index(staged)
    assert [e["path"] for e in index["files"]] == sorted(f.path for f in synthetic_payload())
    sudoers = next(e for e in index["files"] if e["path"] == "etc/sudoers.d/breakglass")
    assert (sudoers["mode"], sudoers["user"], sudoers["group"]) == (0o440, "root", "root")
    assert index["users"] == [
        {"name": "breakglass", "home": "/home/breakglass", "shell": "/bin/bash"}
    ]
    assert index["dirs"] == [
        {"path": "run/breakglass", "mode": 0o700},
        {"path": "var/lib/breakglass", "mode": 0o700},
    ]
    assert (staged / "files/etc/sudoers.d/breakglass").read_bytes() == SUDOERS


def test_stage_explicit_users_override_manifest(tmp_path: Path) -> None:
    staged = stage_payload(
        synthetic_payload(), {}, tmp_path / "s", users=[EmergencyUser.named("oncall")]
    )
    assert [u["name"] for u in load_index(staged)["users"]] == ["oncall"]


def test_stage_rejects_unnamed_owner_and_writes_nothing(tmp_path: Path) -> None:
    files = (PayloadFile("etc/x", b"x", uid=1234),)
    with pytest.raises(InputError, match="owned by id 1234"):
        stage_payload(files, {}, tmp_path / "staged")
    assert list(tmp_path.iterdir()) == []


def test_load_index_notices_a_changed_staged_file(tmp_path: Path) -> None:
    staged = stage_payload(synthetic_payload(), DIRS, tmp_path / "staged")
    (staged / "files/etc/sudoers.d/breakglass").write_bytes(b"ALL ALL=(ALL) NOPASSWD: ALL\n")
    with pytest.raises(
        InputError, match=r"staged file changed since staging: etc/sudoers\.d/breakglass"
    ):
        load_index(staged)


@pytest.mark.parametrize("target", ["host.example", "@docker/x", "@chroot", ""])
def test_deploy_command_rejects_unknown_targets(target: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="deploy target must be"):
        deploy_command(target, tmp_path)


def test_deploy_command_for_ssh_passes_connection_data(tmp_path: Path) -> None:
    argv = deploy_command("@ssh/10.0.0.5", tmp_path, ssh_user="debian", ssh_port=2222, sudo=True)
    assert argv[:4] == [sys.executable, "-m", "pyinfra", "@ssh/10.0.0.5"]
    assert argv[argv.index("--user") : argv.index("--user") + 2] == ["--user", "debian"]
    assert "--sudo" in argv and "2222" in argv


def test_provisioning_over_ssh_keeps_host_keys_out_of_the_users_known_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the build VM's host key is new each build; ~/.ssh may not exist (it did not in CI)
    from builder.vm.deploy import run

    staged = stage_payload(synthetic_payload(), DIRS, tmp_path / "staged")
    seen: list[list[str]] = []

    def record(argv: list[str], **kwargs: object) -> object:
        seen.append(argv)
        raise OSError("recorded")

    monkeypatch.setattr(subprocess, "Popen", record)  # the module calls subprocess.Popen
    for target in ("@ssh/127.0.0.1", f"@chroot/{tmp_path}"):
        with pytest.raises(OSError, match="recorded"):
            run.provision(target, staged, ssh_port=2222)
    over_ssh, into_chroot = seen
    (data,) = [a for a in over_ssh if a.startswith("ssh_known_hosts_file=")]
    known_hosts = Path(data.split("=", 1)[1])
    assert known_hosts.name == "known_hosts"
    assert known_hosts.parent.name.startswith("breakglass-deploy-")
    assert not known_hosts.parent.exists()  # removed with the run
    assert not any(a.startswith("ssh_known_hosts_file=") for a in into_chroot)


def test_module_entry_point_gives_one_line_error(tmp_path: Path) -> None:
    staged = stage_payload(synthetic_payload(), DIRS, tmp_path / "staged")
    proc = subprocess.run(
        [sys.executable, "-m", "builder.vm.deploy", "not-a-target", str(staged)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("breakglass: error: deploy target must be")
    assert proc.stderr.count("\n") == 1


def _mode_owner(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


@pytest.mark.e2e
def test_provision_chroot_installs_payload_and_is_idempotent(rootfs: Path, tmp_path: Path) -> None:
    staged = stage_payload(synthetic_payload(), DIRS, tmp_path / "staged")
    first = provision(f"@chroot/{rootfs}", staged)
    assert first.changed > 0
    for f in synthetic_payload():
        assert (rootfs / f.path).read_bytes() == f.data
        assert _mode_owner(rootfs / f.path) == (f.mode, 0, 0), f.path
    for d, mode in DIRS.items():
        assert _mode_owner(rootfs / d) == (mode, 0, 0)
    # The emergency account: exists, password locked, no standing keys, private home.
    pw = passwd_entry(rootfs, "breakglass")
    assert pw is not None and pw[5:] == ["/home/breakglass", "/bin/bash"]
    shadow = passwd_entry(rootfs, "breakglass", "shadow")
    assert shadow is not None and shadow[1].startswith("!")
    assert _mode_owner(rootfs / "home/breakglass") == (0o700, int(pw[2]), int(pw[3]))
    assert not (rootfs / "home/breakglass/.ssh/authorized_keys").exists()
    link = rootfs / "etc/systemd/system/timers.target.wants/breakglass-expire.timer"
    assert link.is_symlink()
    assert str(link.readlink()) == "/etc/systemd/system/breakglass-expire.timer"

    second = provision(f"@chroot/{rootfs}", staged)
    assert second.changed == 0 and second.unchanged == first.changed + first.unchanged


@pytest.mark.e2e
def test_provision_relocks_account_and_removes_standing_keys(rootfs: Path, tmp_path: Path) -> None:
    staged = stage_payload(synthetic_payload(), DIRS, tmp_path / "staged")
    provision(f"@chroot/{rootfs}", staged)
    subprocess.run(["chroot", str(rootfs), "usermod", "-p", "$6$x$y", "breakglass"], check=True)
    keys = rootfs / "home/breakglass/.ssh/authorized_keys"
    keys.parent.mkdir()
    keys.write_text("ssh-ed25519 AAAA standing\n")
    again = provision(f"@chroot/{rootfs}", staged)
    assert again.changed == 2
    shadow = passwd_entry(rootfs, "breakglass", "shadow")
    assert shadow is not None and shadow[1] == "!"
    assert not keys.exists()


@pytest.mark.e2e
def test_provision_refuses_bad_sudoers_and_removes_it(rootfs: Path, tmp_path: Path) -> None:
    staged = stage_payload(
        synthetic_payload(b"breakglass ALL=(root NOPASSWD\n"), DIRS, tmp_path / "s"
    )
    with pytest.raises(CheckFailed) as info:
        provision(f"@chroot/{rootfs}", staged)
    message = str(info.value)
    assert "validate /etc/sudoers.d/breakglass" in message and "\n" not in message
    assert not (rootfs / "etc/sudoers.d/breakglass").exists()


@pytest.mark.e2e
def test_provision_refuses_bad_sshd_dropin_and_leaves_no_run_sshd(
    rootfs: Path, tmp_path: Path
) -> None:
    files = tuple(
        PayloadFile(f.path, b"AuthorizedKeysCommandUser\n")
        if f.path.endswith("50-breakglass.conf")
        else f
        for f in synthetic_payload()
    )
    staged = stage_payload(files, DIRS, tmp_path / "s")
    with pytest.raises(CheckFailed, match=r"validate /etc/ssh/sshd_config\.d/50-breakglass\.conf"):
        provision(f"@chroot/{rootfs}", staged)
    assert not (rootfs / "etc/ssh/sshd_config.d/50-breakglass.conf").exists()
    assert not (rootfs / "run/sshd").exists()


def test_stage_index_is_canonical_json(tmp_path: Path) -> None:
    a = stage_payload(synthetic_payload(), DIRS, tmp_path / "a")
    b = stage_payload(tuple(reversed(synthetic_payload())), DIRS, tmp_path / "b")
    assert (a / "payload.json").read_bytes() == (b / "payload.json").read_bytes()
    json.loads((a / "payload.json").read_bytes())
