"""A small user loss, registered by the contract suite to prove that adding a loss is one module plus
its registration (the suite then checks it like every built-in loss)."""

from __future__ import annotations

import torch

from genloss.losses.base import ImageLoss, grey_channels


class TinyAbsLoss(ImageLoss):
    """Mean absolute difference per image, scaled by ``gain``.

    Args:
        colorspace: ``'RGB'`` or ``'LA'``.
        reduction: ``'sum'`` | ``'mean'`` | ``'none'`` over the batch.
        gain: a factor on the loss.
        value_range: the input range, mapped onto [0, 1].

    Shape:
        input, target (N, C, H, W); output scalar or (N,).

    Returns:
        The loss, >= 0.

    Raises:
        ValueError: bad input.

    References:
        None: a test fixture.

    Example:
        >>> TinyAbsLoss()(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))
        tensor(1.)
    """

    def __init__(
        self,
        *,
        colorspace: str = "RGB",
        reduction: str = "sum",
        gain: float = 1.0,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__(colorspace=colorspace, reduction=reduction, value_range=value_range)
        self.channels = grey_channels(self.colorspace)
        self.gain = gain

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.gain * (input - target).abs().flatten(1).mean(1)
