"""Find a program on ``PATH``, as ``shutil.which`` finds it, without importing shutil.

shutil loads bz2, lzma and zlib for its archive functions: some 2 ms that every host
command which runs a tool (``ssh-keygen``, ``systemd-run``, ``pkill``) would pay.
"""

from __future__ import annotations

import os


def which(name: str) -> str | None:
    """The first executable file ``name`` in a folder of ``PATH`` (``os.defpath`` unset)."""
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(folder, name)
        if folder and os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None
