"""Functional twins of the pixel losses (see :class:`genloss.L1Loss`, :class:`genloss.L2Loss`)."""

from __future__ import annotations

import torch

from ..losses.pixel import L1Loss, L2Loss
from ._twin import call_loss


def l1(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    colorspace: str = "RGB",
    reduction: str = "sum",
    value_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Sum of absolute differences per image; :class:`genloss.L1Loss` as a function.

    Args:
        input: prediction (N, C, H, W), float, values in ``value_range``.
        target: reference of the same shape and device.
        colorspace: ``'RGB'`` or ``'LA'`` (see :class:`genloss.L1Loss`).
        reduction: ``'sum'`` | ``'mean'`` | ``'none'`` over the batch.
        value_range: the images' range, mapped onto [0, 1].

    Returns:
        A scalar, or (N,) with ``reduction='none'``; >= 0.

    Raises:
        TypeError, ValueError: as :class:`genloss.L1Loss`.

    Example:
        >>> import torch
        >>> from genloss.functional import l1
        >>> l1(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))
        tensor(12.)
    """
    return call_loss(L1Loss, input, target, colorspace=colorspace, reduction=reduction, value_range=value_range)


def l2(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    colorspace: str = "RGB",
    reduction: str = "sum",
    value_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Sum of squared differences per image; :class:`genloss.L2Loss` as a function.

    Args:
        input: prediction (N, C, H, W), float, values in ``value_range``.
        target: reference of the same shape and device.
        colorspace: ``'RGB'`` or ``'LA'`` (see :class:`genloss.L2Loss`).
        reduction: ``'sum'`` | ``'mean'`` | ``'none'`` over the batch.
        value_range: the images' range, mapped onto [0, 1].

    Returns:
        A scalar, or (N,) with ``reduction='none'``; >= 0.

    Raises:
        TypeError, ValueError: as :class:`genloss.L2Loss`.

    Example:
        >>> import torch
        >>> from genloss.functional import l2
        >>> l2(torch.full((1, 3, 2, 2), 0.5), torch.zeros(1, 3, 2, 2), reduction="none")
        tensor([3.])
    """
    return call_loss(L2Loss, input, target, colorspace=colorspace, reduction=reduction, value_range=value_range)
