"""``python -m builder.vm.deploy TARGET STAGED``: what Packer's shell-local provisioner runs.

Prints one summary line, or ``breakglass: error: ...`` (which the Packer
backend lifts into its own error) and exits non-zero.
"""

from __future__ import annotations

import argparse
import sys

from builder.core.errors import BreakglassError
from builder.vm.deploy.run import provision


def main(argv: list[str] | None = None) -> int:
    """Provision one target; return the exit code."""
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m builder.vm.deploy")
    parser.add_argument("target")
    parser.add_argument("staged", type=Path)
    parser.add_argument("--user")
    parser.add_argument("--port", type=int)
    parser.add_argument("--key")
    parser.add_argument("--sudo", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = provision(
            args.target,
            args.staged,
            ssh_user=args.user,
            ssh_port=args.port,
            ssh_key=args.key,
            sudo=args.sudo,
            # pyinfra's own lines: the progress of a long remote deploy, and its cause on failure
            on_line=lambda line: print(line, flush=True),
        )
    except BreakglassError as e:
        print(f"breakglass: error: {e.message}", file=sys.stderr, flush=True)
        return e.exit_code
    print(
        f"breakglass: provisioned {args.target}: {result.changed} changed, {result.unchanged} unchanged"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
