"""Release-path commands: keygen, lint, seal, build, verify, bump, inspect."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add this module's commands to the top-level group."""
