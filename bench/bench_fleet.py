"""Benchmark: ``breakglass fleet status`` over a 50-host test fleet against a sequential loop
of ``ssh HOST breakglass host status --json`` over the same hosts.

Each host is an image root behind its own sshd on loopback (``tests/fleetkit.py``).
Run (as root: sshd and bwrap): ``.venv/bin/python bench/bench_fleet.py [--hosts 50] [--runs 3]``.
Prints medians, per-host costs, the ratio, and the fleet audit pull of the same hosts.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import fleetkit, hostkit


def _time(cmd: list[str], expect: tuple[int, ...] = (0,)) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, cwd=hostkit.REPO, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode not in expect:
        raise SystemExit(f"bench: {cmd[:6]} exited {proc.returncode}: {proc.stderr.decode()[:300]}")
    return elapsed


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cli = [hostkit.PYTHON, "-m", "builder"]
    with tempfile.TemporaryDirectory(prefix="breakglass-bench-fleet-") as tmp:
        start = time.perf_counter()
        fleet = fleetkit.start_fleet(hostkit.shared_image(), Path(tmp) / "fleet", args.hosts)
        started = time.perf_counter() - start
        try:
            inv = str(fleet.inventory)
            # a few events on every host, so that the pull carries something
            for h in fleet.hosts:
                fleetkit.activate(fleet.image, h)
                fleetkit.reseal(h)
            status = [*cli, "fleet", "status", inv, "--json", "--parallel", str(args.hosts)]
            seq_times, fleet_times, pull_first, pull_again, startup = [], [], [], [], []
            # about the fixed cost of a fleet command (start, imports, one host)
            one = [*status, "--limit", fleet.hosts[0].name]
            # interleaved, so that machine load hits both alike
            for n in range(args.runs):
                t0 = time.perf_counter()
                for h in fleet.hosts:
                    _time(fleet.ssh_argv(h, "breakglass", "host", "status", "--json"))
                seq_times.append(time.perf_counter() - t0)
                # exit 1: every host has a burned scope now, which status reports
                fleet_times.append(_time(status, expect=(1,)))
                startup.append(_time(one, expect=(1,)))
                store = str(Path(tmp) / f"store{n}")
                pull = [*cli, "fleet", "audit", "pull", inv, "--store", store, "--json"]
                pull_first.append(_time(pull))
                if n == 0:
                    store_once = _size(Path(store))
                pull_again.append(_time(pull))
            store_twice = _size(Path(tmp) / "store0")
            events = len(
                (fleet.hosts[0].root / "var/lib/breakglass/audit.jsonl").read_bytes().splitlines()
            )
        finally:
            fleet.stop()
    print(
        "runs (sequential, fleet status):",
        [f"{a:.2f}/{b:.2f}" for a, b in zip(seq_times, fleet_times, strict=True)],
    )
    seq, par = statistics.median(seq_times), statistics.median(fleet_times)
    n = args.hosts
    print(f"hosts: {n}, runs: {args.runs}, fleet start: {started:.1f} s")
    print(
        f"sequential ssh HOST breakglass host status --json: {seq:.2f} s ({seq / n * 1000:.0f} ms/host)"
    )
    print(
        f"breakglass fleet status (pyinfra, --parallel {n}):    {par:.2f} s ({par / n * 1000:.0f} ms/host)"
    )
    fixed = statistics.median(startup)
    print(f"ratio: {seq / par:.1f}x faster (goal >= 5x, < 10 s)")
    print(
        f"fleet status of 1 host (start, imports, one host): {fixed:.2f} s; "
        f"each further host: {(par - fixed) / (n - 1) * 1000:.1f} ms"
    )
    print(
        f"fleet audit pull, first: {statistics.median(pull_first):.2f} s; "
        f"again (nothing new): {statistics.median(pull_again):.2f} s"
    )
    print(
        f"audit store: {store_once} bytes after the first pull ({n} hosts x {events} events), "
        f"+{store_twice - store_once} bytes for a pull with nothing new"
    )


if __name__ == "__main__":
    main()
