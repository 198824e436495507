"""Image pairs with known motion, for testing and benchmarking flow estimators and CorrWise.

A pair is made from a real photograph ``image2`` and a known flow ``f`` by backward warping:
``image1 = backward_warp(image2, f)``, so ``image1(p) = image2(p + f(p))`` and ``f`` is exactly the
ground-truth flow of ``(image1, image2)`` in genloss' convention. Both images are cut from the interior
of a larger warp, so no padding appears in them. Integer translations involve no interpolation at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..transforms.grid import pixel_grid
from .warp import backward_warp

#: the synthetic motions: integer and sub-pixel translation, a small affine motion, a smooth random field
MOTIONS = ("translation", "subpixel", "affine", "smooth")


def motion_field(kind: str, n: int, height: int, width: int, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    """A known flow (n, 2, H, W) in pixels, magnitudes multiplied by ``scale``.

    * ``'translation'``: (3, -2) px, times ``scale`` (integer for integer scales);
    * ``'subpixel'``: (1.5, 0.7) px;
    * ``'affine'``: rotation by about 1.7 degrees and scaling by 4% about the centre (1.6 px at 32 px
      from it) plus (1, -0.5) px times ``scale``;
    * ``'smooth'``: a random field, bicubic from a 4 x 4 grid of normal values, peak 3 px.
    """
    if kind == "translation":
        f = torch.tensor([3.0, -2.0]).view(1, 2, 1, 1).expand(n, 2, height, width) * scale
    elif kind == "subpixel":
        f = torch.tensor([1.5, 0.7]).view(1, 2, 1, 1).expand(n, 2, height, width) * scale
    elif kind == "affine":
        pos = pixel_grid(height, width) - torch.tensor([(width - 1) / 2, (height - 1) / 2]).view(1, 2, 1, 1)
        a = torch.tensor([[0.04, -0.03], [0.03, 0.04]])  # rotation + zoom: grows with the distance by itself
        f = torch.einsum("ij,njhw->nihw", a, pos) + torch.tensor([1.0, -0.5]).view(1, 2, 1, 1) * scale
        f = f.expand(n, 2, height, width)
    elif kind == "smooth":
        g = torch.Generator().manual_seed(seed)
        low = torch.randn(n, 2, 4, 4, generator=g)
        f = F.interpolate(low, size=(height, width), mode="bicubic", align_corners=True)
        f = f / f.abs().amax(dim=(1, 2, 3), keepdim=True) * 3.0 * scale
    else:
        raise ValueError(f"unknown motion {kind!r}; choose from {MOTIONS}")
    return f.contiguous()


def synthetic_pair(photos: torch.Tensor, kind: str, size: int, margin: int | None = None,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(image1, image2, flow)`` of shape (N, 3, size, size) x 2 and (N, 2, size, size) with known motion.

    Args:
        photos: (N, 3, S, S) photographs with ``S >= size + 2 * margin``; the pair is cut from their centre.
        kind: one of :data:`MOTIONS`; motions scale with ``size / 64`` (3 px at 64, 12 px at 256).
        size: side of the output images.
        margin: pixels cut on each side (default ``size // 4``, more than the largest motion).
    """
    margin = size // 4 if margin is None else margin
    n, _, h, w = photos.shape
    if h < size + 2 * margin or w < size + 2 * margin:
        raise ValueError(f"photos must be at least {size + 2 * margin} px, got {h}x{w}")
    top, left = (h - size) // 2 - margin, (w - size) // 2 - margin
    big = photos[:, :, top:top + size + 2 * margin, left:left + size + 2 * margin]
    flow = motion_field(kind, n, size + 2 * margin, size + 2 * margin, scale=size / 64, seed=seed)
    image1 = backward_warp(big, flow, padding_mode="border")
    crop = (slice(None), slice(None), slice(margin, margin + size), slice(margin, margin + size))
    # no clamp: bilinear sampling with border padding is a convex combination of the photos' pixels, so
    # image1 stays in their range; a clamp could only hide photos given in another range
    return image1[crop].contiguous(), big[crop].contiguous(), flow[crop].contiguous()


def end_point_error(flow: torch.Tensor, truth: torch.Tensor, border: int = 0) -> torch.Tensor:
    """Mean end-point error ``|flow - truth|_2`` per image [N], ignoring ``border`` pixels on each side."""
    d = flow - truth
    if border:
        d = d[..., border:-border, border:-border]
    return d.norm(dim=1).flatten(1).mean(1)
