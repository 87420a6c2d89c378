"""Open a fleet: a pyinfra inventory, limited, connected in parallel, with unreachable hosts kept.

An inventory is what ``pyinfra`` itself reads: a Python inventory file (host
lists as module variables, each variable a group, ``(name, data)`` tuples for
per-host data) or a comma-separated list of ``@ssh/HOST`` entries. Host data
``breakglass_root`` (default ``/``) prefixes every breakglass path on that
host, so hosts that keep the runtime under another root (tests, drills) work.

pyinfra's engine is gevent: the process must be monkey-patched before it
imports ``socket`` (``builder.entry`` does it for ``breakglass fleet``).
Without the patch every call still works, one host after another.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from builder.core.errors import InputError

ROOT_DATA = "breakglass_root"


@dataclass
class HostResult:
    """What one probe found on one host: ``value`` when it ran, ``error`` when it did not."""

    name: str
    reachable: bool
    value: Any = None
    error: str | None = None


@dataclass
class Fleet:
    """A connected pyinfra state and the hosts that could not be reached (name -> reason)."""

    state: Any
    hosts: list[Any]
    unreachable: dict[str, str] = field(default_factory=dict)

    def run(self, fact: type, what: str) -> dict[str, HostResult]:
        """Run ``fact`` (a pyinfra FactBase) on every reachable host in parallel; never raises for a host.

        A host where the command fails is reported with an error; its
        connection stays counted. ``what`` names the probe in errors.
        """
        from pyinfra.api.exceptions import PyinfraError
        from pyinfra.api.facts import get_facts

        results = {
            name: HostResult(name, False, error=reason) for name, reason in self.unreachable.items()
        }
        active = {h.name for h in self.state.inventory.get_active_hosts()}
        if active:
            try:
                found = get_facts(self.state, fact)  # type: ignore[no-untyped-call]
            except PyinfraError:
                found = {}  # every host failed the probe: each is reported below
            for host, value in found.items():
                results[host.name] = HostResult(host.name, True, value=value)
        for host in self.hosts:
            if host.name not in results:
                results[host.name] = HostResult(host.name, True, error=f"{what} failed")
        # a host whose probe failed is dropped from pyinfra's active set; keep it usable
        for host in self.hosts:
            if host.name not in self.unreachable and host not in self.state.active_hosts:
                self.state.active_hosts.add(host)
        return dict(sorted(results.items()))

    def close(self) -> None:
        from pyinfra.api.connect import disconnect_all

        disconnect_all(self.state)


def _load_inventory(spec: str, state: Any) -> Any:
    from pathlib import Path

    from pyinfra.context import ctx_state

    # pyinfra_cli monkey-patches gevent on import; only the fleet CLI process imports it
    from pyinfra_cli.exceptions import CliError
    from pyinfra_cli.inventory import make_inventory

    if not spec.strip():
        raise InputError("the inventory is empty")
    if not Path(spec).exists() and "@" not in spec:
        raise InputError(
            f"inventory {spec!r} is neither a file nor a list of @ssh/HOST entries",
            hint="give a pyinfra inventory file or @ssh/host1,@ssh/host2",
        )
    try:
        with ctx_state.use(state):  # an inventory file is executed with a state in context
            return make_inventory(spec, cwd=str(Path.cwd()))
    except (
        CliError,
        Exception,
    ) as e:  # an inventory file is user code: anything it raises is bad input
        cause = e.__cause__ or e.__context__ or e  # pyinfra wraps what the file raised
        try:
            first = str(cause).splitlines()[0]
        except (AttributeError, IndexError):  # some pyinfra errors cannot print themselves
            first = ""
        first = f"{type(cause).__name__}: {first}" if first else type(cause).__name__
        raise InputError(f"cannot read inventory {spec!r} ({first})") from None


def _limited(inventory: Any, limit: Sequence[str]) -> list[Any]:
    from fnmatch import fnmatch

    from pyinfra.api.exceptions import NoGroupError

    hosts = list(inventory)
    if not limit:
        return hosts
    chosen: list[Any] = []
    for pattern in limit:
        try:
            matched = list(inventory.get_group(pattern))
        except NoGroupError:
            matched = [h for h in hosts if fnmatch(h.name, pattern)]
        if not matched:
            raise InputError(f"--limit {pattern!r} matches no host or group of the inventory")
        chosen += [h for h in matched if h not in chosen]
    return chosen


@contextmanager
def open_fleet(
    inventory: str,
    *,
    limit: Sequence[str] = (),
    parallel: int = 50,
    connect_timeout: int = 10,
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterator[Fleet]:
    """Load ``inventory``, keep the hosts ``limit`` names (hosts, groups or globs), connect.

    Yields a Fleet whose unreachable hosts are listed, never raised. Raises
    InputError for an unreadable inventory, an unknown limit or a bad bound.
    """
    from pyinfra.api.config import Config
    from pyinfra.api.connect import connect_all
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.api.state import BaseStateCallback, State

    if parallel < 1:
        raise InputError("--parallel must be at least 1")
    logging.getLogger("pyinfra").addHandler(logging.NullHandler())
    logging.getLogger("pyinfra").propagate = False
    state = State()
    inv = _load_inventory(inventory, state)
    hosts = _limited(inv, limit)
    config = Config(  # type: ignore[no-untyped-call]
        PARALLEL=min(parallel, max(1, len(hosts))), CONNECT_TIMEOUT=connect_timeout
    )
    state.init(inv, config, initial_limit=hosts)
    unreachable: dict[str, str] = {}
    done = 0

    class Callbacks(BaseStateCallback):
        @staticmethod
        def host_connect(state: Any, host: Any) -> None:
            nonlocal done
            done += 1
            if on_progress:
                on_progress(done, len(hosts))

        @staticmethod
        def host_connect_error(state: Any, host: Any, error: Any) -> None:
            nonlocal done
            done += 1
            unreachable[host.name] = " ".join(str(error).split())[:200] or "cannot connect"
            if on_progress:
                on_progress(done, len(hosts))

    state.add_callback_handler(Callbacks())  # type: ignore[no-untyped-call]
    # PyinfraError: no host answered; each is listed as unreachable below
    with contextlib.suppress(PyinfraError):
        connect_all(state)
    for host in hosts:
        if host not in state.active_hosts and host.name not in unreachable:
            unreachable[host.name] = "cannot connect"
    fleet = Fleet(state, hosts, unreachable)
    try:
        yield fleet
    finally:
        fleet.close()


def now_seconds() -> float:
    """The control machine's wall clock, the reference for clock skew."""
    return time.time()
