"""The base class of every genloss loss: validation, precision handling and batch reduction in one place."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .._validation import check_image, check_pair, check_reduction, reduce_batch


class ImageLoss(nn.Module):
    """Base class: ``forward(input, target)`` validates, computes a per-image loss and reduces it.

    Subclasses implement :meth:`per_image`, which maps two validated (N, C, H, W) tensors to a
    tensor of shape [N] (one value per image).

    Reductions act on the batch dimension: ``'sum'`` (the papers' default) adds the per-image
    values, ``'mean'`` averages them, ``'none'`` returns the [N] tensor.

    Half precision: ``float16``/``bfloat16`` inputs (e.g. under ``torch.autocast``) are computed
    in float32, because the perceptual models use powers, epsilons of 1e-10 and ``acos`` near 1
    that are not representable in 16-bit floats, and the result is returned in float32.
    """

    #: channel counts accepted by this loss (``None``: any)
    channels: int | Sequence[int] | None = None
    #: smallest accepted (H, W)
    min_size: int | tuple[int, int] | None = None

    def __init__(self, reduction: str = "sum") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            input: prediction, float tensor of shape (N, C, H, W) with values in [0, 1].
            target: reference, same shape, device and dtype.

        Returns:
            a scalar for ``reduction='sum'``/``'mean'``, or a tensor of shape [N] for ``'none'``.
        """
        # NaN/Inf is checked on the result, not on the inputs: every loss propagates a non-finite
        # input into its value, so the happy path costs nothing and a bad input still gets a clear
        # error naming it (for L1 an input scan would cost more than the loss itself).
        input, target = check_pair(input, target, channels=self.channels, min_size=self.min_size, check_finite=False)
        if input.dtype in (torch.float16, torch.bfloat16):
            input, target = input.float(), target.float()
        # Autocast would silently drop the convolutions and matmuls inside to 16 bit; the models are
        # tuned in float32, so the loss runs with autocast off and in (at least) float32.
        if torch.is_autocast_enabled(input.device.type):
            with torch.autocast(device_type=input.device.type, enabled=False):
                out = self._reduced(input, target)
        else:
            out = self._reduced(input, target)
        finite = math.isfinite(out.item()) if out.dim() == 0 else bool(torch.isfinite(out.detach()).all())
        if not finite:
            check_image(input, "input")
            check_image(target, "target")
        return out

    def _reduced(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.reduction == "sum":
            return self.total(input, target)
        return reduce_batch(self.per_image(input, target), self.reduction)

    def total(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Sum of :meth:`per_image` over the batch; losses with a cheaper direct sum override it."""
        return self.per_image(input, target).sum()

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
