"""Real photographs shipped with scikit-image, and image distortions as pure functions.

Used by ``genloss demo`` and by tests: no download is needed, the photographs come with the
``scikit-image`` package (``skimage.data``).

Every distortion takes a float tensor ``(N, C, H, W)`` with values in [0, 1] on any device and
returns a new tensor of the same shape, dtype and device, clamped to [0, 1]; the input is never
modified. Randomness (noise) comes from an explicit seed, so a distortion is a function of its
arguments only.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import check_image
from .images import array_to_tensor, resize_image, tensor_to_array

__all__ = ["PHOTO_NAMES", "array_to_tensor", "photo_array", "tensor_to_array", "load_photo", "load_photos"]

#: colour photographs of ``skimage.data`` that need no download (all at least 300 px on each side)
PHOTO_NAMES: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket")


def photo_array(name: str) -> np.ndarray:
    """The full-size photograph ``skimage.data.<name>()`` as uint8 ``(H, W, 3)`` (grey images are repeated)."""
    try:
        import skimage.data
    except ImportError as e:  # pragma: no cover - scikit-image is in the cli/train extras
        raise ImportError("the built-in photographs need scikit-image: pip install scikit-image") from e
    loader = getattr(skimage.data, name, None)
    if loader is None or not callable(loader):
        raise ValueError(f"unknown photograph {name!r}; try one of {', '.join(PHOTO_NAMES)}")
    img = np.asarray(loader())
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] < 3:
        raise ValueError(f"skimage.data.{name}() is not an image (shape {img.shape})")
    img = img[..., :3]  # drop alpha
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float64) / img.max(), 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(img)


def load_photo(name: str = "astronaut", size: int | None = 64, *, crop: bool = True) -> torch.Tensor:
    """A photograph as a float32 tensor ``(1, 3, size, size)`` in [0, 1] on the CPU.

    Args:
        name: a ``skimage.data`` image, e.g. one of :data:`PHOTO_NAMES`.
        size: side length after resizing (antialiased bilinear); ``None`` keeps the original size.
        crop: take the largest centred square first (otherwise the aspect ratio is not kept when
            resizing to a square).
    """
    t = array_to_tensor(photo_array(name))
    if crop:
        h, w = t.shape[-2:]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        t = t[..., top : top + s, left : left + s]
    if size is not None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        t = resize_image(t, (size, size))
    return t.clamp(0, 1).contiguous()


def load_photos(names: Sequence[str] = PHOTO_NAMES, size: int = 64) -> torch.Tensor:
    """Several photographs as one batch ``(N, 3, size, size)`` (centre-cropped squares)."""
    if len(names) == 0:
        raise ValueError("names is empty")
    return torch.cat([load_photo(n, size) for n in names])


# --------------------------------------------------------------------------------------------------
# Distortions
# --------------------------------------------------------------------------------------------------


def _check(x: torch.Tensor) -> torch.Tensor:
    return check_image(x, "image")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur with a Gaussian of standard deviation ``sigma`` pixels (reflected borders); 0 is the identity."""
    x = _check(x)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return x.clone()
    radius = max(1, math.ceil(3 * sigma))
    # the kernel may not be wider than the image for reflect padding
    radius = min(radius, min(x.shape[-2:]) - 1)
    coords = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float64)
    k = torch.exp(-0.5 * (coords / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    # separable: a horizontal then a vertical 1-D convolution per channel
    out = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    out = F.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return out.clamp(0, 1)


def gaussian_noise(x: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    """Add white Gaussian noise of standard deviation ``std`` (in [0, 1] units), clamped to [0, 1].

    The noise is drawn on the CPU from a generator seeded with ``seed`` (the same noise on every
    device), then moved to ``x``'s device.
    """
    x = _check(x)
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
    return (x + std * noise).clamp(0, 1)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Compress every image with PIL's JPEG encoder at ``quality`` (1 = worst, 95 = best) and decode it.

    1- and 3-channel images are supported; values are quantised to 8 bit on the way.
    """
    from PIL import Image

    x = _check(x)
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in [1, 100], got {quality}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"jpeg needs 1 or 3 channels, got {x.shape[1]}")
    out = []
    for img in x:
        arr = tensor_to_array(img)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert("L" if x.shape[1] == 1 else "RGB"))
        out.append(array_to_tensor(dec))
    return torch.cat(out).to(device=x.device, dtype=x.dtype)


def shift(x: torch.Tensor, dx: float, dy: float = 0.0) -> torch.Tensor:
    """Translate the image content by ``(dx, dy)`` pixels (right/down positive), sub-pixel allowed.

    Pixels entering from outside are copies of the border (bilinear resampling with border
    padding), so the image content moves without black edges.
    """
    x = _check(x)
    n, _, h, w = x.shape
    if dx == 0 and dy == 0:
        return x.clone()
    ys = torch.arange(h, device=x.device, dtype=x.dtype) - dy
    xs = torch.arange(w, device=x.device, dtype=x.dtype) - dx
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    # grid_sample's normalised coordinates with align_corners=True: -1 / +1 are the centre of the
    # first / last pixel, so an integer shift reproduces pixels exactly.
    grid = torch.stack((2 * gx / max(w - 1, 1) - 1, 2 * gy / max(h - 1, 1) - 1), dim=-1)
    grid = grid.unsqueeze(0).expand(n, h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True).clamp(0, 1)


def brightness(x: torch.Tensor, delta: float) -> torch.Tensor:
    """Add ``delta`` to every pixel (a global brightness change), clamped to [0, 1]."""
    x = _check(x)
    return (x + delta).clamp(0, 1)


@dataclass(frozen=True)
class Distortion:
    """A distortion kind with the strengths that the demo sweeps."""

    name: str
    function: Callable[[torch.Tensor, float], torch.Tensor]
    strengths: tuple[float, ...]
    #: what the strength means, for axis labels
    unit: str

    def __call__(self, x: torch.Tensor, strength: float) -> torch.Tensor:
        return self.function(x, strength)


def _jpeg_by_strength(x: torch.Tensor, strength: float) -> torch.Tensor:
    # strength grows with the damage: quality = 100 - strength
    return jpeg(x, int(round(100 - strength)))


def _shift_diag(x: torch.Tensor, strength: float) -> torch.Tensor:
    return shift(x, strength, strength)


#: the distortions of the demo; strengths grow from mild to strong
DISTORTIONS: dict[str, Distortion] = {
    d.name: d
    for d in (
        Distortion("blur", gaussian_blur, (0.5, 1.0, 1.5, 2.0, 3.0), "Gaussian sigma (px)"),
        Distortion("noise", gaussian_noise, (0.02, 0.05, 0.1, 0.15, 0.2), "noise std"),
        Distortion("jpeg", _jpeg_by_strength, (10.0, 50.0, 75.0, 85.0, 95.0), "100 - JPEG quality"),
        Distortion("shift", _shift_diag, (0.5, 1.0, 2.0, 3.0, 4.0), "diagonal shift (px)"),
        Distortion("brightness", brightness, (0.02, 0.05, 0.1, 0.15, 0.2), "added brightness"),
    )
}


def distort(x: torch.Tensor, kind: str, strength: float) -> torch.Tensor:
    """Apply the distortion ``kind`` (a key of :data:`DISTORTIONS`) at ``strength``."""
    try:
        d = DISTORTIONS[kind]
    except KeyError:
        raise ValueError(f"unknown distortion {kind!r}; available: {', '.join(DISTORTIONS)}") from None
    return d(x, strength)
