"""Imports only go down: a module may import its own package or a lower layer, never a higher one.

The layers are data (``LAYERS``): core < approval < vm images < release <
host < fleet < drill < cli < entry point. Every module of ``builder/`` must
belong to one, and a package never imports a package above it or beside it
at the same rank.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "builder"

# module prefix -> rank; a module takes the rank of its longest matching prefix
LAYERS: dict[str, int] = {
    "builder.__main__": 9,  # python -m builder: calls the entry point
    "builder.entry": 8,
    "builder.cli": 7,
    "builder.drill": 6,  # drills build, install and rehearse: over everything but the CLI
    "builder.fleet": 5,  # drift, status, audit collection, enrol and rotate over many hosts
    "builder.host": 4,
    "builder.release": 3,  # spec, seal, build, verify: builds VM images through builder.vm
    "builder.vm": 2,  # Debian base, disks, Packer, the pyinfra deploy
    "builder.approval": 1,
    "builder.core": 0,
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
        if me == "builder":
            continue  # the package's own __init__: its version string only
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


def test_imports_only_go_down() -> None:
    assert violations(LAYERS, every_module_placed=True) == []


def test_the_check_finds_an_upward_import(tmp_path: Path) -> None:
    fake = tmp_path / "mod.py"
    fake.write_text("def f():\n    from builder.cli import fleet\n    from ..fleet import status\n")
    found = imports(fake, "builder.host")
    assert {"builder.cli.fleet", "builder.fleet.status"} <= found
    assert layer("builder.host.state", LAYERS) == ("builder.host", 4)
    assert layer("builder.fleet.status", LAYERS) == ("builder.fleet", 5)
    assert layer("builder.unplaced", LAYERS) is None
