"""The one mechanism behind every functional twin: a cached eval-mode instance of the loss' class."""

from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Hashable
from typing import Any

import torch
from torch import nn


def _build(cls: type[nn.Module], options: dict[str, Any], device: torch.device) -> nn.Module:
    # A functional call has fixed parameters: frozen, so no backward accumulates into a hidden module.
    return cls(**options).to(device).eval().requires_grad_(False)


def _build_plainly(cls: type[nn.Module], options: dict[str, Any], device: torch.device) -> nn.Module:
    """:func:`_build` in a thread of its own, outside the caller's thread-local modes.

    The instance outlives the call that builds it. Built inside ``torch.inference_mode`` its
    parameters would be inference tensors, and every later call with gradients would fail ("Inference
    tensors cannot be saved for backward"); built inside a ``torch.func`` transform (``grad``, ``vmap``)
    its tensors would be the transform's wrapped ones, and construction itself fails on ``.data`` or
    random initialisation. Inference mode, grad mode, autocast, functorch's transforms and torch
    function modes (``with torch.device(...)``) are all thread-local, so a fresh thread builds the
    same instance as a plain call in any context.
    """
    if torch.compiler.is_compiling():  # (Dynamo traces the build itself; it cannot trace a thread)
        return _build(cls, options, device)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_build, cls, options, device).result()


def _typed(value: Any) -> Hashable:
    """A cache key for an option value that tells ``11``, ``11.0`` and ``True`` apart (equal and equally
    hashed in Python, but the class validates them differently: an option it refuses in one type must not
    be served by an instance cached for another)."""
    if isinstance(value, (tuple, list)):
        return type(value), tuple(_typed(v) for v in value)
    return type(value), value


@functools.lru_cache(maxsize=32)
def _cached(cls: type[nn.Module], key: Hashable, options: tuple[tuple[str, Any], ...],
            device: torch.device) -> nn.Module:
    # (key, not options, decides the cache hit: lru_cache compares arguments with ==)
    return _build_plainly(cls, dict(options), device)


def call_loss(cls: type[nn.Module], input: torch.Tensor, target: torch.Tensor, **options: Any) -> torch.Tensor:
    """``cls(**options).eval()(input, target)``, with the instance built once per (options, device).

    Building a tuned loss reads its weight file; caching makes the functional form as cheap as the
    module in a training loop. Options that cannot be hashed (e.g. a state dict) build a fresh
    instance each call. The instance is in eval mode (no training-time randomness) with frozen
    parameters (gradients flow to the inputs only), and it is built outside the caller's
    ``torch.inference_mode``, ``torch.func`` transforms and device context, so that the first call's
    context does not decide what later calls can do.
    """
    items = tuple(sorted(options.items()))
    device = input.device if isinstance(input, torch.Tensor) else torch.device("cpu")
    try:
        key = tuple((name, _typed(value)) for name, value in items)
        hash(key)
    except TypeError:  # an unhashable option (e.g. a list inside a tuple, a state dict)
        return _build_plainly(cls, options, device)(input, target)
    return _cached(cls, key, items, device)(input, target)
