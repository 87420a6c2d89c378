"""Benchmark: every row of issue 11's table, each as a ratio against its baseline in this run.

Whole processes, alternating with their baseline run for run (the machine is
noisy: trust the ratios more than the milliseconds), medians of ``--runs``.
Each row also gives the ratio of CPU time (user + system, from the kernel's
accounting of each process and its children), which a loaded machine
distorts less than wall time. Peak memory is the command's maximum resident set as GNU time reports it
(``/usr/bin/time -f %M``: a child forked from this python would inherit its
high-water mark); the time of that small wrapper is in both sides of a ratio.

Two rows also time a floor, with the same baseline: what the command cannot do without,
done by the stock tools and libraries alone (for unseal: two ``ssh-keygen`` verifies at
once, a SLIP-39 combine and an age decrypt; for the example's build: the two imports and
one ``ssh-keygen -Y sign``). The floor says how far a goal is from what any implementation
could reach, and the command's ratio to its floor how much of its time is its own.

How the commands run, as a user runs them:
- host commands run the host runtime the way an image carries it: the
  payload's ``usr/lib/breakglass`` (with its reproducible bytecode) under an
  isolated ``python -I`` launcher, on a root built by ``tests.hostkit``; the
  interpreter is ``/usr/bin/python3`` when it is this python's version (an
  image's python), else this one. Baselines use the same interpreter.
- build commands run the installed console script ``.venv/bin/breakglass``
  with bytecode present (``make bytecode``; this script compiles first, since
  PYTHONDONTWRITEBYTECODE may be set).

Run: ``.venv/bin/python bench/bench_table.py [--runs N] [--events N] [--only host|build]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import hostkit  # noqa: E402

VENV_PY = str(REPO / ".venv/bin/python") if (REPO / ".venv/bin/python").exists() else sys.executable
BREAKGLASS = str(REPO / ".venv/bin/breakglass")
TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None
LEVEL = 6  # builder.release.layer.GZIP_LEVEL; the pipeline baseline runs gzip at the same level


class Sample(NamedTuple):
    wall: float  # seconds
    peak: int  # KiB
    cpu: float  # user + system seconds, the command and its children


def run(cmd: list[str], *, env: dict[str, str] | None = None) -> Sample:
    """Run ``cmd`` to completion; its wall and CPU time and peak RSS. Fails loudly."""
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as rss_file:
        wrapped = [TIME, "-f", "%M", "-o", rss_file.name, *cmd] if TIME else cmd
        start = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            message = err.read().decode(errors="replace")[:400]
            raise SystemExit(f"bench: {cmd[:4]} exited {proc.returncode}: {message}")
        text = Path(rss_file.name).read_text().split()
    rss = int(text[-1]) if text and text[-1].isdigit() else usage.ru_maxrss
    return Sample(elapsed, rss, usage.ru_utime + usage.ru_stime)


class Row:
    def __init__(self, command: str, against: str, goal: float, mem_goal_mib: int | None = None):
        self.command, self.against, self.goal, self.mem_goal = command, against, goal, mem_goal_mib
        self.ours: list[Sample] = []
        self.base: list[Sample] = []
        # what the command cannot do without, timed alone (see ``unseal_floor``), if measured
        self.floor: list[Sample] = []
        self.floor_name = ""
        self.peak = 0
        self.note = ""

    def add(self, ours: Sample, base: Sample, floor: Sample | None = None) -> None:
        self.ours.append(ours)
        self.base.append(base)
        if floor is not None:
            self.floor.append(floor)
        self.peak = max(self.peak, ours.peak)

    def floor_line(self) -> str:
        """The floor against the same baseline, and the command against its floor."""
        if not self.floor:
            return ""
        o, b, f = (statistics.median(s.wall for s in x) for x in (self.ours, self.base, self.floor))
        return (
            f"{'':<34} floor: {self.floor_name}: {f * 1000:.1f} ms = {f / b:.2f}x the baseline;"
            f" the command is {o / f:.2f}x its floor"
        )

    def line(self) -> str:
        if not self.ours:
            return f"{self.command:<34} {self.against:<40} goal <= {self.goal}x: not measured ({self.note})"
        o = statistics.median(s.wall for s in self.ours)
        b = statistics.median(s.wall for s in self.base)
        ratio = o / b
        cpu = statistics.median(s.cpu for s in self.ours) / max(
            statistics.median(s.cpu for s in self.base), 1e-6
        )
        ok = ratio <= self.goal and (self.mem_goal is None or self.peak < self.mem_goal * 1024)
        mem = f", peak {self.peak / 1024:.0f} MiB" + (
            f" (goal < {self.mem_goal} MiB)" if self.mem_goal else ""
        )
        return (
            f"{self.command:<34} {self.against:<40} {o * 1000:8.1f} ms / {b * 1000:8.1f} ms "
            f"= {ratio:5.2f}x (goal <= {self.goal}x{mem}; cpu time {cpu:5.2f}x) "
            f"{'ok' if ok else 'MISSED'}" + (f"  [{self.note}]" if self.note else "")
        )


def host_python() -> str:
    system = Path("/usr/bin/python3")
    if system.exists():
        version = subprocess.run(
            [str(system), "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
        if version == str(sys.version_info[:2]):
            return str(system)
    return sys.executable


def install_runtime(root: Path, python: str) -> list[str]:
    """The payload's host runtime under ``root``, and the argv that runs it as the launcher does."""
    from builder.release.runtime_payload import LIB_DIR, host_runtime_files

    for f in host_runtime_files():
        path = root / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f.data)
    # the image's launcher names /usr/lib/breakglass; this root is not at /
    code = f"import sys; sys.path.insert(0, {str(root / LIB_DIR)!r}); from builder.entry import main; main()"
    return [python, "-I", "-S", "-c", code]  # the launcher's #!python -IS


def host_rows(runs: int, events: int, work: Path) -> list[Row]:
    from builder.host.request import open_request

    py = host_python()
    keys_row = Row("host authorized-keys (ACTIVE)", "python -I -S -c pass", 2.0)
    unseal_row = Row("host unseal (last approval->ACTIVE)", "python -c pass", 2.0)
    status_row = Row("host status", "python -c pass", 1.5)
    image = hostkit.shared_image()
    runtime = work / "runtime"
    launcher = install_runtime(runtime, py)
    unseal_row.floor_name = "2 ssh-keygen verifies at once + SLIP-39 combine + age decrypt"
    floor = unseal_floor(py, runtime, work / "floor")
    for n in range(runs):
        img = hostkit.clone(image, work / f"root{n}")
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        req = open_request(img.root, now, scope="ssh-emergency", ttl_seconds=600, reason="bench",
                           requester="dave")  # fmt: skip
        first, last = (hostkit.lib_approve(req, img.approvers[a], now) for a in ("alice", "bob"))
        host = [*launcher, "host"]
        root = ["--root", str(img.root)]
        run([*host, "unseal", *root, req.id, first])
        unseal_row.add(
            run([*host, "unseal", *root, req.id, last]), run([py, "-c", "pass"]), run(floor)
        )
        keys_row.add(
            run([*host, "authorized-keys", *root, img.emergency_user]),
            run([py, "-I", "-S", "-c", "pass"]),
        )
        status_row.add(run([*host, "status", *root]), run([py, "-c", "pass"]))
        shutil.rmtree(img.root)
    audit_row = Row(f"host audit verify, {events:,} events", "sha256sum of the log", 3.0, 64)
    log_root = hostkit.clone(image, work / "audit-root").root  # verify wants an image there
    make_log(log_root, events)
    log = log_root / "var/lib/breakglass/audit.jsonl"
    for _ in range(max(3, runs // 2)):
        audit_row.add(
            run([*launcher, "host", "audit", "verify", "--root", str(log_root)]),
            run(["sha256sum", str(log)]),
        )
    note = f"python {py}, host runtime from the image payload with its bytecode"
    for row in (keys_row, unseal_row, status_row, audit_row):
        row.note = note if row is keys_row else ""
    return [keys_row, unseal_row, status_row, audit_row]


# What an unseal that reaches the quorum cannot do without, by the stock tools and libraries
# alone: the two approvals' signatures checked by ssh-keygen (at once, as unseal does), the
# shares combined by SLIP-39 (iteration exponent 0, as sealed) and one credential decrypted
# by age. No implementation of the command is faster than this; imports are in the time.
_UNSEAL_FLOOR = """
import subprocess, sys
lib, work = sys.argv[1], sys.argv[2]
sys.path.insert(0, lib)
checks = [
    subprocess.Popen(
        ["ssh-keygen", "-Y", "verify", "-f", work + "/allowed", "-I", "alice",
         "-n", "breakglass-approval", "-s", work + "/message.sig"],
        stdin=open(work + "/message", "rb"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(2)
]
import pyrage, shamir_mnemonic
secret = shamir_mnemonic.combine_mnemonics(open(work + "/shares").read().splitlines())
identity = pyrage.x25519.Identity.from_str(open(work + "/identity").read().strip())
pyrage.decrypt(open(work + "/credential.age", "rb").read(), [identity])
assert all(check.wait() == 0 for check in checks)
"""


def unseal_floor(py: str, runtime: Path, work: Path) -> list[str]:
    """The inputs of ``_UNSEAL_FLOOR`` (a test key, test shares), and the argv that runs it
    as the host runs unseal: the image's python, ``-I -S``, its libraries from the payload."""
    import pyrage
    import shamir_mnemonic

    from builder.release.runtime_payload import LIB_DIR

    work.mkdir(parents=True)
    key = work / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True, stdin=subprocess.DEVNULL)  # fmt: skip
    (work / "allowed").write_text(
        f'alice namespaces="breakglass-approval" {key.with_suffix(".pub").read_text()}'
    )
    (work / "message").write_bytes(os.urandom(600))  # an approval's signed bytes are ~600
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n",
                    "breakglass-approval", str(work / "message")], check=True)  # fmt: skip
    groups = shamir_mnemonic.generate_mnemonics(1, [(2, 3)], os.urandom(32), b"", 0)
    (work / "shares").write_text("\n".join(groups[0][:2]))
    identity = pyrage.x25519.Identity.generate()
    (work / "identity").write_text(str(identity))
    (work / "credential.age").write_bytes(pyrage.encrypt(os.urandom(400), [identity.to_public()]))
    return [py, "-I", "-S", "-c", _UNSEAL_FLOOR, str(runtime / LIB_DIR), str(work)]


def make_log(root: Path, events: int) -> None:
    """A chained log of ``events`` typical events and its head record."""
    from builder.core.canonical import digest, dumps
    from builder.host.audit import GENESIS

    state = root / "var/lib/breakglass"
    state.mkdir(parents=True, exist_ok=True)
    prev = GENESIS
    with (state / "audit.jsonl").open("wb") as f:
        for seq in range(1, events + 1):
            line = dumps({
                "seq": seq, "time": "2026-11-29T19:00:00Z", "event": "approval-accepted",
                "actor": "root", "request_id": "3f2a" * 8, "scope": "ssh-emergency",
                "details": {"approver": "alice", "approval_digest": "sha256:" + "ab" * 32,
                            "count": 1, "needed": 2},
                "prev": prev,
            })  # fmt: skip
            f.write(line)
            prev = digest(line)
    (state / "audit.head").write_bytes(dumps({"seq": events, "head": prev}))


def build_rows(runs: int, work: Path) -> list[Row]:
    keys = work / "keys"
    shutil.copytree(REPO / "examples/keys", keys)
    (keys / "release").chmod(0o600)
    spec = REPO / "images/example.yaml"
    sign = ["--sign-key", str(keys / "release")]
    build_row = Row("build of the example", "python -c 'import jinja2, ruamel.yaml'", 1.2)
    build_row.floor_name = "the two imports + one ssh-keygen -Y sign of the manifest's size"
    floor = build_floor(keys / "release", work / "floor")
    noop_row = Row("no-op rebuild", "python -c pass", 1.5)
    for n in range(runs):
        out = work / f"dist{n}"
        build_row.add(
            run([BREAKGLASS, "build", str(spec), "--out", str(out), *sign]),
            run([VENV_PY, "-c", "import jinja2, ruamel.yaml"]),
            run(floor),
        )
        noop_row.add(
            run([BREAKGLASS, "build", str(spec), "--out", str(out), *sign]),
            run([VENV_PY, "-c", "pass"]),
        )
    return [build_row, noop_row, large_row(runs, work, spec, keys), debian_row(runs, work, keys)]


# What a build cannot do without: the two libraries it renders and edits with, and the
# signature over its manifest, which ssh-keygen makes (a build signs while it packs).
_BUILD_FLOOR = """
import os, subprocess, sys
import jinja2, ruamel.yaml
key, message = sys.argv[1], sys.argv[2]
if os.path.exists(message + ".sig"):
    os.remove(message + ".sig")
subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", key, "-n", "breakglass-manifest", message],
               check=True, stdin=subprocess.DEVNULL)
"""


def build_floor(key: Path, work: Path) -> list[str]:
    work.mkdir(parents=True)
    message = work / "manifest"
    message.write_bytes(os.urandom(4560))  # the example's manifest: 4,560 bytes
    return [VENV_PY, "-c", _BUILD_FLOOR, str(key), str(message)]


_LARGE = """
import sys
from pathlib import Path
from builder.release.build import build_oci, plan
from builder.core.payload import PayloadFile
from builder.release.spec import load_spec
big = PayloadFile.from_source("usr/share/breakglass/bench.bin", Path(sys.argv[2]))
build_oci(plan(load_spec(Path(sys.argv[1])), extra_files=(big,)), Path(sys.argv[3]), None)
"""


def large_row(runs: int, work: Path, spec: Path, keys: Path) -> Row:
    """The example plus 100 MiB of incompressible data (the library's ``extra_files``: the spec
    has no way to add files), against tar | gzip | sha256sum of the same tree."""
    from builder.release.build import plan
    from builder.release.spec import load_spec

    row = Row("build with +100 MiB payload", f"tar | gzip -{LEVEL} -n | sha256sum", 1.2, 100)
    blob = work / "bench.bin"
    blob.write_bytes(os.urandom(100 << 20))
    staged = work / "payload-large"
    for f in plan(load_spec(spec)).files:
        dest = staged / f.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.data)
    big = staged / "usr/share/breakglass/bench.bin"
    big.parent.mkdir(parents=True, exist_ok=True)
    os.link(blob, big)
    pipeline = (
        f"tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C {staged} -cf - . "
        f"| gzip -{LEVEL} -n | sha256sum"
    )
    for n in range(max(3, runs // 2)):
        out = work / f"large{n}"
        row.add(
            run([VENV_PY, "-c", _LARGE, str(spec), str(blob), str(out)]),
            run(["bash", "-c", pipeline]),
        )
        shutil.rmtree(out)
    row.note = "through the library (a spec adds no files): PayloadFile.from_source, streamed"
    return row


def debian_row(runs: int, work: Path, keys: Path) -> Row:
    """The example on the cached Debian base, against ``cp -a`` of that base plus a small build."""
    from builder.vm.base import apt_mirror, cache_key, cache_root

    row = Row("build on the Debian base", "cp -a base + build of the example", 1.5)
    entry = cache_root() / cache_key("bookworm", apt_mirror("bookworm"))
    if not (entry / "oci-layout").exists():
        row.note = f"no cached base at {entry}; run `breakglass base debian` first"
        return row
    project = work / "debian-project"
    for name in ("images", "templates"):
        shutil.copytree(REPO / name, project / name)
    base = project / "base-oci"
    subprocess.run(["cp", "-a", str(entry), str(base)], check=True)
    spec = project / "images/example.yaml"
    spec.write_text(spec.read_text() + "base: ../base-oci:bookworm\n")
    small = REPO / "images/example.yaml"
    sign = ["--sign-key", str(keys / "release")]
    # one build first, not timed: it hashes the copied base once and fills the template and
    # layer caches, as the builds before it did for the example's row; a user's next build
    # on the cached base is the one measured
    run([BREAKGLASS, "build", str(spec), "--out", str(project / "warm"), *sign])
    for n in range(max(3, runs // 2)):
        copy = work / f"base-copy{n}"

        def baseline(copy: Path = copy, n: int = n) -> Sample:
            cp = run(["cp", "-a", str(entry), str(copy)])
            out = str(work / f"small{n}")
            small_build = run([BREAKGLASS, "build", str(small), "--out", out, *sign])
            return Sample(cp.wall + small_build.wall, 0, cp.cpu + small_build.cpu)

        ours = run([BREAKGLASS, "build", str(spec), "--out", str(project / f"dist{n}"), *sign])
        row.add(ours, baseline())
        shutil.rmtree(copy)
    modes = {b.stat().st_mode & 0o777 for b in (base / "blobs/sha256").iterdir()}
    reuse = "linked" if modes == {0o644} else f"mode {', '.join(f'{m:o}' for m in modes)}: copied"
    row.note = f"base from the cache {entry.name}; its blobs {reuse}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "7")))
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--only", choices=("host", "build"), help="run just that section's rows")
    args = parser.parse_args()
    # bytecode present, as after `make` or an install (PYTHONDONTWRITEBYTECODE may be set here)
    subprocess.run([VENV_PY, "-m", "compileall", "-q", str(REPO / "builder")], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="breakglass-bench-") as tmp:
        work = Path(tmp)
        sections: dict[str, Callable[[], list[Row]]] = {
            "host": lambda: host_rows(args.runs, args.events, work / "host"),
            "build": lambda: build_rows(args.runs, work / "build"),
        }
        for name, section in sections.items():
            if args.only in (None, name):
                rows.extend(section())
    print(f"issue 11 table: medians of {args.runs} runs (3 for the large rows), whole processes")
    for row in rows:
        print(row.line())
        if row.floor:
            print(row.floor_line())


if __name__ == "__main__":
    main()
