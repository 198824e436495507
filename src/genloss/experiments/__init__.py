"""Experiments of both papers, each a module with ``train(cfg)`` and ``test(cfg)`` run from a config file.

A config is a YAML file with a top-level ``experiment:`` key naming the module below; the CLI
(``genloss train --config FILE key=value ...``) loads it, applies overrides and dispatches here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

#: config ``experiment:`` value -> module in this package
EXPERIMENTS = {
    "vae": "vae",
    "toy": "toy",
    "video": "video",
    "2afc": "twoafc",
}


def _module(cfg: dict[str, Any]):
    name = cfg.get("experiment")
    if name not in EXPERIMENTS:
        raise ValueError(f"config must set 'experiment' to one of {sorted(EXPERIMENTS)}, got {name!r}")
    return importlib.import_module(f"{__name__}.{EXPERIMENTS[name]}")


def train(config: str | Path | dict[str, Any], overrides: list[str] | None = None) -> dict[str, Any]:
    """Train the experiment a config describes; returns a summary (paths, metrics)."""
    from .config import load_config

    cfg = load_config(config, overrides)
    return _module(cfg).train(cfg)


def test(config: str | Path | dict[str, Any], overrides: list[str] | None = None) -> dict[str, Any]:
    """Evaluate the experiment a config describes; returns its metrics."""
    from .config import load_config

    cfg = load_config(config, overrides)
    return _module(cfg).test(cfg)


test.__test__ = False  # not a pytest test
