"""Emergency accounts for images built on a base OS.

The OCI path cannot run ``useradd`` in an image, so the payload layer carries
``etc/passwd``, ``etc/shadow`` and ``etc/group`` as the base has them plus
one line each per emergency user: a locked password (``!``), no standing
keys (sshd asks ``breakglass host authorized-keys``), a home directory; and
the account ``breakglass-akc`` (locked, no home, ``nologin``) as which sshd
runs that command. The
lines are derived only from the base and the spec, so builds stay
reproducible. The Packer path creates the same accounts with the pyinfra
deploy instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from builder.core.errors import InputError
from builder.core.payload import PayloadFile

ACCOUNT_FILES = {"etc/passwd": 0o644, "etc/group": 0o644, "etc/shadow": 0o640}
FIRST_UID = 990  # system-account range, below Debian's 1000 for people
AKC_USER = "breakglass-akc"  # sshd's AuthorizedKeysCommandUser (and its group)
SHADOW_GROUP = "shadow"


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    home: str


def emergency_accounts(
    users: Iterable[str], base_files: dict[str, bytes], source_date_epoch: int
) -> tuple[tuple[PayloadFile, ...], tuple[Account, ...]]:
    """The account files with ``users`` added, and the accounts. Raises InputError when the base
    has no ``etc/passwd`` to extend."""
    wanted = sorted(set(users))
    if not wanted:
        return (), ()
    missing = [p for p in ACCOUNT_FILES if p not in base_files]
    if missing:
        raise InputError(f"the base image has no {missing[0]}; cannot add the emergency account")
    passwd = _lines(base_files["etc/passwd"])
    group = _lines(base_files["etc/group"])
    shadow = _lines(base_files["etc/shadow"])
    taken_uids = {int(f[2]) for f in passwd if len(f) > 2 and f[2].isdigit()}
    taken_gids = {int(f[2]) for f in group if len(f) > 2 and f[2].isdigit()}
    existing = {f[0] for f in passwd}
    shadow_gid = next((int(f[2]) for f in group if f[0] == SHADOW_GROUP), 0)
    days = source_date_epoch // 86400
    accounts = []
    for name in wanted:
        if name in existing:
            raise InputError(f"emergency user '{name}' already exists in the base image")
        uid = FIRST_UID
        while uid in taken_uids or uid in taken_gids:
            uid -= 1
        taken_uids.add(uid)
        taken_gids.add(uid)
        home = f"/home/{name}"
        passwd.append(
            [name, "x", str(uid), str(uid), "breakglass emergency account", home, "/bin/bash"]
        )
        group.append([name, "x", str(uid), ""])
        shadow.append([name, "!", str(days), "0", "99999", "7", "", "", ""])
        accounts.append(Account(name, uid, home))
    # sshd runs `breakglass host authorized-keys` as this account, not as root: it can read the
    # activation grant (group breakglass-akc) and the public manifest, nothing else
    if AKC_USER in existing:
        raise InputError(f"account '{AKC_USER}' already exists in the base image")
    uid = FIRST_UID
    while uid in taken_uids or uid in taken_gids:
        uid -= 1
    passwd.append([AKC_USER, "x", str(uid), str(uid), "breakglass AuthorizedKeysCommandUser",
                   "/nonexistent", "/usr/sbin/nologin"])  # fmt: skip
    group.append([AKC_USER, "x", str(uid), ""])
    shadow.append([AKC_USER, "!", str(days), "0", "99999", "7", "", "", ""])
    files = (
        PayloadFile("etc/passwd", _join(passwd), ACCOUNT_FILES["etc/passwd"]),
        PayloadFile("etc/group", _join(group), ACCOUNT_FILES["etc/group"]),
        PayloadFile("etc/shadow", _join(shadow), ACCOUNT_FILES["etc/shadow"], gid=shadow_gid),
    )
    return files, tuple(accounts)


def _lines(data: bytes) -> list[list[str]]:
    return [line.split(":") for line in data.decode("utf-8").splitlines() if line.strip()]


def _join(rows: list[list[str]]) -> bytes:
    return "".join(":".join(r) + "\n" for r in rows).encode("utf-8")
