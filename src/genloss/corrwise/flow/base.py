"""The one small interface every optical flow estimator implements, and the one flow registry.

Convention (used everywhere in genloss):

* inputs: ``image1``, ``image2``, float tensors (N, C, H, W) with values in [0, 1], C in {1, 3};
* output: flow (N, 2, H, W) in pixels, channel 0 = horizontal (x), channel 1 = vertical (y);
* meaning: pixel ``p`` of ``image1`` corresponds to position ``p + flow[p]`` of ``image2``, so
  ``backward_warp(image2, flow)`` is ``image2`` resampled into ``image1``'s frame.

Registry: the built-in estimators are declared in :data:`_BUILTIN` by the import path of their class
(like :mod:`genloss.registry`), so :func:`list_flows` imports nothing and :func:`get_flow` imports
only the chosen estimator's module (``'coarse2fine'`` never loads torchvision or OpenCV). Options
are forwarded strictly to the class: a misspelt one raises a ``TypeError`` listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..._options import check_options, resolve_target, strict_options

__all__ = ["FlowEstimator", "FlowInfo", "flow_class", "flow_info", "get_flow", "list_flows", "register_flow"]


class FlowEstimator(nn.Module):
    """Base class of flow estimators: ``forward(image1, image2) -> flow (N, 2, H, W)`` in pixels."""

    #: True if the estimator needs weight files (learned); False for classical methods
    learned: bool = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:  # flags refuse truthy strings such as 'False'
            cls.__init__ = strict_options(cls.__dict__["__init__"])

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class FlowInfo:
    """What the registry knows of one flow estimator."""

    name: str
    #: the class, or its import path ``'package.module:Class'`` (imported on first use)
    target: str | type[nn.Module]
    description: str
    #: constructor options fixed by this entry (e.g. RAFT's ``variant``); the user cannot pass them
    preset: Mapping[str, Any] = field(default_factory=dict)

    @property
    def cls(self) -> type[nn.Module]:
        """The estimator class (imports its module on first access)."""
        return resolve_target(self.target)


_PKG = "genloss.corrwise.flow"

#: the built-in estimators, name -> class path (nothing is imported until one is built)
_BUILTIN: tuple[FlowInfo, ...] = (
    FlowInfo("coarse2fine", f"{_PKG}.classical:CoarseToFineFlow",
             "batched pyramidal Lucas-Kanade in PyTorch, no weights (CorrWise's default)"),
    FlowInfo("dis", f"{_PKG}.opencv:DISFlow", "OpenCV Dense Inverse Search (CPU, loops over the batch)"),
    FlowInfo("farneback", f"{_PKG}.opencv:FarnebackFlow", "OpenCV Farneback (CPU, loops over the batch)"),
    FlowInfo("raft", f"{_PKG}.raft:RAFTFlow", "RAFT-large (torchvision weights)", {"variant": "large"}),
    FlowInfo("raft-small", f"{_PKG}.raft:RAFTFlow", "RAFT-small (torchvision weights)", {"variant": "small"}),
    FlowInfo("pwcnet", f"{_PKG}.pwcnet:PWCNetFlow", "PWC-Net (sniklaus/pytorch-pwc weights)"),
)

_FLOWS: dict[str, FlowInfo] = {info.name: info for info in _BUILTIN}


def register_flow(name: str, cls: type[nn.Module], description: str = "") -> None:
    """Register a user's flow estimator class under ``name`` (case-insensitive), for ``get_flow`` and CorrWise.

    Args:
        name: the name, e.g. ``'my-flow'``; a built-in name cannot be replaced.
        cls: an ``nn.Module`` subclass whose ``forward(image1, image2)`` returns (N, 2, H, W) pixels;
            its constructor's keyword arguments become the options of ``get_flow(name, ...)``.
        description: one line shown in the documentation tables.

    Raises:
        TypeError: ``cls`` is not an ``nn.Module`` subclass.
        ValueError: ``name`` is a built-in estimator.

    Example:
        >>> import torch
        >>> from genloss.corrwise import FlowEstimator, get_flow, register_flow
        >>> class Zero(FlowEstimator):
        ...     def forward(self, image1, image2):
        ...         return torch.zeros_like(image1[:, :1]).expand(-1, 2, -1, -1)
        >>> register_flow("zero-example", Zero)
        >>> get_flow("zero-example")(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)).shape
        torch.Size([1, 2, 8, 8])
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_flow needs an nn.Module subclass, got {cls!r}")
    key = name.lower()
    if key in {info.name for info in _BUILTIN}:
        raise ValueError(f"{name!r} is a built-in flow estimator and cannot be replaced")
    _FLOWS[key] = FlowInfo(key, cls, description or (cls.__doc__ or "").strip().split("\n")[0])


def list_flows() -> list[str]:
    """Names of every registered flow estimator (imports nothing)."""
    return sorted(_FLOWS)


def flow_info(name: str) -> FlowInfo:
    """The registry entry of ``name`` (case-insensitive); ``ValueError`` listing the names if unknown."""
    try:
        return _FLOWS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown flow method {name!r}; available: {', '.join(list_flows())}") from None


def flow_class(name: str) -> type[nn.Module]:
    """The class behind ``name`` (imports only its module)."""
    return flow_info(name).cls


def check_flow_options(name: str, options: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` naming any option that ``get_flow(name, **options)`` would not accept."""
    info = flow_info(name)
    check_options(f"flow {info.name!r} ({info.cls.__name__})", info.cls, options, exclude=info.preset)


def get_flow(name: str, **options: Any) -> nn.Module:
    """Build the flow estimator ``name`` (see :func:`list_flows`) with keyword ``options`` for its class.

    Raises:
        ValueError: unknown name.
        TypeError: an option the class does not accept (the message lists the valid ones).

    Example:
        >>> from genloss.corrwise import get_flow
        >>> get_flow("coarse2fine", iterations=3).iterations
        3
    """
    info = flow_info(name)
    check_flow_options(name, options)
    return info.cls(**info.preset, **options)
