"""The one small interface every optical flow estimator implements, and the flow registry.

Convention (used everywhere in genloss):

* inputs: ``image1``, ``image2``, float tensors (N, C, H, W) with values in [0, 1], C in {1, 3};
* output: flow (N, 2, H, W) in pixels, channel 0 = horizontal (x), channel 1 = vertical (y);
* meaning: pixel ``p`` of ``image1`` corresponds to position ``p + flow[p]`` of ``image2``, so
  ``backward_warp(image2, flow)`` is ``image2`` resampled into ``image1``'s frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class FlowEstimator(nn.Module):
    """Base class of flow estimators: ``forward(image1, image2) -> flow (N, 2, H, W)`` in pixels."""

    #: True if the estimator needs weight files (learned); False for classical methods
    learned: bool = False

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


_FLOWS: dict[str, Callable[..., nn.Module]] = {}


def register_flow(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a flow estimator factory under ``name`` (case-insensitive)."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _FLOWS[name.lower()] = factory
        return factory

    return deco


def list_flows() -> list[str]:
    """Names of every registered flow estimator."""
    _load_all()
    return sorted(_FLOWS)


def get_flow(name: str, **kwargs: Any) -> nn.Module:
    """Build a flow estimator by name (see :func:`list_flows`)."""
    _load_all()
    try:
        factory = _FLOWS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown flow method {name!r}; available: {', '.join(sorted(_FLOWS))}") from None
    return factory(**kwargs)


def _load_all() -> None:
    import importlib
    import pkgutil

    from . import __path__ as flow_path

    for mod in pkgutil.iter_modules(flow_path):
        if mod.name != "base":
            importlib.import_module(f"{__package__}.{mod.name}")
