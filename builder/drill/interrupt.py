"""Cleanup on SIGINT and SIGTERM: both become one KeyboardInterrupt, so ``finally`` blocks run.

A drill starts sshd, HTTP stand-ins and host commands, and writes drill
credentials to a temporary root; a supervisor's SIGTERM must clean all of
that up exactly as a Ctrl-C does.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def cleanup_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into KeyboardInterrupt, once, so cleanup runs for either.

    After the first signal both stay ignored, also after the block ends: a
    second Ctrl-C or a supervisor's repeated SIGTERM must not cut the cleanup
    short, nor kill the process on its way out with the interrupt's exit code.
    A signal the process was started with ignored stays ignored (a shell does
    that to SIGINT for background jobs). Outside the main thread, where Python
    cannot set handlers, it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    watched = [sig for sig, old in previous.items() if old != signal.SIG_IGN]
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        fired = True
        for sig in watched:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    for sig in watched:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig in watched if not fired else ():
            old = previous[sig]
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
