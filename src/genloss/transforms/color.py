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
    # Python-scalar weights: a weight tensor built from a list would be a host-to-device copy on
    # every call, which waits for the CUDA stream.
    r, g, b = LUMA_WEIGHTS
    return x[:, 0:1] * r + x[:, 1:2] * g + x[:, 2:3] * b


def as_grey(x: torch.Tensor) -> torch.Tensor:
    """Greyscale view of an image batch: 1-channel input is returned as is, 3-channel is converted."""
    if x.shape[1] == 1:
        return x
    return rgb_to_grey(x)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> YCbCr with Cb, Cr offset by 0.5 (JPEG convention)."""
    if x.shape[1] != 3:
        raise ValueError(f"rgb_to_ycbcr expects 3 channels, got {x.shape[1]}")
    # Python-scalar coefficients (no host-to-device copy per call, see rgb_to_grey)
    rgb = (x[:, 0:1], x[:, 1:2], x[:, 2:3])
    rows = [sum(c * ch for c, ch in zip(row, rgb, strict=True)) + off
            for row, off in zip(YCBCR_MATRIX, YCBCR_OFFSET, strict=True)]
    return torch.cat(rows, dim=1)


#: RGB -> YUV (rows Y, U, V): the analog BT.601 YUV of ``tf.image.rgb_to_yuv``, which Barron's adaptive
#: image loss (and so the Watson paper's 'Adaptive' loss) uses
YUV_MATRIX = (
    (0.299, 0.587, 0.114),
    (-0.14714119, -0.28886916, 0.43601035),
    (0.61497538, -0.51496512, -0.10001026),
)


def syuv_matrix(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """The volume-preserving scaled-YUV matrix: ``YUV_MATRIX / |det YUV_MATRIX|^(1/3)``, shape (3, 3).

    Barron scales YUV so that the determinant is 1: the change of variables then leaves likelihoods
    unchanged, which his NLL loss needs (the factor is ``1.5802278...``). Rows are Y, U, V; apply as
    ``syuv_matrix() @ rgb`` on a (3,) colour or with :func:`rgb_to_syuv` on images.

    Args:
        dtype: floating dtype of the result (computed in float64, then cast).
        device: device of the result.

    Returns:
        a (3, 3) tensor with determinant 1 (up to rounding in ``dtype``).

    Example:
        >>> round(float(syuv_matrix(torch.float64).det()), 12)
        1.0
    """
    m = torch.tensor(YUV_MATRIX, dtype=torch.float64)
    m = m / m.det().abs() ** (1.0 / 3.0)
    return m.to(dtype=dtype, device=device)


def rgb_to_syuv(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB (or RGB differences) -> scaled YUV of :func:`syuv_matrix`, same shape and dtype.

    Linear without offsets, so it maps a difference of images to the difference of their YUV images.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"rgb_to_syuv expects (N, 3, H, W), got shape {tuple(x.shape)}")
    return torch.einsum("oc,nchw->nohw", syuv_matrix(x.dtype, x.device), x)
