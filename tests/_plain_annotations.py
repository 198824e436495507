"""A user loss written without ``from __future__ import annotations``: its annotations are types, not strings,
and its options must be checked by kind all the same (see tests/test_losses_core.py)."""

from typing import Optional

import torch

from genloss.losses.base import ImageLoss


class PlainAnnotationsLoss(ImageLoss):
    """Mean absolute difference, squared if ``squared``, times ``gain``, plus ``bias`` if given."""

    def __init__(self, *, squared: bool = False, gain: float = 1.0, repeats: int = 1,  # noqa: UP045
                 bias: Optional[float] = None, reduction: str = "sum") -> None:  # noqa: UP045
        super().__init__(reduction=reduction)
        self.squared, self.gain, self.repeats, self.bias = squared, gain, repeats, bias

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        d = (input - target).abs()
        d = d * d if self.squared else d
        return d.flatten(1).mean(1) * self.gain * self.repeats + (self.bias or 0.0)
