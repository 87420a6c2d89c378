"""Record the emergency login, and hash each recording into the audit chain.

sshd's ``ForceCommand`` for an emergency user runs ``sudo -n breakglass host
record-session``: the recorder runs as root, so its files land in
``var/lib/breakglass/recordings/`` (inside the 0700 state directory) where
the emergency user can neither read, write nor delete them. It runs the
session under util-linux ``script`` with timing (``--log-io``,
``--log-timing``); the user's shell or ``$SSH_ORIGINAL_COMMAND`` runs beneath
it as the user (``runuser -l``). The user can end the session, not the
recording: ``script`` is root's process, and without the recorder there is
no session (sudo or the recorder failing ends the login).

Commands the user runs through sudo are I/O-logged by sudo itself into
``recordings/sudo/`` (``templates/system/sudoers-breakglass.j2``).

When a session ends, the recorder appends ``session-recorded`` (file names,
sizes, sha256; never the content). At reseal, ``seal_pending`` does the same
for every recording file that no event names yet (sudo's logs, a recorder
that was killed). ``check`` compares the files with the latest digest each
event gives: ``audit verify`` reports a recording edited or deleted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from builder.core.errors import CheckFailed, InputError, StateError
from builder.host.layout import Layout

RECORDINGS = "recordings"  # under the state directory
SUDO_IO = "sudo"  # recordings/sudo: sudo's iolog_dir
EVENT = "session-recorded"
STARTED = "session-started"


def recordings_dir(layout: Layout) -> Path:
    return layout.state_dir / RECORDINGS


def _digest(path: Path) -> tuple[int, str]:
    from hashlib import sha256  # here: unseal loads this module and hashes no recording

    h = sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            h.update(chunk)
            size += len(chunk)
    return size, "sha256:" + h.hexdigest()


def describe(layout: Layout, paths: Iterable[Path]) -> list[dict[str, Any]]:
    """``{name, size, sha256}`` of each file, ``name`` relative to the recordings directory."""
    top = recordings_dir(layout)
    out = []
    for p in sorted(paths):
        size, digest = _digest(p)
        out.append({"name": str(p.relative_to(top)), "size": size, "sha256": digest})
    return out


def recorded(events: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, dict[str, Any]]]:
    """Each file named by a ``session-recorded`` event -> (seq, entry) of the latest such event."""
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    for e in events:
        if e.get("event") != EVENT:
            continue
        details = e.get("details")
        files = details.get("files") if isinstance(details, dict) else None
        for f in files if isinstance(files, list) else []:
            if isinstance(f, dict) and isinstance(f.get("name"), str):
                latest[f["name"]] = (int(e.get("seq", 0)), f)
    return latest


def check(layout: Layout, events: Iterable[Mapping[str, Any]]) -> int:
    """Every recording named in ``events`` exists with its latest digest; the count checked.

    Raises CheckFailed naming the first recording deleted or edited.
    """
    top = recordings_dir(layout)
    latest = recorded(events)
    for name, (seq, entry) in sorted(latest.items()):
        path = top / name
        if (
            ".." in Path(name).parts
            or Path(name).is_absolute()
            or not path.is_file()
            or path.is_symlink()
        ):
            raise CheckFailed(f"recording {name} (audit log line {seq}): deleted")
        size, digest = _digest(path)
        if digest != entry.get("sha256") or size != entry.get("size"):
            raise CheckFailed(f"recording {name} (audit log line {seq}): edited (digest differs)")
    return len(latest)


def _all_files(layout: Layout) -> list[Path]:
    top = recordings_dir(layout)
    if not top.is_dir():
        return []
    # sudo rewrites its session counter on every use: a counter, not a recording
    counter = top / SUDO_IO / "seq"
    return [p for p in top.rglob("*") if p.is_file() and not p.is_symlink() and p != counter]


def seal_pending(layout: Layout, now: datetime, request_id: str | None, scope: str | None) -> None:
    """Hash into the chain every recording file no ``session-recorded`` event names yet.

    Called at reseal (with the lock held); raises StateError if the log cannot be written.
    """
    from builder.host import audit

    named = recorded(audit.read_events(layout))
    fresh = [
        p for p in _all_files(layout) if str(p.relative_to(recordings_dir(layout))) not in named
    ]
    if fresh:
        audit.append(layout, now, EVENT, request_id=request_id, scope=scope,
                     details={"files": describe(layout, fresh), "by": "reseal"})  # fmt: skip


# -- the recorder -------------------------------------------------------------


def _session_user() -> str:
    """The emergency user sudo ran us for; only root may record (the files must be out of reach)."""
    user = os.environ.get("SUDO_USER")
    if not user or os.geteuid() != 0:
        raise InputError(
            "record-session runs as root through sudo, from sshd's ForceCommand",
            hint="it is not meant to be run by hand",
        )
    return user


def record_session(root: Path, now: datetime, command: str | None) -> int:
    """Run the emergency user's session under ``script``; hash the recording; the session's status.

    Raises StateError when no window of that user's scope is open (then there is no session
    at all), InputError when not run as root through sudo.
    """
    import shlex
    import shutil
    import signal
    import subprocess

    from builder.host import audit, clock, sessions
    from builder.host.expire import session
    from builder.host.safepath import ensure_dir

    user = _session_user()
    command = command or None  # sshd sets SSH_ORIGINAL_COMMAND empty-or-unset for a shell
    with session(root, now) as (layout, current):
        a = current.active
        if a is None or sessions.emergency_user(layout, a.scope) != user:
            raise StateError(f"no open window for {user}: session refused")
        top = recordings_dir(layout)
        ensure_dir(top, 0o700, top=layout.state_dir, root=layout.root)
        stem = f"{a.request_id}-{now.strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}"
        io, timing = top / f"{stem}.io", top / f"{stem}.timing"
        audit.append(layout, now, STARTED, request_id=a.request_id, scope=a.scope,
                     details={"user": user, "recording": [io.name, timing.name],
                              "interactive": command is None})  # fmt: skip
        request_id, scope = a.request_id, a.scope
    script = shutil.which("script") or "/usr/bin/script"
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    inner = [runuser, "-l", user, *(["-c", command] if command else [])]
    env = {k: v for k, v in os.environ.items() if k in ("TERM", "LANG", "PATH")}
    env["SHELL"] = "/bin/sh"  # script runs -c through $SHELL; the string is quoted for sh
    argv = [script, "-q", "-e", "-f", "--log-io", str(io), "--log-timing", str(timing),
            "-c", shlex.join(inner)]  # fmt: skip
    # a dropped connection hangs up on us too: outlive it to hash what script wrote
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    os.umask(0o077)
    status = subprocess.run(argv, env=env, check=False).returncode
    with session(root, clock.now(root)) as (layout, _current):
        files = [p for p in (io, timing) if p.is_file()]
        audit.append(layout, clock.now(root), EVENT, request_id=request_id, scope=scope,
                     details={"user": user, "files": describe(layout, files)})  # fmt: skip
    return status
