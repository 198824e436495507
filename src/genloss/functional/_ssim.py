"""Functional twins of the SSIM losses (see :class:`genloss.SSIMLoss`, :class:`genloss.MSSSIMLoss`)."""

from __future__ import annotations

import torch

from ..losses.ssim import MSSSIMLoss, SSIMLoss
from ._twin import call_loss


def ssim(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    colorspace: str = "RGB",
    reduction: str = "sum",
    window: int = 11,
    sigma: float = 1.5,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """``1 - SSIM`` per image; :class:`genloss.SSIMLoss` as a function (same arguments, shapes, errors).

    Example:
        >>> import torch
        >>> from genloss.functional import ssim
        >>> x = torch.rand(1, 3, 16, 16)
        >>> ssim(x, x)
        tensor(0.)
    """
    return call_loss(SSIMLoss, input, target, colorspace=colorspace, reduction=reduction, window=window,
                     sigma=sigma, value_range=value_range)


def ms_ssim(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    colorspace: str = "RGB",
    reduction: str = "sum",
    scales: int = 5,
    window: int = 11,
    sigma: float = 1.5,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """``1 - MS-SSIM`` per image; :class:`genloss.MSSSIMLoss` as a function (same arguments, shapes, errors).

    Example:
        >>> import torch
        >>> from genloss.functional import ms_ssim
        >>> ms_ssim(torch.rand(2, 3, 41, 41), torch.rand(2, 3, 41, 41), scales=3, reduction="none").shape
        torch.Size([2])
    """
    return call_loss(MSSSIMLoss, input, target, colorspace=colorspace, reduction=reduction, scales=scales,
                     window=window, sigma=sigma, value_range=value_range)
