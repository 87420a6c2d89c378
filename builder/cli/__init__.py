"""The ``breakglass`` command line: one group per role, one module per group.

This is the only place that turns a ``BreakglassError`` into an exit code.
"""

from __future__ import annotations

import sys

import click

from builder import __version__
from builder.cli import approve, base, build, drill, fleet, host
from builder.core.display import escape
from builder.core.errors import BreakglassError

REPORT_URL = "https://github.com/breakglass-dev/breakglass/issues"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="breakglass")
def cli() -> None:
    """Immutable images with sealed, quorum-unsealed, audited break-glass access."""


build.register(cli)
approve.register(cli)
host.register(cli)
drill.register(cli)
base.register(cli)
fleet.register(cli)


def main() -> None:
    """Entry point: run the CLI; any error becomes one line on stderr and an exit code."""
    try:
        code = cli.main(standalone_mode=False)
    except BreakglassError as e:
        # messages quote file names, keys and values from the input: keep them to one inert line
        click.echo(f"breakglass: error: {escape(e.message, backslash=False)}", err=True)
        if e.hint:
            click.echo(f"hint: {escape(e.hint, backslash=False)}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__, KeyboardInterrupt):
            click.echo("breakglass: error: interrupted", err=True)
            sys.exit(130)
        click.echo("breakglass: error: aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        click.echo(f"breakglass: error: {escape(e.format_message(), backslash=False)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("breakglass: error: interrupted", err=True)
        sys.exit(130)
    except Exception as e:
        click.echo(
            f"breakglass: error: internal error ({type(e).__name__}); "
            f"please report it at {REPORT_URL}",
            err=True,
        )
        sys.exit(3)
    sys.exit(code if isinstance(code, int) else 0)
