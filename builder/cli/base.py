"""``breakglass base debian``: a bootable Debian base OCI layout for builds and tests."""

from __future__ import annotations

import json
from pathlib import Path

import click


def register(cli: click.Group) -> None:
    """Add this module's commands to the top-level group."""
    cli.add_command(base)


@click.group()
def base() -> None:
    """Make base images to build on."""


@base.command("debian")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="OCI layout dir")
@click.option("--suite", default="bookworm", show_default=True, help="Debian release")
@click.option("--mirror", default=None, help="Debian mirror (default: the one apt uses here)")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
def debian(out: Path, suite: str, mirror: str | None, as_json: bool) -> None:
    """Debootstrap a minimal Debian (python3, openssh-server, sudo) into an OCI layout, cached."""
    from builder.base import debian_base

    progress = None if as_json else (lambda line: click.echo(line, err=True))
    result = debian_base(out, suite=suite, mirror=mirror, on_line=progress)
    if as_json:
        doc = {
            "layout": str(result.layout),
            "tag": result.tag,
            "reference": result.reference,
            "cache_key": result.cache_key,
            "cached": result.cached,
        }
        click.echo(json.dumps(doc, sort_keys=True))
    else:
        origin = "from cache" if result.cached else "built"
        click.echo(f"{result.reference} ({origin}, {result.cache_key})")
