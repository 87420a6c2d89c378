"""Benchmark: whole-process time of the unseal that reaches ACTIVE, and of
``host authorized-keys`` cold start, each against ``python -c pass``.

Run: ``.venv/bin/python bench/bench_unseal.py [--runs N]``. Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from builder.host.request import open_request
from tests import hostkit


def _time(cmd: list[str], expect: int = 0) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, cwd=hostkit.REPO, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != expect:
        raise SystemExit(
            f"bench: {cmd[3:6]} exited {proc.returncode}: {proc.stderr.decode()[:300]}"
        )
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    py = hostkit.PYTHON
    image = hostkit.shared_image()
    # the baseline is measured inside the loop, interleaved, so machine load hits all rows alike
    base_times, unseal_times, keys_cli, keys_fast = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="breakglass-bench-") as tmp:
        for n in range(runs):
            img = hostkit.clone(image, Path(tmp) / f"root{n}")
            now = dt.datetime.now(dt.UTC).replace(microsecond=0)
            req = open_request(
                img.root,
                now,
                scope="ssh-emergency",
                ttl_seconds=600,
                reason="bench",
                requester="dave",
            )
            first, last = (
                hostkit.lib_approve(req, img.approvers[a], now) for a in ("alice", "bob")
            )
            base = [py, "-m", "builder", "host", "unseal", "--root", str(img.root), req.id]
            _time([*base, first])
            base_times.append(_time([py, "-c", "pass"]))
            unseal_times.append(_time([*base, last]))
            ak = ["host", "authorized-keys", "--root", str(img.root), "breakglass"]
            # the full click CLI, as sshd would pay for it without the entry point's fast path
            full = "from builder.cli import main; main()"
            keys_cli.append(_time([py, "-c", full, *ak]))
            # what sshd really runs: the console-script entry point
            keys_fast.append(_time([py, "-m", "builder", *ak]))
            shutil.rmtree(img.root)
    baseline = statistics.median(base_times)
    rows = [
        ("python -c pass", baseline),
        ("host unseal (last approval -> ACTIVE)", statistics.median(unseal_times)),
        ("host authorized-keys, full click CLI", statistics.median(keys_cli)),
        ("host authorized-keys (entry point)", statistics.median(keys_fast)),
    ]
    print(f"median of {runs} runs")
    for label, value in rows:
        print(f"{label:<42} {value * 1000:8.1f} ms   x{value / baseline:5.1f}")


if __name__ == "__main__":
    main()
