"""Benchmark: `breakglass build` of the example against packing the same payload with
`tar --sort=name --mtime=@N --owner=0 --group=0 --numeric-owner | gzip -n | sha256sum`.

Both run as whole processes, alternating, in this one script (machines are noisy);
prints the median of each and their ratio.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("BENCH_RUNS", "7"))


def timed(cmd: list[str], **kwargs: object) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - start


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-build-"))
    try:
        keys = work / "keys"
        shutil.copytree(ROOT / "examples/keys", keys)
        (keys / "release").chmod(0o600)
        spec = ROOT / "images/example.yaml"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # the payload the build packs, staged as a directory tree for tar
        plan = subprocess.run(
            [sys.executable, "-m", "builder", "build", str(spec), "--dry-run", "--json"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        sys.path.insert(0, str(ROOT))
        from builder.build import plan as make_plan
        from builder.spec import load_spec

        planned = make_plan(load_spec(spec))
        assert len(json.loads(plan.stdout)["files"]) == len(planned.files)
        staged = work / "payload"
        for f in planned.files:
            dest = staged / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(f.data)
            dest.chmod(f.mode)
        epoch = planned.source_date_epoch
        tar_cmd = [
            "bash",
            "-c",
            f"tar --sort=name --mtime=@{epoch} --owner=0 --group=0 --numeric-owner -C {staged} -cf - . "
            "| gzip -n | sha256sum",
        ]
        ours, baseline = [], []
        for i in range(RUNS):
            out = work / f"dist{i}"
            ours.append(
                timed(
                    [
                        sys.executable,
                        "-m",
                        "builder",
                        "build",
                        str(spec),
                        "--out",
                        str(out),
                        "--sign-key",
                        str(keys / "release"),
                    ],
                    env=env,
                )
            )
            baseline.append(timed(tar_cmd))
        payload_bytes = sum(len(f.data) for f in planned.files)
        o, b = statistics.median(ours), statistics.median(baseline)
        print(f"payload: {len(planned.files)} files, {payload_bytes} bytes; {RUNS} runs each")
        print(f"breakglass build (whole process, sign included): median {o * 1000:.1f} ms")
        print(f"tar | gzip -n | sha256sum:                      median {b * 1000:.1f} ms")
        print(f"ratio build / tar pipeline: {o / b:.1f}x")
        large(work, planned.files, epoch)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def large(work: Path, files: tuple[Any, ...], epoch: int) -> None:
    """Per-byte cost: pack + assemble a payload grown by 64 MiB of incompressible data, in
    process, against the tar pipeline over the same tree (fixed start-up costs drop out)."""
    from builder import layer, oci
    from builder.payload import PayloadFile

    big = PayloadFile("usr/share/breakglass/bench.bin", os.urandom(64 << 20))
    payload = tuple(sorted((*files, big)))
    staged = work / "payload-large"
    for f in payload:
        dest = staged / f.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.data)
    tar_cmd = [
        "bash",
        "-c",
        f"tar --sort=name --mtime=@{epoch} --owner=0 --group=0 --numeric-owner -C {staged} -cf - . "
        "| gzip -n | sha256sum",
    ]
    ours, baseline = [], []
    for _ in range(3):
        start = time.perf_counter()
        packed = layer.pack(payload, source_date_epoch=epoch)
        oci.assemble(packed, tag="bench", source_date_epoch=epoch)
        ours.append(time.perf_counter() - start)
        baseline.append(timed(tar_cmd))
    o, b = statistics.median(ours), statistics.median(baseline)
    print(
        f"payload + 64 MiB: pack + assemble (in process) median {o * 1000:.0f} ms; tar pipeline {b * 1000:.0f} ms"
    )
    print(f"ratio per-byte work build / tar pipeline: {o / b:.2f}x")


if __name__ == "__main__":
    main()
