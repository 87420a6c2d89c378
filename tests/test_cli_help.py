"""Every command and every option of the CLI explains itself in ``--help``."""

from __future__ import annotations

from collections.abc import Iterator

import click

from builder.cli import cli


def _walk(command: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _walk(sub, f"{path} {name}")


def _missing_help(root: click.Command, name: str) -> list[str]:
    missing = []
    for path, command in _walk(root, name):
        if not (command.help or "").strip():
            missing.append(path)
        for param in command.params:
            if isinstance(param, click.Option) and not (param.help or "").strip():
                missing.append(f"{path} {param.opts[0]}")
    return missing


def test_every_command_and_option_has_help() -> None:
    assert len(list(_walk(cli, "breakglass"))) > 20  # the walk reaches the nested groups
    assert _missing_help(cli, "breakglass") == []


def test_the_walk_finds_what_lacks_help() -> None:
    @click.group(help="top")
    def top() -> None: ...

    @top.command()
    @click.option("--quiet", is_flag=True)
    def sub(quiet: bool) -> None: ...

    assert _missing_help(top, "top") == ["top sub", "top sub --quiet"]
