"""Pixel losses: L1 and L2 (squared error), summed over pixels and channels per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register_loss
from ..transforms.color import as_grey
from .base import ImageLoss


class _PixelLoss(ImageLoss):
    def __init__(self, colorspace: str = "RGB", reduction: str = "sum") -> None:
        super().__init__(reduction)
        self.colorspace = colorspace
        self.channels = (1, 3) if colorspace == "LA" else 3

    def _prepare(self, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.colorspace == "LA":
            return as_grey(input), as_grey(target)
        return input, target

    def extra_repr(self) -> str:
        return f"colorspace={self.colorspace!r}, reduction={self.reduction!r}"


class L1Loss(_PixelLoss):
    """Sum of absolute differences per image.

    Shapes: input, target (N, C, H, W) in [0, 1] with C = 3 (RGB) or C in {1, 3} (LA, 3 channels
    are converted to grey). Output: scalar, or [N] with ``reduction='none'``.
    """

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        a, b = self._prepare(input, target)
        return (a - b).abs().flatten(1).sum(1)

    def total(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        a, b = self._prepare(input, target)
        if b.requires_grad or not a.requires_grad or not torch.is_grad_enabled():
            return F.l1_loss(a, b, reduction="sum")
        return _L1Sum.apply(a, b)


class L2Loss(_PixelLoss):
    """Sum of squared differences per image (the paper's "L2", i.e. ``nn.MSELoss(reduction='sum')``)."""

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        a, b = self._prepare(input, target)
        return (a - b).pow(2).flatten(1).sum(1)

    def total(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        a, b = self._prepare(input, target)
        if b.requires_grad or not a.requires_grad or not torch.is_grad_enabled():
            return F.mse_loss(a, b, reduction="sum")
        return _L2Sum.apply(a, b)


class _L1Sum(torch.autograd.Function):
    """``sum |a - b|``, gradient for ``a`` only (the usual case of a fixed target).

    The difference is computed once and kept, so backward is ``sign(d) * grad`` (two passes
    instead of recomputing ``a - b``). Under ``create_graph=True`` the backward is built from
    differentiable ops instead, so higher derivatives stay correct.
    """

    @staticmethod
    def forward(ctx, a, b):
        d = a - b
        ctx.save_for_backward(d, a, b)
        return d.abs().sum()

    @staticmethod
    def backward(ctx, grad):
        d, a, b = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: keep the graph through a - b
            return torch.sign(a - b) * grad, None
        return torch.sign(d).mul_(grad), None


class _L2Sum(torch.autograd.Function):
    """``sum (a - b)^2``, gradient for ``a`` only: the kept difference becomes ``2 grad d`` in one pass."""

    @staticmethod
    def forward(ctx, a, b):
        d = a - b
        ctx.save_for_backward(d, a, b)
        flat = d.reshape(-1)
        return torch.dot(flat, flat)

    @staticmethod
    def backward(ctx, grad):
        d, a, b = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: keep the graph through a - b
            return 2 * grad * (a - b), None
        return d * (2 * grad), None


@register_loss("L1", description="Sum of absolute pixel differences.", family="pixel")
def _make_l1(colorspace: str = "RGB", reduction: str = "sum", **_: object) -> L1Loss:
    return L1Loss(colorspace=colorspace, reduction=reduction)


@register_loss("L2", description="Sum of squared pixel differences.", family="pixel", aliases=("MSE",))
def _make_l2(colorspace: str = "RGB", reduction: str = "sum", **_: object) -> L2Loss:
    return L2Loss(colorspace=colorspace, reduction=reduction)
