"""Colour transforms on NCHW tensors (pure functions)."""

from __future__ import annotations

import torch

COLORSPACES = ("RGB", "LA")
_GREY_NAMES = {"la", "l", "grey", "gray", "greyscale", "grayscale", "grey-scale", "gray-scale"}


def normalize_colorspace(colorspace: str) -> str:
    """Map the accepted spellings to ``'RGB'`` or ``'LA'`` (greyscale); raise on anything else."""
    if not isinstance(colorspace, str):
        raise TypeError(f"colorspace must be a string, got {type(colorspace).__name__}")
    if colorspace.lower() == "rgb":
        return "RGB"
    if colorspace.lower() in _GREY_NAMES:
        return "LA"
    raise ValueError(f"colorspace must be 'RGB' or 'LA' (greyscale), got {colorspace!r}")

#: BT.601 luma weights, used for RGB -> grey (``colorspace='LA'``) and for Y of YCbCr
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

#: the JPEG YCbCr matrix of the Watson paper's code (rows: Y, Cb, Cr) and its offsets
YCBCR_MATRIX = (
    (0.299, 0.587, 0.114),
    (-0.1687, -0.3313, 0.5),
    (0.5, -0.4187, -0.0813),
)
YCBCR_OFFSET = (0.0, 0.5, 0.5)


def rgb_to_grey(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) BT.601 luma ``0.299 R + 0.587 G + 0.114 B``."""
    if x.shape[1] != 3:
        raise ValueError(f"rgb_to_grey expects 3 channels, got {x.shape[1]}")
    w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def as_grey(x: torch.Tensor) -> torch.Tensor:
    """Greyscale view of an image batch: 1-channel input is returned as is, 3-channel is converted."""
    if x.shape[1] == 1:
        return x
    return rgb_to_grey(x)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> YCbCr with Cb, Cr offset by 0.5 (JPEG convention)."""
    if x.shape[1] != 3:
        raise ValueError(f"rgb_to_ycbcr expects 3 channels, got {x.shape[1]}")
    m = torch.tensor(YCBCR_MATRIX, dtype=x.dtype, device=x.device)
    b = torch.tensor(YCBCR_OFFSET, dtype=x.dtype, device=x.device).view(3, 1)
    # (3, 3) @ (N, 3, H*W): a broadcast matmul on the contiguous image, no permuted copies
    return torch.baddbmm(b.expand(x.shape[0], 3, 1), m.expand(x.shape[0], 3, 3), x.reshape(x.shape[0], 3, -1)).view(
        x.shape
    )
