"""Which sudo commands give a root shell: the rule ``lint`` (the spec parse) applies to every entry.

A scope's ``sudo`` entries run as root. Many ordinary programs run other
programs on request, so one entry can be a root shell: a pager (``!sh`` in
``less``), an editor (``:!sh``), an interpreter, or a tool with an exec
option (``find -exec``, ``tar --checkpoint-action``, ``git -p``, ``env``).
``journalctl`` and ``systemctl`` page their output through ``less`` unless
told ``--no-pager``. This list follows GTFOBins' "sudo" category; it is a
deny list and cannot be complete, which is why the rendered sudoers entries
also carry ``NOEXEC:`` (a second line: it stops a dynamically linked
program from starting another one).

An entry that needs one of these anyway is written as a mapping with an
``allow_shell_escape`` justification (``builder.release.spec``).
"""

from __future__ import annotations

import re

_PAGER = "it is a pager, and a pager runs commands (!sh)"
_EDITOR = "it is an editor, and an editor runs commands (:!sh) and writes any file"
_SHELL = "it is a shell or an interpreter: it runs anything"

SHELL_ESCAPES: dict[str, str] = {
    **dict.fromkeys(("less", "more", "most", "pg", "view"), _PAGER),
    **dict.fromkeys(
        ("vi", "vim", "nvim", "rvim", "vimdiff", "ex", "ed", "red", "nano", "pico", "emacs",
         "joe", "jed", "mcedit", "sensible-editor", "editor", "sudoedit", "mg", "micro"),
        _EDITOR,
    ),
    **dict.fromkeys(
        ("sh", "bash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "ash", "busybox",
         "perl", "ruby", "irb", "lua", "luajit", "node", "nodejs", "php", "tclsh", "wish",
         "expect", "gdb", "awk", "gawk", "mawk", "nawk", "jjs", "julia", "R", "Rscript",
         "guile", "pypy", "pypy3", "scala", "socat", "script", "rlwrap"),
        _SHELL,
    ),
    "find": "find -exec runs any command",
    "xargs": "xargs runs any command",
    "env": "env runs any command",
    "nice": "nice runs any command",
    "nohup": "nohup runs any command",
    "timeout": "timeout runs any command",
    "stdbuf": "stdbuf runs any command",
    "taskset": "taskset runs any command",
    "ionice": "ionice runs any command",
    "chroot": "chroot runs any command",
    "setsid": "setsid runs any command",
    "flock": "flock runs any command",
    "strace": "strace runs any command",
    "ltrace": "ltrace runs any command",
    "watch": "watch runs any command",
    "time": "time runs any command",
    "sudo": "sudo runs any command",
    "su": "su opens a shell",
    "runuser": "runuser opens a shell",
    "systemd-run": "systemd-run runs any command",
    "tar": "tar runs commands (--checkpoint-action, --to-command)",
    "zip": "zip runs commands (-TT)",
    "man": "man opens a pager",
    "git": "git runs a pager and hooks",
    "ssh": "ssh runs commands (ProxyCommand, LocalCommand)",
    "scp": "scp runs commands (-S)",
    "sftp": "sftp runs commands (!)",
    "rsync": "rsync runs commands (-e)",
    "nmap": "nmap runs scripts",
    "docker": "docker runs a root container with the host mounted",
    "podman": "podman runs a root container with the host mounted",
    "make": "make runs any command",
    "crontab": "crontab opens an editor",
    "tmux": "tmux opens a shell",
    "screen": "screen opens a shell",
    "mysql": "mysql runs commands (\\!)",
    "psql": "psql runs commands (\\!) and a pager",
    "sqlite3": "sqlite3 runs commands (.shell)",
    "ftp": "ftp runs commands (!)",
    "apt": "apt runs hooks and a pager",
    "apt-get": "apt-get runs hooks",
    "dpkg": "dpkg runs a pager and maintainer scripts",
    "pip": "pip runs setup code",
    "pip3": "pip3 runs setup code",
    "npm": "npm runs scripts",
    "openssl": "openssl writes any file",
    "tee": "tee writes any file",
    "cp": "cp overwrites any file",
    "mv": "mv overwrites any file",
    "dd": "dd overwrites any file",
    "chmod": "chmod changes any file's mode",
    "chown": "chown changes any file's owner",
    "sed": "sed runs commands (e) and writes any file",
    "dmesg": "dmesg opens a pager",
    "mount": "mount can mount over any path",
}  # fmt: skip

# versioned names: python3, python3.12, perl5.36, lua5.4, php8.2, ruby3.1, pypy3.10
_VERSIONED = re.compile(r"^(python|perl|lua|php|ruby|pypy|node|tclsh|wish)[0-9.]*\Z")
_PAGERS_BY_DEFAULT = ("journalctl", "systemctl")


def shell_escape(command: str) -> tuple[str, str] | None:
    """``(why, hint)`` when running ``command`` as root can give a shell, None when it is not known to.

    ``command`` is an exact sudoers command (absolute path, plain arguments).
    Never raises.
    """
    argv = command.split()
    if not argv:
        return None
    program = argv[0].rpartition("/")[2]
    if program in _PAGERS_BY_DEFAULT:
        if program == "systemctl" and "edit" in argv[1:]:
            return ("systemctl edit opens an editor", "grant the exact change instead")
        if "--no-pager" not in argv[1:]:
            return (
                f"{program} opens a pager (less) without --no-pager, and a pager runs commands (!sh)",
                f"add --no-pager: {' '.join([argv[0], '--no-pager', *argv[1:]])}",
            )
        return None
    why = SHELL_ESCAPES.get(program)
    if why is None and _VERSIONED.match(program):
        why = _SHELL
    if why is None:
        return None
    return (
        why,
        "grant a narrower command, or write the entry as a mapping with allow_shell_escape",
    )
