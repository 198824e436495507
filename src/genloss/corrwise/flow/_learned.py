"""Helpers shared by the learned flow estimators (RAFT, PWC-Net): input checks, checkpoint loading.

Not a public module: the estimators in ``raft.py`` and ``pwcnet.py`` are the interface.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..._validation import check_image, check_values

#: a weight source: a file, a state dict, a registered weight-file name, or ``None`` (random init)
WeightSource = str | os.PathLike | Mapping[str, torch.Tensor] | None

# Inputs are documented as [0, 1]; these bounds (plus check_values' 5% tolerance) only catch another
# convention ([-1, 1] or [0, 255]) while tolerating the over/undershoot of unclamped generator outputs.
_RANGE = (-0.5, 1.5)


def check_flow_pair(
    image1: object, image2: object, *, check_range: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a pair of (N, C, H, W) images in [0, 1], C in {1, 3}; return them in a common float dtype.

    NaN/Inf and the range are checked with :func:`genloss._validation.check_values` (sync-free on CUDA
    after the first calls, traced under ``torch.compile``); ``check_range=False`` skips that check.
    """
    a = check_image(image1, "image1", channels=(1, 3))
    b = check_image(image2, "image2", channels=(1, 3))
    if a.shape != b.shape:
        raise ValueError(f"image1 and image2 must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"image1 and image2 are on different devices ({a.device} and {b.device})")
    if check_range:
        for x, name in ((a, "image1"), (b, "image2")):
            try:
                check_values(x, name, _RANGE)
            except ValueError as e:
                raise ValueError(
                    f"flow estimators expect images in [0, 1] (images in [0, 255]? pass x / 255; in [-1, 1]? "
                    f"pass (x + 1) / 2; CorrWise does this with value_range=...; check_range=False skips the "
                    f"check): {e}"
                ) from None
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, 1 or 3, H, W) -> (N, 3, H, W); greyscale is repeated into three equal channels."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def module_dtype_device(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    """dtype and device of a module's first parameter."""
    p = next(module.parameters())
    return p.dtype, p.device


def check_module_device(module: nn.Module, x: torch.Tensor, name: str) -> None:
    """Raise a clear error when the images and the network's weights are on different devices."""
    _, device = module_dtype_device(module)
    if device != x.device:
        raise ValueError(
            f"the images are on {x.device} but the {name} weights are on {device}; "
            f"move the estimator with .to({str(x.device)!r})"
        )


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a checkpoint file on the CPU and unwrap the common ``{'state_dict': ...}`` containers."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"weight file {p} does not exist")
    obj = torch.load(p, map_location="cpu", weights_only=True)
    return unwrap_state_dict(obj, str(p))


def unwrap_state_dict(obj: object, what: str = "state dict") -> dict[str, torch.Tensor]:
    """The tensor mapping inside ``obj`` (a state dict, or a dict holding one under 'state_dict'/'model')."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
    raise TypeError(f"{what} is not a state dict (a mapping from parameter names to tensors)")


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that has it (e.g. ``module.`` of DataParallel checkpoints)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with an error message that names the checkpoint."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{what} does not fit this network: {e}") from None


def freeze(module: nn.Module) -> nn.Module:
    """Evaluation mode and no parameter gradients: flow estimators are fixed, pretrained functions."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
