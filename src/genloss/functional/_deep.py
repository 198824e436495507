"""Functional twin of Deeploss (see :class:`genloss.DeepLoss`)."""

from __future__ import annotations

import os

import torch

from ..losses.deep import BackboneWeights, DeepLoss
from ._twin import call_loss


def deep_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    backbone: str = "vgg",
    *,
    colorspace: str = "RGB",
    pretrained: bool = True,
    reduction: str = "sum",
    normalize: str = "original",
    pretrained_backbone: bool = True,
    backbone_weights: BackboneWeights = None,
    weights_dir: str | os.PathLike | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """LPIPS-style Deeploss distance; :class:`genloss.DeepLoss` as a function (same arguments).

    Same shapes, dtypes, errors and references as the class. The instance (backbone included) is
    built once per set of hashable options and device; a state dict passed as ``backbone_weights``
    cannot be cached, so pass a file path there in a training loop.

    Example:
        >>> import torch
        >>> from genloss.functional import deep_loss
        >>> x = torch.rand(2, 3, 32, 32)
        >>> deep_loss(x, x, "squeeze", pretrained=False, pretrained_backbone=False, reduction="none").detach()
        tensor([0., 0.])
    """
    return call_loss(
        DeepLoss, input, target, backbone=backbone, colorspace=colorspace, pretrained=pretrained,
        reduction=reduction, normalize=normalize, pretrained_backbone=pretrained_backbone,
        backbone_weights=backbone_weights, weights_dir=weights_dir, value_range=value_range,
    )
