"""Functional twin of the Adaptive loss (see :class:`genloss.AdaptiveLoss`)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ..losses.adaptive import AdaptiveLoss
from ._twin import call_loss


def adaptive(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    colorspace: str = "RGB",
    image_size: Sequence[int] | None = None,
    layout: str | None = None,
    pretrained: bool = True,
    weights_dir: str | os.PathLike | None = None,
    partition: str = "genloss",
    reduction: str = "sum",
    alpha_lo: float = 0.001,
    alpha_hi: float = 1.999,
    scale_lo: float = 1e-5,
    scale_init: float = 1.0,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Barron's adaptive robust NLL on scaled-YUV DCT coefficients; :class:`genloss.AdaptiveLoss` as a function.

    Same arguments, shapes, dtypes, errors and references as the class. The instance is built once per
    set of options and device and used in eval mode; its parameters are the tuned ones
    (``pretrained=True``, 3x64x64 images) or Barron's initialisation (``pretrained=False``, which then
    needs ``image_size``). To *train* alpha and scale, use the class.

    Example:
        >>> import torch
        >>> from genloss.functional import adaptive
        >>> x = torch.rand(2, 3, 8, 8)
        >>> adaptive(x, x.flip(-1), pretrained=False, image_size=(3, 8, 8), reduction="none").shape
        torch.Size([2])
    """
    return call_loss(
        AdaptiveLoss, input, target, colorspace=colorspace, image_size=_hashable(image_size), layout=layout,
        pretrained=pretrained, weights_dir=weights_dir, partition=partition, reduction=reduction,
        alpha_lo=alpha_lo, alpha_hi=alpha_hi, scale_lo=scale_lo, scale_init=scale_init, value_range=value_range,
    )


def _hashable(image_size: Sequence[int] | None) -> tuple[int, ...] | None:
    # A list would make every call build (and, for 'genloss', spline-check) a fresh instance.
    return None if image_size is None else tuple(image_size)
