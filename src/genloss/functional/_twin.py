"""The one mechanism behind every functional twin: a cached eval-mode instance of the loss' class."""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any

import torch
from torch import nn


def _build(cls: type[nn.Module], options: dict[str, Any], device: torch.device) -> nn.Module:
    # A functional call has fixed parameters: frozen, so no backward accumulates into a hidden module.
    return cls(**options).to(device).eval().requires_grad_(False)


@functools.lru_cache(maxsize=32)
def _cached(cls: type[nn.Module], options: tuple[tuple[str, Any], ...], device: torch.device) -> nn.Module:
    return _build(cls, dict(options), device)


def call_loss(cls: type[nn.Module], input: torch.Tensor, target: torch.Tensor, **options: Any) -> torch.Tensor:
    """``cls(**options).eval()(input, target)``, with the instance built once per (options, device).

    Building a tuned loss reads its weight file; caching makes the functional form as cheap as the
    module in a training loop. Options that cannot be hashed (e.g. a state dict) build a fresh
    instance each call. The instance is in eval mode (no training-time randomness) with frozen
    parameters (gradients flow to the inputs only).
    """
    items = tuple(sorted(options.items()))
    device = input.device if isinstance(input, torch.Tensor) else torch.device("cpu")
    if all(isinstance(v, Hashable) for _, v in items):
        loss = _cached(cls, items, device)
    else:
        loss = _build(cls, options, device)
    return loss(input, target)
