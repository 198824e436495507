"""Functional twins of Watson-DCT and Watson-DFT (see :class:`genloss.WatsonDCT`, :class:`genloss.WatsonDFT`).

A functional call is an eval-mode call: the paper's random shift is a training-time augmentation
that never applies here, so the training-only options ``deterministic`` and ``max_shift`` are left
out. To train with the shift, use the module (``WatsonDCT()`` in training mode).
"""

from __future__ import annotations

import os

import torch

from ..losses.watson import WatsonDCT, WatsonDFT
from ._twin import call_loss


def watson_dct(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    colorspace: str = "RGB",
    pretrained: bool = True,
    reduction: str = "sum",
    faithful: bool = False,
    luminance_floor: float | None = None,
    weights_dir: str | os.PathLike | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Watson's distance on the 8x8 block DCT; :class:`genloss.WatsonDCT` in eval mode as a function.

    Args, Shape, Returns, Raises and References as :class:`genloss.WatsonDCT` (without the
    training-only ``deterministic`` and ``max_shift``: no random shift in a functional call).
    The instance is built once per set of options and device and cached.

    Example:
        >>> import torch
        >>> from genloss.functional import watson_dct
        >>> x = torch.rand(2, 3, 16, 16)
        >>> watson_dct(x.clamp(0.2, 0.8), x, pretrained=False, reduction="none").shape
        torch.Size([2])
    """
    return call_loss(WatsonDCT, input, target, colorspace=colorspace, pretrained=pretrained, reduction=reduction,
                     faithful=faithful, luminance_floor=luminance_floor, weights_dir=weights_dir,
                     value_range=value_range)


def watson_dft(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    colorspace: str = "RGB",
    pretrained: bool = True,
    reduction: str = "sum",
    faithful: bool = False,
    luminance_floor: float | None = None,
    weights_dir: str | os.PathLike | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Watson's distance on the 8x8 block DFT; :class:`genloss.WatsonDFT` in eval mode as a function.

    Args, Shape, Returns, Raises and References as :class:`genloss.WatsonDFT` (without the
    training-only ``deterministic`` and ``max_shift``: no random shift in a functional call).

    Example:
        >>> import torch
        >>> from genloss.functional import watson_dft
        >>> x = torch.rand(1, 1, 8, 8)
        >>> watson_dft(x.flip(-1), x, colorspace="LA", pretrained=False).shape
        torch.Size([])
    """
    return call_loss(WatsonDFT, input, target, colorspace=colorspace, pretrained=pretrained, reduction=reduction,
                     faithful=faithful, luminance_floor=luminance_floor, weights_dir=weights_dir,
                     value_range=value_range)


__all__ = ["watson_dct", "watson_dft"]
