"""The pyinfra deploy that installs a staged break-glass payload into one target.

Run by pyinfra's CLI, never imported by the rest of breakglass::

    pyinfra @chroot/DIR builder/vm/deploy/install.py --data breakglass_staged=STAGED -y

The same file serves ``@local``, ``@chroot/DIR``, ``@ssh/HOST`` and Packer build
VMs: every step is a pyinfra operation that first compares the target with the
staged payload, so a second run changes nothing. Validators (``sshd -t``,
``visudo -c -f``) run only when their file changed; a file that fails them is
removed again, so a live host never keeps a config that breaks sshd or sudo.
"""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from pyinfra.context import host
from pyinfra.facts.files import Directory
from pyinfra.operations import files, server, systemd

from builder.core.payload import SSHD_DROPIN_PATH, SUDOERS_PATH, SYSTEMD_DIR
from builder.vm.deploy.stage import FILES_DIR, load_index

staged = Path(host.data.get("breakglass_staged"))
index = load_index(staged)

for d in index["dirs"]:
    files.directory(
        name=f"breakglass: directory /{d['path']}",
        path=f"/{d['path']}",
        user="root",
        group="root",
        mode=f"{d['mode']:o}",
    )

puts = {}
for entry in index["files"]:
    puts[entry["path"]] = files.put(
        name=f"breakglass: file /{entry['path']}",
        src=str(staged / FILES_DIR / entry["path"]),
        dest=f"/{entry['path']}",
        user=entry["user"],
        group=entry["group"],
        mode=f"{entry['mode']:o}",
        create_remote_dir=True,
    )


def _validate(path: str, check: str, *, binary: str, needs_dir: str | None = None) -> None:
    """Run ``check`` after ``path`` changed, where ``binary`` exists; undo the file if it fails.

    ``needs_dir`` is created for the check and removed again if it was absent.
    """
    target = shlex.quote(f"/{path}")
    script = f"{check} || {{ rm -f {target}; exit 1; }}"
    if needs_dir:
        d = shlex.quote(needs_dir)
        script = (
            f"made=; [ -d {d} ] || {{ mkdir -p -m 0755 {d} && made=1; }}; "
            f'{check}; rc=$?; [ -z "$made" ] || rmdir {d}; '
            f"[ $rc -eq 0 ] || {{ rm -f {target}; exit 1; }}"
        )
    server.shell(
        name=f"breakglass: validate /{path}",
        commands=[f"if [ -x {binary} ]; then {script}; fi"],
        _if=puts[path].did_change,
    )


if SSHD_DROPIN_PATH in puts:
    # sshd -t refuses to run without its privilege separation directory, which
    # a chroot or an image that never booted does not have, and without a host
    # key, which an image must not carry (each host makes its own at first boot):
    # check the config with a throwaway key.
    SSHD_CHECK = (
        'k=$(mktemp -d) && ssh-keygen -q -t ed25519 -N "" -f "$k/key" '
        '&& /usr/sbin/sshd -t -f /etc/ssh/sshd_config -h "$k/key"; '
        'rc=$?; rm -rf "$k"; [ $rc -eq 0 ]'
    )
    _validate(SSHD_DROPIN_PATH, SSHD_CHECK, binary="/usr/sbin/sshd", needs_dir="/run/sshd")
if SUDOERS_PATH in puts:
    _validate(SUDOERS_PATH, f"/usr/sbin/visudo -c -q -f /{SUDOERS_PATH}", binary="/usr/sbin/visudo")

for user in index["users"]:
    server.user(
        name=f"breakglass: emergency account {user['name']}",
        user=user["name"],
        home=user["home"],
        shell=user["shell"],
        # The same kind of account the OCI path writes (builder.release.accounts): a system uid, below
        # the range Debian hands to people, so it never takes the first human user's uid.
        system=True,
        comment="breakglass emergency account",
        # "!" locks the password: the account logs in only through the keys that
        # `breakglass host authorized-keys` prints while a window is active.
        password="!",  # noqa: S106 - a lock marker, not a password
        ensure_home=False,
        create_home=False,
    )
    files.directory(
        name=f"breakglass: home of {user['name']}",
        path=user["home"],
        user=user["name"],
        group=user["name"],
        mode="700",
    )
    for keys in ("authorized_keys", "authorized_keys2"):
        files.file(
            name=f"breakglass: no standing {keys} for {user['name']}",
            path=f"{user['home']}/.ssh/{keys}",
            present=False,
        )

if index["users"]:
    # sshd runs `breakglass host authorized-keys` as this account (the drop-in's
    # AuthorizedKeysCommandUser), the same one the OCI path writes (builder.release.accounts)
    server.group(name="breakglass: group breakglass-akc", group="breakglass-akc", system=True)
    server.user(  # noqa: S604 - "shell" is the login shell, no subprocess
        name="breakglass: AuthorizedKeysCommandUser breakglass-akc",
        user="breakglass-akc",
        group="breakglass-akc",
        home="/nonexistent",
        shell="/usr/sbin/nologin",
        system=True,
        comment="breakglass AuthorizedKeysCommandUser",
        password="!",  # noqa: S106 - a lock marker, not a password
        ensure_home=False,
        create_home=False,
    )

units_changed = []
for entry in index["files"]:
    path = entry["path"]
    if not path.startswith(f"{SYSTEMD_DIR}/"):
        continue
    units_changed.append(puts[path].did_change)
    if not path.endswith(".timer"):
        continue
    # What `systemctl enable` does, as a link: works in a chroot with no running systemd.
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((staged / FILES_DIR / path).read_text())
    wanted_by = unit.get("Install", "WantedBy", fallback="timers.target").split() or []
    name = path.rsplit("/", 1)[1]
    for target in wanted_by:
        files.link(
            name=f"breakglass: enable {name} ({target})",
            path=f"/{SYSTEMD_DIR}/{target}.wants/{name}",
            target=f"/{path}",
            user="root",
            group="root",
        )
    if host.get_fact(Directory, path="/run/systemd/system"):
        systemd.daemon_reload(
            name="breakglass: reload systemd units",
            _if=lambda: any(changed() for changed in units_changed),
        )
        systemd.service(name=f"breakglass: start {name}", service=name, running=True)
