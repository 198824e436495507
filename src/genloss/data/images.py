"""Image files, arrays and tensors: reading, writing, converting and resizing, shared by the data sets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import check_values

#: PIL modes of 16-bit greyscale files (PNG, TIFF): scaled by 65535, never saturated to 8 bits
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _sixteen_bit(im, mode: str) -> np.ndarray:
    """A 16-bit greyscale PIL image as float32 (H, W, C) in [0, 1] for ``mode`` (L, RGB or RGBA).

    PIL's ``convert`` would clip the 16-bit values at 255 (everything above 1/256 of full scale
    turns white); the values are divided by the bit depth's maximum instead.
    """
    grey = np.asarray(im, dtype=np.float32) / 65535.0
    channels = {"L": 1, "RGB": 3, "RGBA": 3}.get(mode)
    if channels is None:
        raise ValueError(f"cannot read a 16-bit greyscale image as mode {mode!r}; use 'L', 'RGB' or 'RGBA'")
    arr = np.repeat(grey[..., None], channels, axis=2)
    if mode == "RGBA":
        arr = np.concatenate([arr, np.ones_like(arr[..., :1])], axis=2)
    return arr


def read_image(path: str | os.PathLike, mode: str = "RGB", *, size: Sequence[int] | None = None,
               shorter_side: int | None = None) -> torch.Tensor:
    """An image file as a float32 CPU tensor (C, H, W) in [0, 1].

    8-bit files are divided by 255, 16-bit greyscale PNG/TIFF files by 65535 (their bit depth);
    32-bit integer and float images, whose value range the file does not define, raise ``ValueError``.

    Args:
        path: any format PIL reads.
        mode: PIL mode to convert to (``'RGB'``: C = 3, ``'RGBA'``: 4, ``'L'``: 1).
        size: resize to exactly (H, W) with PIL's bilinear filter (a no-op when it already is).
        shorter_side: resize (bilinear) so that the shorter side has this length, keeping the
            aspect ratio (torchvision's ``Resize(int)``). At most one of ``size`` and ``shorter_side``.
    """
    from PIL import Image

    if size is not None and shorter_side is not None:
        raise ValueError("give at most one of size and shorter_side")
    with Image.open(path) as im:
        w, h = im.size
        if size is not None:
            target = (int(size[1]), int(size[0]))
        elif shorter_side is not None:
            scale = shorter_side / min(w, h)
            target = (max(1, round(w * scale)), max(1, round(h * scale)))
        else:
            target = (w, h)
        if im.mode in _SIXTEEN_BIT_MODES:
            img = torch.from_numpy(_sixteen_bit(im, mode)).permute(2, 0, 1)
            return resize_image(img, (target[1], target[0]))
        if im.mode in ("I", "F"):
            raise ValueError(f"{path}: {'32-bit integer' if im.mode == 'I' else 'floating point'} image (PIL mode "
                             f"{im.mode!r}) has no defined value range; save it with 8 or 16 bits per channel")
        im = im.convert(mode)
        if target != (w, h):
            im = im.resize(target, Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return array_to_tensor(arr)[0]


def open_8bit(path: str | os.PathLike, mode: str = "RGB"):
    """An image file as an 8-bit PIL image of ``mode``, for PIL-based transforms (torchvision's).

    16-bit greyscale files are scaled by their bit depth first (see :func:`read_image`), not clipped
    by PIL's ``convert``; their extra precision is rounded to 8 bits.
    """
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in _SIXTEEN_BIT_MODES and im.mode not in ("I", "F"):
            return im.convert(mode)
    return Image.fromarray(tensor_to_array(read_image(path, mode)))


def resize_image(img: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Antialiased bilinear resize of (C, H, W) or (N, C, H, W) to ``size`` = (H, W), clamped to [0, 1].

    Same device and dtype as ``img``; returned unchanged when it already has that size.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(img.shape[-2:]) == size:
        return img
    if img.dim() not in (3, 4):
        raise ValueError(f"img must be (C, H, W) or (N, C, H, W), got {tuple(img.shape)}")
    batch = img if img.dim() == 4 else img[None]
    out = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return out if img.dim() == 4 else out[0]


def array_to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` or ``(H, W)`` -> float32 ``(1, C, H, W)`` in [0, 1]."""
    if img.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {img.dtype}")
    if img.ndim == 2:
        img = img[..., None]
    return torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def tensor_to_array(x: torch.Tensor) -> np.ndarray:
    """``(1, C, H, W)`` or ``(C, H, W)`` float in [0, 1] -> uint8 ``(H, W, C)`` (``(H, W)`` for C = 1).

    Raises ``ValueError`` for NaN/Inf or values clearly outside [0, 1] (see ``genloss._validation``).
    """
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected a single image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.dim() != 3:
        raise ValueError(f"expected (C, H, W) or (1, C, H, W), got shape {tuple(x.shape)}")
    # Slight overshoot (interpolation, unclamped generators) is clipped; data of another range (e.g.
    # [-1, 1] or [0, 255]) would silently turn black or white, so it is refused.
    check_values(x.detach().float().cpu(), "image", (0.0, 1.0))
    arr = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def write_image(img: torch.Tensor | np.ndarray, path: str | os.PathLike) -> Path:
    """Save one image as a PNG (or any format PIL infers from the suffix); returns the path.

    ``img`` is a float tensor (C, H, W), C in {1, 3, 4}, or a float array (H, W, C) / (H, W), with
    values in [0, 1] (clamped; rounded to 8 bits), on any device. Parent folders are created.
    """
    from PIL import Image

    if isinstance(img, np.ndarray):
        arr = img[..., None] if img.ndim == 2 else img
        img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(tensor_to_array(img)).save(path)
    return path
