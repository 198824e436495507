"""Config files: YAML with ``key.sub=value`` command-line overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def apply_overrides(cfg: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of ``cfg`` with ``a.b.c=value`` overrides applied (values parsed as YAML)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, value = item.split("=", 1)
        node = cfg
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.setdefault(p, {}), dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
            node = node[p]
        node[parts[-1]] = _parse_value(value)
    return cfg


def load_config(config: str | Path | dict[str, Any], overrides: list[str] | None = None) -> dict[str, Any]:
    """Load a YAML config file (or take a dict) and apply overrides."""
    if isinstance(config, dict):
        cfg = config
    else:
        import yaml

        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        with open(path) as fh:
            cfg = yaml.safe_load(fh) or {}
        if not isinstance(cfg, dict):
            raise ValueError(f"config file {path} must hold a mapping at the top level")
    merged = apply_overrides(cfg, overrides)
    smoke = merged.get("smoke")
    if isinstance(smoke, dict) and smoke.get("enabled") and not smoke.get("applied"):
        # `smoke.enabled=true` shrinks a full config with its smoke.overrides; command-line
        # overrides are applied again on top, so they still win (see common.apply_smoke)
        from .common import apply_smoke

        merged = apply_overrides(apply_smoke(merged), overrides)
    return merged
