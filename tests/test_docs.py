"""The documentation: the mkdocs site builds with warnings as errors, its API reference covers every public
name, strict mode really catches docstring problems, and the quick starts of the README and the home page run."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
API_DIR = ROOT / "docs" / "api"
BUILD_TIMEOUT_S = 180  # the build takes a few seconds; this only stops a hung subprocess


def _load_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("genloss_docs_hooks", ROOT / "docs" / "_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()


def mkdocs_build(config: Path, site_dir: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` (no ``--quiet``: it hides warnings from the strict check)."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed (pip install -e '.[docs]')")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
               "--site-dir", str(site_dir)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    site_dir = tmp_path_factory.mktemp("site")
    return mkdocs_build(ROOT / "mkdocs.yml", site_dir), site_dir


def api_html(site_dir: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((site_dir / "api").rglob("*.html")))


def test_site_builds_in_strict_mode(site):
    result, site_dir = site
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    for page in ("index.html", "api/losses/index.html", "api/functional/index.html", "api/registry/index.html",
                 "api/corrwise/index.html", "api/weights/index.html", "api/validation/index.html",
                 "losses/index.html", "corrwise/index.html"):
        assert (site_dir / page).is_file(), page


def documented_identifier(package: ModuleType, name: str) -> str:
    """Where the API reference documents ``package.name``: the module that defines it.

    Lazy names are resolved through the package's ``_LAZY`` table.
    """
    module = getattr(package, "_LAZY", {}).get(name)
    obj = getattr(importlib.import_module(module), name) if module else getattr(package, name)
    return f"{obj.__module__}.{obj.__qualname__}"


def public_names() -> list[tuple[str, str]]:
    import genloss
    import genloss.functional

    return [(package.__name__, name) for package in (genloss, genloss.functional) for name in package.__all__
            if name not in ("__version__", "functional")]


def test_every_public_name_is_in_the_api_reference(site):
    result, site_dir = site
    assert result.returncode == 0, result.stdout + result.stderr
    html = api_html(site_dir)
    undocumented = []
    for package, name in public_names():
        identifier = documented_identifier(importlib.import_module(package), name)
        if f'id="{identifier}"' not in html:
            undocumented.append(f"{package}.{name} ({identifier})")
    assert not undocumented, f"public names missing from docs/api/*.md: {undocumented}"


@pytest.mark.parametrize("page, identifier", [
    ("corrwise", "genloss.corrwise.wrapper.CorrWise"),
    ("corrwise", "genloss.corrwise.wrapper.Alignment"),
    ("corrwise", "genloss.corrwise.flow.base.get_flow"),
    ("corrwise", "genloss.corrwise.flow.base.register_flow"),
    ("weights", "genloss.hub.WeightFile"),
    ("weights", "genloss.hub.default_files"),
    ("weights", "genloss.weights.resolve"),
])
def test_api_pages_document_the_defining_modules(site, page, identifier):
    result, site_dir = site
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'id="{identifier}"' in (site_dir / "api" / page / "index.html").read_text(), identifier


BAD_DOCSTRING = '''
def scale(x: float, factor: float = 2.0) -> float:
    """Scale a number.

    Args:
        x: the number.
        factr: misspelt parameter name.

    Returns:
        ``x * factor``.
    """
    return x * factor


def blend(a: float, b: float) -> float:
    """Average two numbers.

    Args:
        a, b: the numbers (Google style wants one entry per parameter).

    Returns:
        ``(a + b) / 2``.
    """
    return (a + b) / 2


def check(x: float) -> float:
    """Check a number.

    Args:
        x: the number.

    Raises:
        ValueError: negative; TypeError: not a number,
        spelt over two lines.
    """
    return x
'''


@pytest.mark.parametrize(
    "page, expected",
    [
        ("::: docs_probe.scale\n", "'factr' does not appear in the function signature"),
        ("::: docs_probe.blend\n", "'a, b' does not appear in the function signature"),
        ("::: docs_probe.check\n", "Failed to get 'exception: description' pair"),
        ("::: genloss.losses.pixel.NoSuchLoss\n", "genloss.losses.pixel.NoSuchLoss"),
        ("::: genloss.losses.not_a_module.Loss\n", "genloss.losses.not_a_module.Loss"),
    ],
    ids=["misdocumented-parameter", "parameters-sharing-an-entry", "malformed-raises", "unknown-object",
         "unknown-module"],
)
def test_strict_build_fails_on_docstring_and_reference_problems(tmp_path, page, expected):
    """The repository's mkdocs configuration (with its hook) turns these into errors, not silent gaps."""
    src = tmp_path / "src"
    (src / "docs_probe").mkdir(parents=True)
    (src / "docs_probe" / "__init__.py").write_text(BAD_DOCSTRING)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(f"# Probe\n\n{page}")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config.update(docs_dir=str(docs), hooks=[str(ROOT / "docs" / "_hooks.py")])
    config.pop("nav")
    python = next(p for p in config["plugins"] if isinstance(p, dict) and "mkdocstrings" in p)
    python["mkdocstrings"]["handlers"]["python"]["paths"] = [str(src), str(ROOT / "src")]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    result = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0, result.stderr
    assert expected in result.stderr, result.stderr


def test_sphinx_roles_become_links_to_the_documented_object():
    page_ids = frozenset({"genloss.registry.get_loss", "genloss.registry.LossInfo.build"})
    html = hooks.on_page_content(
        "see :class:<code>~genloss.L1Loss</code>, :func:<code>get_loss</code>, :meth:<code>build</code> "
        "and :data:<code>SOMETHING_UNKNOWN</code>; :math:<code>\\epsilon</code>", page=None)
    assert '<autoref identifier="genloss.losses.pixel.L1Loss" optional><code>L1Loss</code></autoref>' in html
    assert '<autoref identifier="genloss.registry.get_loss" optional><code>get_loss</code></autoref>' in html
    assert ":class:" not in html and ":func:" not in html and ":data:" not in html
    assert "; <code>\\epsilon</code>" in html
    # resolved on the page: 'build' is unique among the page's anchors
    assert hooks.resolve("build", page_ids) == "genloss.registry.LossInfo.build"
    assert hooks.resolve("genloss.functional.l1", frozenset()) == "genloss.functional._pixel.l1"
    assert hooks.resolve("SOMETHING_UNKNOWN", frozenset()) == "SOMETHING_UNKNOWN"


def python_blocks(path: str, heading: str) -> str:
    """The ```python blocks of one section (from ``heading`` to the next heading of the same level)."""
    text = (ROOT / path).read_text()
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    end = text.find(f"\n{level} ", start + len(heading))
    section = text[start:] if end < 0 else text[start:end]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))


@pytest.mark.parametrize("path, heading", [("README.md", "## Quick start"), ("docs/index.md", "## The loss classes")])
def test_quick_start_runs(path, heading, reference_weights):
    code = python_blocks(path, heading)
    # as written, on a smaller batch to keep the test fast
    code, n = re.subn(r"torch\.rand\(8, 3, 64, 64", "torch.rand(2, 3, 32, 32", code)
    assert n == 2, code
    exec(compile(code, f"{path}: {heading}", "exec"), {"__name__": "quick_start"})
