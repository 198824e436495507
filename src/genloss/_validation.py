"""One input validator used by every loss, so that bad input fails the same way everywhere.

Every check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong rank,
shape, channel count, size or non-finite values) with a message that names the argument and says
what was expected, never a silent wrong number.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

REDUCTIONS = ("sum", "mean", "none")


def check_reduction(reduction: str) -> str:
    """Return ``reduction`` if it is one of ``'sum'``, ``'mean'``, ``'none'``; raise otherwise."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_image(
    x: object,
    name: str = "input",
    *,
    channels: int | Sequence[int] | None = None,
    min_size: int | tuple[int, int] | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """Check that ``x`` is a floating NCHW image batch and return it.

    Args:
        x: the object to check.
        name: the argument's name, used in error messages.
        channels: allowed channel count(s), or ``None`` for any.
        min_size: smallest allowed (H, W) (an int means square).
        check_finite: reject NaN and Inf values.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be a 4-D tensor of shape (N, C, H, W), got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} must be a floating point tensor with values in [0, 1], got dtype {x.dtype}; "
            "convert integer images with x.float() / 255"
        )
    n, c, h, w = x.shape
    if n == 0:
        raise ValueError(f"{name} has an empty batch (N = 0)")
    if channels is not None:
        allowed = (channels,) if isinstance(channels, int) else tuple(channels)
        if c not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} has {c} channels, expected {want}")
    if min_size is not None:
        mh, mw = (min_size, min_size) if isinstance(min_size, int) else min_size
        if h < mh or w < mw:
            raise ValueError(f"{name} is {h}x{w} pixels, smaller than the minimum {mh}x{mw} of this loss")
    # One reduction instead of an elementwise isfinite pass: a NaN/Inf anywhere makes the sum
    # non-finite; only then is the exact check run (a finite sum can also overflow for huge values).
    if check_finite and not bool(torch.isfinite(x.detach().sum())) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


def check_pair(
    input: object,
    target: object,
    *,
    channels: int | Sequence[int] | None = None,
    min_size: int | tuple[int, int] | None = None,
    check_finite: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a prediction/target pair of NCHW float images of the same shape, device and dtype."""
    a = check_image(input, "input", channels=channels, min_size=min_size, check_finite=check_finite)
    b = check_image(target, "target", channels=channels, min_size=min_size, check_finite=check_finite)
    if a.shape != b.shape:
        raise ValueError(f"input and target must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"input and target are on different devices ({a.device} and {b.device})")
    if a.dtype != b.dtype:
        # Mixed precision is a common accident (e.g. a float64 target); promote instead of failing.
        dtype = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(dtype), b.to(dtype)
    return a, b


def reduce_batch(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a per-image loss of shape [N]: ``'sum'`` -> scalar, ``'mean'`` -> scalar, ``'none'`` -> [N]."""
    if reduction == "sum":
        return per_image.sum()
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
