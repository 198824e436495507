"""MkDocs hooks for the genloss documentation (configured in mkdocs.yml, run by ``mkdocs build``).

**Sphinx roles.** Some docstrings use ``:class:`X``` / ``:func:`X``` (reStructuredText). The
Google-style renderer shows them verbatim; they are turned into code spans that link to the
documented object when there is one (``genloss.L1Loss`` is found under ``genloss.losses.pixel``);
``:math:`x``` becomes plain code.

Every warning (a griffe docstring warning, an unknown ``:::`` target) fails ``mkdocs build --strict``:
docstring problems are fixed in the docstrings, not filtered here.

Nothing here reads the network or imports genloss (the package is read as text).
"""

from __future__ import annotations

import ast
import html
import re
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

_ROLE = re.compile(r":(?:py:)?(?P<role>class|func|meth|attr|data|mod|exc|obj|math):<code>(?P<target>[^<]+)</code>")


@cache
def lazy_names(package: str) -> dict[str, str]:
    """The ``_LAZY`` table (public name -> defining module) of a genloss package, read without importing it."""
    tree = ast.parse(SRC.joinpath(*package.split("."), "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets) and node.value is not None:
                return ast.literal_eval(node.value)
    return {}


def canonical(target: str) -> str:
    """Where the object named ``target`` is documented: lazy re-exports resolved to their module."""
    package, _, name = target.rpartition(".")
    if package in ("genloss", "genloss.functional"):
        module = lazy_names(package).get(name)
        if module and module != target:
            return f"{module}.{name}"
    return target


@cache
def symbol_index() -> dict[str, tuple[str, ...]]:
    """Short name -> qualified names of the module-level objects (and class members) of genloss' sources."""
    index: dict[str, list[str]] = {}
    for path in sorted(SRC.joinpath("genloss").rglob("*.py")):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text()).body:
            for name, qualified in _defined(node, module):
                index.setdefault(name, []).append(qualified)
    return {name: tuple(found) for name, found in index.items()}


def _defined(node: ast.stmt, module: str) -> list[tuple[str, str]]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return [(node.name, f"{module}.{node.name}")]
    if isinstance(node, ast.ClassDef):
        members = [(f"{node.name}.{m.name}", f"{module}.{node.name}.{m.name}") for m in node.body
                   if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)]
        return [(node.name, f"{module}.{node.name}"), *members]
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return [(t.id, f"{module}.{t.id}") for t in targets if isinstance(t, ast.Name)]


def resolve(target: str, page_ids: frozenset[str]) -> str:
    """The identifier a role's ``target`` most likely documents: qualified names as written (lazy re-exports
    resolved), short names by a unique match on the same page, else a unique match in the sources."""
    if target.startswith("genloss."):
        return canonical(target)
    for candidates in (sorted(i for i in page_ids if i.endswith("." + target)), symbol_index().get(target, ())):
        if len(candidates) == 1:
            return candidates[0]
    return target


def _role(match: re.Match[str], page_ids: frozenset[str]) -> str:
    if match.group("role") == "math":  # no maths renderer (offline build): show the formula as code
        return f"<code>{match.group('target')}</code>"
    target = html.unescape(match.group("target")).strip()
    short = target.startswith("~")
    target = target.lstrip("~").removesuffix("()")
    shown = target.rpartition(".")[2] if short else target
    return (f'<autoref identifier="{html.escape(resolve(target, page_ids))}" optional>'
            f"<code>{html.escape(shown)}</code></autoref>")


def on_page_content(html_text: str, **kwargs: object) -> str:
    """Render reStructuredText roles left in docstrings as (linked) code."""
    page_ids = frozenset(re.findall(r'id="(genloss[\w.]*)"', html_text))
    return _ROLE.sub(lambda m: _role(m, page_ids), html_text)
