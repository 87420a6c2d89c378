"""Benchmark: what the bounded readers cost, and how fast oversized input is refused.

1. In-process: ``builder.core.bounded.load_json`` against plain ``json.loads`` on
   the documents the host reads on every login (manifest, state), and on a
   request.
2. Whole process: ``breakglass lint`` of a 30 MB spec (refused at its size
   cap) and of the example spec, each against ``python -c pass``.

Run: ``.venv/bin/python bench/bench_readers.py [--runs N]``. Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from builder.core import bounded, canonical  # noqa: E402
from tests.fuzz_targets import _manifest_doc, _request_doc, _state_docs  # noqa: E402


def _per_call(fn: Callable[[], object], loops: int) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - start) / loops


def _process(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True, cwd=cwd, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    docs = {
        "manifest": canonical.dumps(_manifest_doc()),
        "host state": canonical.dumps(_state_docs()[2]),
        "request": canonical.dumps(_request_doc()),
    }
    print("in-process parse, median of runs (bounded vs json.loads):")
    for kind, raw in docs.items():

        def plain_call(raw: bytes = raw) -> object:
            return json.loads(raw)

        def ours_call(raw: bytes = raw, kind: str = kind) -> object:
            return bounded.load_json(raw, kind)

        plain = statistics.median(_per_call(plain_call, 2000) for _ in range(runs))
        ours = statistics.median(_per_call(ours_call, 2000) for _ in range(runs))
        print(f"  {kind:10} {len(raw):6} bytes  json {plain * 1e6:7.1f} us  "
              f"bounded {ours * 1e6:7.1f} us  ratio {ours / plain:5.2f}")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(REPO / "images", work / "images")
        shutil.copytree(REPO / "templates", work / "templates")
        huge = work / "images/huge.yaml"
        huge.write_text((REPO / "images/example.yaml").read_text() + "#" * (30 * 1024 * 1024))
        py = sys.executable
        base = statistics.median(_process([py, "-c", "pass"], work) for _ in range(runs))
        cases = {
            "lint 30 MB spec (refused)": [py, "-m", "builder", "lint", "images/huge.yaml"],
            "lint example spec": [py, "-m", "builder", "lint", "images/example.yaml"],
        }
        print("whole process, median of runs:")
        print(f"  {'python -c pass':28} {base:6.3f}s  ratio  1.00")
        for label, cmd in cases.items():
            t = statistics.median(_process(cmd, work) for _ in range(runs))
            print(f"  {label:28} {t:6.3f}s  ratio {t / base:5.2f}")


if __name__ == "__main__":
    main()
