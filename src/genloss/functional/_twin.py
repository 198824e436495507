"""The one mechanism behind every functional twin: a cached eval-mode instance of the loss' class."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import torch
from torch import nn

#: instances kept (least recently used ones are dropped beyond this)
CACHE_SIZE = 32

_cache: OrderedDict[Hashable, nn.Module] = OrderedDict()
_lock = threading.Lock()


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
    same instance as a plain call in any context. The caller waits in an interruptible join (Ctrl-C
    during a long build, e.g. a backbone download, stops the caller at once; the daemon thread does not
    keep the process alive). Where no thread can be started (interpreter shutdown) it builds in place.
    """
    if torch.compiler.is_compiling():  # (Dynamo traces the build itself; it cannot trace a thread)
        return _build(cls, options, device)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["module"] = _build(cls, options, device)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = e

    worker = threading.Thread(target=run, name="genloss-functional-build", daemon=True)
    try:
        worker.start()
    except RuntimeError:  # no new threads at interpreter shutdown (an atexit handler)
        with torch.inference_mode(False):
            return _build(cls, options, device)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["module"]


def _typed(value: Any) -> Hashable:
    """A cache key for an option value that tells ``11``, ``11.0`` and ``True`` apart (equal and equally
    hashed in Python, but the class validates them differently: an option it refuses in one type must not
    be served by an instance cached for another). Lists become tuples (a config's ``value_range``)."""
    if isinstance(value, (tuple, list)):
        return type(value), tuple(_typed(v) for v in value)
    return type(value), value


def clear_cache() -> None:
    """Drop every cached instance (the next call of each twin builds its instance anew)."""
    with _lock:
        _cache.clear()


def _instance(cls: type[nn.Module], key: Hashable, options: dict[str, Any], device: torch.device) -> nn.Module:
    with _lock:
        loss = _cache.get(key)
        if loss is not None:
            _cache.move_to_end(key)
            return loss
    loss = _build_plainly(cls, options, device)  # (outside the lock: a build may download for minutes)
    with _lock:
        loss = _cache.setdefault(key, loss)  # a concurrent first call's instance, if it came first
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return loss


def call_loss(cls: type[nn.Module], input: torch.Tensor, target: torch.Tensor, **options: Any) -> torch.Tensor:
    """``cls(**options).eval()(input, target)``, with the instance built once per (options, device).

    Building a tuned loss reads its weight file; caching makes the functional form as cheap as the
    module in a training loop. Options that cannot be hashed (e.g. a state dict) build a fresh
    instance each call. The instance is in eval mode (no training-time randomness) with frozen
    parameters (gradients flow to the inputs only), and it is built outside the caller's
    ``torch.inference_mode``, ``torch.func`` transforms and device context, so that the first call's
    context does not decide what later calls can do.
    """
    device = input.device if isinstance(input, torch.Tensor) else torch.device("cpu")
    try:
        key = (cls, device, tuple((name, _typed(value)) for name, value in sorted(options.items())))
        hash(key)
    except TypeError:  # an unhashable option (e.g. a state dict)
        return _build_plainly(cls, options, device)(input, target)
    if torch.compiler.is_compiling():  # (Dynamo does not trace the lock: it traces the build, as before)
        return _build(cls, options, device)(input, target)
    return _instance(cls, key, options, device)(input, target)
