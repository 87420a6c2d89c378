"""``breakglass base debian``: a Debian base OCI layout, or (``--disk``) a bootable VM disk."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click


def register(cli: click.Group) -> None:
    """Add this module's commands to the top-level group."""
    cli.add_command(base)


@click.group()
def base() -> None:
    """Make base images to build on."""


@base.command("debian")
@click.option(
    "--out", "out", required=True, type=click.Path(path_type=Path), help="OCI layout (or disk) dir"
)
@click.option("--suite", default="bookworm", show_default=True, help="Debian release")
@click.option("--mirror", default=None, help="Debian mirror (default: the one apt uses here)")
@click.option(
    "--disk",
    is_flag=True,
    help="Make a bootable VM disk (qcow2, kernel, initramfs, recipe) instead of an OCI layout",
)
@click.option(
    "--size", "size_mib", default=3072, show_default=True, type=int, help="Disk size in MiB"
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
def debian(
    out: Path, suite: str, mirror: str | None, disk: bool, size_mib: int, as_json: bool
) -> None:
    """Debootstrap a minimal Debian (python3, openssh-server, sudo) into an OCI layout, cached.

    With --disk: the same base plus systemd, udev and the Debian kernel, as a
    qcow2 disk booted with QEMU's direct kernel boot (see docs/packer.md).
    """
    from builder.vm.base import debian_base

    progress = None if as_json else (lambda line: click.echo(line, err=True))
    if disk:
        _disk(out, suite, mirror, size_mib, as_json, progress)
        return
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


def _disk(
    out: Path,
    suite: str,
    mirror: str | None,
    size_mib: int,
    as_json: bool,
    progress: Callable[[str], None] | None,
) -> None:
    from builder.vm.disk import debian_disk

    made = debian_disk(out, suite=suite, mirror=mirror, size_mib=size_mib, on_line=progress)
    if as_json:
        doc = {
            "directory": str(made.directory),
            "disk": str(made.disk),
            "kernel": str(made.kernel),
            "initrd": str(made.initrd),
            "cmdline": made.cmdline,
            "cache_key": made.cache_key,
            "cached": made.cached,
        }
        click.echo(json.dumps(doc, sort_keys=True))
    else:
        origin = "from cache" if made.cached else "built"
        click.echo(f"{made.disk} ({origin}, {made.cache_key}); boot: {made.cmdline}")
