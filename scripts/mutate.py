#!/usr/bin/env python3
"""Mutation testing of the security core with mutmut; prints the score per module.

Reads ``tests/mutation.toml`` (modules, the tests that exercise each one, and
the minimum score) and ``tests/mutation-survivors.md`` (the surviving mutants
that are equivalent to the original, each with the reason). Runs mutmut in a
scratch copy of the project (``build/mutation``), so the work tree and its
``pyproject.toml`` are never touched, then prints one line per module.

Exit 0 when every module scores at least ``min_score`` percent killed and every
survivor is accounted for; 1 otherwise; 2 on a bad configuration.

    scripts/mutate.py                      # every module in tests/mutation.toml
    scripts/mutate.py builder/approval/quorum.py    # only these modules (the score gate still applies)
    scripts/mutate.py --ci                 # CI: the [ci] modules, each held to its own floor

With ``--ci`` a survivor missing from the list is reported but does not fail the
run: mutant names are numbered within their function, so any edit to a function
renames them, and CI runs after other changes are merged. The floors do fail it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tests" / "mutation.toml"
SURVIVORS = ROOT / "tests" / "mutation-survivors.md"
# the scratch copy; another folder lets two runs (of different modules) go side by side
WORK = Path(os.environ.get("BREAKGLASS_MUTATE_WORK", ROOT / "build" / "mutation")).resolve()
# what the tests read besides builder/ and tests/ (mutmut copies those two itself)
ALSO_COPY = ["templates", "images", "examples", "pyproject.toml"]
# a mutant that makes the tests hang or crash the interpreter is found out all the same
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
# `survived` and also `no tests`: no selected test ever calls the mutated function
# a full name, or `_N` for another mutant of the function named just before it
_LISTED = re.compile(r"`(builder\.[^`]+__mutmut_\d+|_\d+)`")
_RESULT = re.compile(r"^\s+(builder\.\S+__mutmut_\d+): (.+)$")


def _load(selected: list[str], ci: bool) -> tuple[dict[str, int], dict[str, list[str]], list[str]]:
    """The modules to run with the score each must reach, their tests, and the lines to skip."""
    doc = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    modules: dict[str, list[str]] = doc["modules"]
    floors = {m: int(doc["min_score"]) for m in modules}
    if ci:
        floors = {m: int(v) for m, v in doc["ci"]["floors"].items()}
        unknown = [m for m in floors if m not in modules]
        if unknown:
            sys.exit(f"mutate: [ci] names {unknown[0]}, which [modules] does not list")
        selected = selected or list(floors)
    for module, tests in modules.items():
        missing = [p for p in [module, *tests] if not (ROOT / p).is_file()]
        if missing:
            sys.exit(f"mutate: {CONFIG.name}: {module}: no such file {missing[0]}")
    if selected:
        unknown = [m for m in selected if m not in modules]
        if unknown:
            sys.exit(f"mutate: {unknown[0]} is not listed in {CONFIG.name}")
        modules = {m: modules[m] for m in selected}
    return floors, modules, list(doc.get("skip_lines", []))


def _mutmut_config(modules: dict[str, list[str]], skip_lines: list[str]) -> str:
    tests = sorted({t for ts in modules.values() for t in ts})

    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(f"'{i}'" for i in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["builder"]\n'
        f"only_mutate = {toml_list(list(modules))}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        f"also_copy = {toml_list(ALSO_COPY[:-1])}\n"
        "use_git_change_detection = false\n"
        # a mutant that loops is stopped after 2 * 4 * (its tests' cpu time + 1 s) of cpu,
        # not mutmut's 2 * 15 *: a looping read of the audit log ran 12 minutes before that
        "timeout_multiplier = 4.0\n"
        f"do_not_mutate_patterns = {toml_list(skip_lines)}\n"
    )


def _prepare(modules: dict[str, list[str]], skip_lines: list[str]) -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in ["builder", "tests", *ALSO_COPY[:-1]]:
        shutil.copytree(ROOT / name, WORK / name, ignore=ignore, symlinks=True)
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if "[tool.mutmut]" in pyproject:
        sys.exit(
            "mutate: pyproject.toml has its own [tool.mutmut]; the config is tests/mutation.toml"
        )
    (WORK / "pyproject.toml").write_text(
        pyproject + _mutmut_config(modules, skip_lines), encoding="utf-8"
    )
    # git does not keep file modes; ssh-keygen refuses a private key that others can read
    for key in (WORK / "examples" / "keys").glob("*"):
        if key.suffix != ".pub" and key.name not in ("allowed_signers", "README.md"):
            key.chmod(0o600)


def _module_of(mutant: str, modules: dict[str, list[str]]) -> str | None:
    for module in modules:
        dotted = module.removesuffix(".py").replace("/", ".") + "."
        if mutant.startswith(dotted):
            return module
    return None


def main(argv: list[str]) -> int:
    ci = "--ci" in argv
    floors, modules, skip_lines = _load([a for a in argv if a != "--ci"], ci)
    _prepare(modules, skip_lines)
    mutmut = Path(sys.executable).with_name("mutmut")
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    start, cpu0 = time.monotonic(), os.times()
    with (WORK / "mutmut.log").open("wb") as log:
        run = subprocess.run(
            [str(mutmut), "run"], cwd=WORK, env=env, stdout=log, stderr=log, check=False
        )
    wall = time.monotonic() - start
    cpu1 = os.times()
    cpu = (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)
    if run.returncode != 0:
        tail = (WORK / "mutmut.log").read_text(errors="replace").splitlines()[-15:]
        print("\n".join(tail), file=sys.stderr)
        print(f"mutate: mutmut run failed (exit {run.returncode})", file=sys.stderr)
        return 1
    out = subprocess.run(
        [str(mutmut), "results", "--all", "true"],
        cwd=WORK, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    status: dict[str, str] = {}
    for line in out.stdout.splitlines():
        m = _RESULT.match(line)
        if m:
            status[m.group(1)] = m.group(2)
    listed: set[str] = set()
    function = ""
    for name in _LISTED.findall(SURVIVORS.read_text(encoding="utf-8")):
        if name.startswith("_"):
            name = function + name.lstrip("_")
        else:
            function = name[: name.rindex("__mutmut_") + len("__mutmut_")]
        listed.add(name)
    failed = False
    passed_modules = 0
    print(f"{'module':40} {'mutants':>7} {'killed':>6} {'listed':>6} {'score':>6}")
    for module in modules:
        mine = {k: v for k, v in status.items() if _module_of(k, modules) == module}
        killed = sum(1 for v in mine.values() if v in KILLED)
        alive = sorted(k for k, v in mine.items() if v not in KILLED)
        unlisted = [k for k in alive if k not in listed]
        score = 100.0 * killed / len(mine) if mine else 0.0
        min_score = floors.get(module, 100)
        print(
            f"{module:40} {len(mine):7} {killed:6} {len(alive) - len(unlisted):6} {score:5.1f}%"
            f"  (needs {min_score}%)"
        )
        for k in unlisted:
            print(f"  not accounted for: {k} ({mine[k]}); see `mutmut show {k}` in {WORK}")
        if score < min_score or (unlisted and not ci) or not mine:
            failed = True
        else:
            passed_modules += 1
    total = len(status)
    killed_all = sum(1 for v in status.values() if v in KILLED)
    print(
        f"total: {killed_all}/{total} killed; wall {wall:.0f} s, "
        f"cpu {cpu:.0f} s (user+sys of mutmut and its workers), on {os.cpu_count()} cores"
    )
    stale = sorted(k for k in listed if k in status and status[k] in KILLED)
    for k in stale:
        print(f"  listed as a survivor but killed now: {k} (remove it from {SURVIVORS.name})")
    # a plain closing line, one per module, that CI's log reader understands
    print(f"mutate: {passed_modules} passed, {len(modules) - passed_modules} failed")
    if failed:
        print(
            "mutate: a module is below its score, or has survivors not accounted for",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
