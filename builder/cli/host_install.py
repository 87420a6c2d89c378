"""``breakglass host install``: a host root from a built image, for dev machines and tests."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("install")
@click.argument("image_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--root", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="New directory to unpack the image's payload into (must not exist or be empty).",
)  # fmt: skip
@click.option(
    "--allowed-signers", type=click.Path(dir_okay=False, path_type=Path),
    help="Trusted image signers: verify the image's signature and every digest first.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def install_cmd(image_dir: Path, root: Path, allowed_signers: Path | None, as_json: bool) -> None:
    """Unpack IMAGE_DIR (dist/NAME/VERSION) into a host root for `host ... --root DIR`."""
    from builder.host.install import install

    done = install(image_dir, root, allowed_signers)
    doc = {
        "root": str(done.root), "image": done.name, "version": done.version,
        "files": done.files, "verified_by": done.verified_by,
    }  # fmt: skip
    if as_json:
        click.echo(json.dumps(doc, sort_keys=True))
        return
    check = f"signed by {done.verified_by}" if done.verified_by else "signature not checked"
    click.echo(
        f"installed {done.name} {done.version} into {done.root} ({done.files} files, {check})"
    )
    if done.verified_by is None:
        click.echo("hint: pass --allowed-signers FILE to verify the image first", err=True)


def register(group: click.Group) -> None:
    """Add this module's command to the ``host`` group."""
    group.add_command(install_cmd)
