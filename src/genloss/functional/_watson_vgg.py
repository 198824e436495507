"""Functional twin of Watson-VGG (see :class:`genloss.WatsonVGG`)."""

from __future__ import annotations

import os

import torch

from ..losses.deep import BackboneWeights
from ..losses.watson_vgg import WatsonVGG
from ._twin import call_loss


def watson_vgg(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    colorspace: str = "RGB",
    pretrained: bool = True,
    reduction: str = "sum",
    pretrained_backbone: bool = True,
    backbone_weights: BackboneWeights = None,
    weights_dir: str | os.PathLike | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Watson's distance on VGG16 features; :class:`genloss.WatsonVGG` as a function (same arguments).

    The instance is built once per options and device (cached) and used in eval mode. Shapes,
    value range, dtype and errors are those of the class: input and target (N, C, H, W) with
    H, W >= 16; a scalar, or (N,) for ``reduction='none'``.

    Example:
        >>> import torch
        >>> from genloss.functional import watson_vgg
        >>> x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
        >>> watson_vgg(x, y, pretrained=False, pretrained_backbone=False, reduction="none").shape
        torch.Size([2])
    """
    return call_loss(
        WatsonVGG, input, target, colorspace=colorspace, pretrained=pretrained, reduction=reduction,
        pretrained_backbone=pretrained_backbone, backbone_weights=backbone_weights, weights_dir=weights_dir,
        value_range=value_range,
    )
