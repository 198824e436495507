"""Pixel losses: L1 and L2 (squared error), summed over pixels and channels per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._validation import in_functorch_transform
from ..transforms.color import as_grey
from .base import ImageLoss, custom_backward_applies, grey_channels


class _PixelLoss(ImageLoss):
    def __init__(
        self, *, colorspace: str = "RGB", reduction: str = "sum", value_range: tuple[float, float] = (0.0, 1.0)
    ) -> None:
        super().__init__(colorspace=colorspace, reduction=reduction, value_range=value_range)
        self.channels = grey_channels(self.colorspace)

    def _prepare(self, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.colorspace == "LA":
            return as_grey(input), as_grey(target)
        return input, target


class L1Loss(_PixelLoss):
    """Sum of absolute pixel differences per image: ``sum_{c,y,x} |input - target|``.

    The paper's "L1" (``nn.L1Loss(reduction='sum')`` per image). Computed on [0, 1] images, so with
    ``value_range`` the value is in units of the declared range's width.

    Args:
        colorspace: ``'RGB'`` (3 channels) or ``'LA'`` (greyscale: 1 channel, or 3 channels converted
            with the BT.601 luma weights).
        reduction: ``'sum'`` (default, as the paper) | ``'mean'`` | ``'none'``, over the batch.
        value_range: the range ``(lo, hi)`` of the input images; mapped exactly onto [0, 1].

    Shape:
        - input, target: (N, C, H, W), C = 3 (RGB) or C in {1, 3} (LA); any H, W >= 1.
        - output: scalar, or (N,) with ``reduction='none'``.

    Returns:
        The loss, >= 0, 0 for identical images; dtype as described in :class:`ImageLoss`.

    Raises:
        TypeError: non-tensor or integer input.
        ValueError: wrong rank, shapes or channel count, NaN/Inf, values outside ``value_range``.

    References:
        Czolbe et al., *A Loss Function for Generative Neural Networks Based on Watson's Perceptual
        Model*, NeurIPS 2020 (baseline).

    Example:
        >>> import torch
        >>> from genloss import L1Loss
        >>> loss = L1Loss(reduction="none")
        >>> loss(torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))
        tensor([48., 48.])
    """

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        a, b = self._prepare(input, target)
        return (a - b).abs().flatten(1).sum(1)

    def total(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        a, b = self._prepare(input, target)
        if custom_backward_applies(a, b):
            return _L1Sum.apply(a, b)
        return F.l1_loss(a, b, reduction="sum")


class L2Loss(_PixelLoss):
    """Sum of squared pixel differences per image: ``sum_{c,y,x} (input - target)^2``.

    The paper's "L2" (``nn.MSELoss(reduction='sum')`` per image; alias ``MSE``).

    Args:
        colorspace: ``'RGB'`` (3 channels) or ``'LA'`` (greyscale: 1 channel, or 3 channels converted
            with the BT.601 luma weights).
        reduction: ``'sum'`` (default, as the paper) | ``'mean'`` | ``'none'``, over the batch.
        value_range: the range ``(lo, hi)`` of the input images; mapped exactly onto [0, 1].

    Shape:
        - input, target: (N, C, H, W), C = 3 (RGB) or C in {1, 3} (LA); any H, W >= 1.
        - output: scalar, or (N,) with ``reduction='none'``.

    Returns:
        The loss, >= 0, 0 for identical images.

    Raises:
        TypeError: non-tensor or integer input.
        ValueError: wrong rank, shapes or channel count, NaN/Inf, values outside ``value_range``.

    References:
        Czolbe et al., NeurIPS 2020 (baseline).

    Example:
        >>> import torch
        >>> from genloss import L2Loss
        >>> L2Loss()(torch.full((1, 3, 2, 2), 0.5), torch.zeros(1, 3, 2, 2))
        tensor(3.)
    """

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        a, b = self._prepare(input, target)
        return (a - b).pow(2).flatten(1).sum(1)

    def total(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        a, b = self._prepare(input, target)
        if custom_backward_applies(a, b):
            return _L2Sum.apply(a, b)
        return F.mse_loss(a, b, reduction="sum")


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
        if in_functorch_transform(grad):  # a batched gradient (is_grads_batched): not in place
            return torch.sign(d) * grad, None
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


__all__ = ["L1Loss", "L2Loss"]
