#!/usr/bin/env python3
"""Plant each known two-person-rule bug, one at a time, in a scratch copy; the tests must fail.

These are the bugs that once went unnoticed by the whole default suite (issue
"tests that prove the two-person rule"). For each one this copies the project
to a temporary directory, applies the one-line change there (the work tree is
never touched), runs pytest on the copy and reports whether it failed.

    scripts/plant_bugs.py          # the tests that cover quorum, policy and unseal
    scripts/plant_bugs.py --full   # the whole default suite, as `make test` runs it
    scripts/plant_bugs.py tests/test_spec_cases.py   # only these pytest arguments

Exit 0 when every planted bug makes pytest fail, 1 when one goes unnoticed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/test_quorum.py", "tests/test_host_quorum.py", "tests/test_spec_cases.py"]

# (name, file, original text, planted text)
BUGS = [
    (
        "quorum.fewest sorts thresholds in reverse",
        "builder/approval/quorum.py",
        "return sum(sorted(thresholds)[:group_threshold])",
        "return sum(sorted(thresholds, reverse=True)[:group_threshold])",
    ),
    (
        "quorum.met counts all approvers instead of each group's members",
        "builder/approval/quorum.py",
        "len(approvers & set(g.members)) >= g.threshold",
        "len(approvers) >= g.threshold",
    ),
    (
        "unseal._check without the not_after match",
        "builder/host/unseal.py",
        '    if approval.not_after != request.not_after:\n        raise _Refused("approval expiry does not match the request")\n',
        "",
    ),
    (
        "unseal._check without the now > approval.not_after refusal",
        "builder/host/unseal.py",
        '    if now > approval.not_after:\n        raise _Refused("approval has expired")\n',
        "",
    ),
    (
        "unseal._check without approver not in request.shares",
        "builder/host/unseal.py",
        '    if approval.approver not in request.shares:\n        raise _Refused("approver holds no share of this request")\n',
        "",
    ),
]


def main(argv: list[str]) -> int:
    full = "--full" in argv
    missed = []
    for name, rel, original, planted in BUGS:
        with tempfile.TemporaryDirectory(prefix="breakglass-plant-") as tmp:
            copy = Path(tmp) / "project"
            ignore = shutil.ignore_patterns(
                ".venv",
                ".git",
                "dist",
                "build",
                "mutants",
                "__pycache__",
                ".*_cache",
                ".hypothesis",
            )
            shutil.copytree(ROOT, copy, ignore=ignore, symlinks=True)
            source = copy / rel
            text = source.read_text(encoding="utf-8")
            if text.count(original) != 1:
                print(f"cannot plant ({rel} changed): {name}")
                return 2
            source.write_text(text.replace(original, planted), encoding="utf-8")
            chosen = [a for a in argv if not a.startswith("--")]
            args = [] if full else chosen or TESTS
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args],
                cwd=copy,
                capture_output=True,
                text=True,
                check=False,
            )
            caught = proc.returncode == 1
            failing = next(
                (ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED ")), "no failure"
            )
            print(f"{'caught' if caught else 'MISSED'}: {name}\n    {failing[:150]}")
            if not caught:
                missed.append(name)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
