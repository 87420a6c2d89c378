"""Imports only go down: a module may import its own package or a lower layer, never a higher one.

The layers are data. ``CURRENT`` is the rule for today's layout (roles still
flat at the top of ``builder/``): the entry point over the CLI, the CLI over
``builder.fleet``, and nothing else may import those two. ``REGROUPED`` is the
rule once the package is grouped by role (core < approval < release < host
< drill, vm, fleet < cli); its test switches itself on when ``builder/core/``
exists, and then every module must belong to a layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "builder"

# module prefix -> rank; a module takes the rank of its longest matching prefix
CURRENT: dict[str, int] = {
    "builder.__main__": 4,  # python -m builder: calls the entry point
    "builder.entry": 3,
    "builder.cli": 2,
    "builder.fleet": 1,
    "builder": 0,
}
REGROUPED: dict[str, int] = {
    "builder.__main__": 7,
    "builder.entry": 6,
    "builder.cli": 5,
    "builder.drill": 4,
    "builder.vm": 4,
    "builder.fleet": 4,
    "builder.host": 3,
    "builder.release": 2,
    "builder.approval": 1,
    "builder.core": 0,
    "builder.errors": 0,  # the package's own __init__ and error base may stay at the top
    "builder.__init__": 0,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path, package: str) -> set[str]:
    """Every ``builder`` module that ``path`` (in ``package``) imports, at any depth (lazy ones too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m == "builder" or m.startswith("builder.")}


def layer(module: str, layers: dict[str, int]) -> tuple[str, int] | None:
    best = max(
        (p for p in layers if module == p or module.startswith(p + ".")), key=len, default=None
    )
    return None if best is None else (best, layers[best])


def violations(layers: dict[str, int], *, every_module_placed: bool) -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_name(path)
        mine = layer(me, layers)
        if mine is None:
            if every_module_placed:
                found.append(f"{me} belongs to no layer")
            continue
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        for target in sorted(imports(path, package)):
            theirs = layer(target, layers)
            if theirs is None or target == "builder" or theirs[0] == mine[0]:
                continue
            # down only: to a lower rank; peers (drill, vm, fleet) do not import each other
            if theirs[1] >= mine[1]:
                found.append(
                    f"{me} ({mine[0]}, layer {mine[1]}) imports {target} (layer {theirs[1]})"
                )
    return found


def test_current_layout_imports_only_go_down() -> None:
    assert violations(CURRENT, every_module_placed=True) == []


@pytest.mark.skipif(
    not (PACKAGE / "core").is_dir(), reason="switches on once builder/ is grouped by role"
)
def test_regrouped_layout_imports_only_go_down() -> None:
    assert violations(REGROUPED, every_module_placed=True) == []


def test_the_check_finds_an_upward_import(tmp_path: Path) -> None:
    fake = tmp_path / "mod.py"
    fake.write_text("def f():\n    from builder.cli import fleet\n    from ..fleet import status\n")
    found = imports(fake, "builder.host")
    assert {"builder.cli.fleet", "builder.fleet.status"} <= found
    assert layer("builder.host.state", REGROUPED) == ("builder.host", 3)
    assert layer("builder.fleet.status", CURRENT) == ("builder.fleet", 1)
    assert layer("builder.drift", CURRENT) == ("builder", 0)
