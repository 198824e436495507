"""The library layer (losses, functional, corrwise, registry, weights, hub, transforms) never imports the
layers above it (data sets, experiments, demo, CLI), and environment variables are read in one module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "genloss"
LIBRARY = ["losses", "functional", "corrwise", "transforms", "registry.py", "weights.py", "hub.py", "_validation.py",
           "_options.py", "_env.py", "__init__.py"]
ABOVE = ("data", "experiments", "demo", "cli")


def _modules(entry: str) -> list[Path]:
    p = SRC / entry
    return sorted(p.rglob("*.py")) if p.is_dir() else [p]


def _imported(path: Path) -> set[str]:
    """Absolute names of the genloss modules a file imports (relative imports resolved)."""
    pkg = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(pkg[: len(pkg) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
                names.add(mod)
                names.update(f"{mod}.{a.name}" for a in node.names)
            elif node.module:
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.startswith("genloss")}


@pytest.mark.parametrize("path", [p for e in LIBRARY for p in _modules(e)], ids=lambda p: str(p.relative_to(SRC)))
def test_library_layer_does_not_import_the_layers_above(path):
    bad = sorted(n for n in _imported(path) if n.split(".")[1:2] and n.split(".")[1] in ABOVE)
    assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_the_layer_check_sees_relative_imports(tmp_path):
    assert "genloss.data.photos" in _imported(SRC / "cli.py") or "genloss.data.images" in _imported(SRC / "cli.py")


def test_environment_variables_are_read_in_one_module():
    """GENLOSS_* names are spelled once, in genloss/_env.py."""
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if p.name != "_env.py" and '"GENLOSS_' in p.read_text()]
    assert not offenders, offenders
