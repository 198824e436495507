"""The pixel grid and the pixel <-> normalised coordinate conversion, shared by every warp and flow estimator.

genloss' convention: pixel centres at integer coordinates ``0 .. W-1`` (x, channel 0) and ``0 .. H-1``
(y, channel 1); ``grid_sample`` coordinates with ``align_corners=True`` put pixel 0 at -1 and pixel
``W - 1`` at +1. A dimension of size 1 has its only pixel at the grid centre (0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["flow_to_grid", "pixel_grid", "pixel_to_normalized", "sample"]


def pixel_grid(height: int, width: int, *, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pixel coordinates of shape (1, 2, H, W): channel 0 is x (column), channel 1 is y (row).

    Built by broadcasting two ``arange`` (no ``meshgrid`` copy); the result is contiguous.
    """
    xs = torch.arange(width, device=device, dtype=dtype).view(1, 1, width).expand(1, height, width)
    ys = torch.arange(height, device=device, dtype=dtype).view(1, height, 1).expand(1, height, width)
    return torch.stack((xs, ys), dim=1)


def pixel_to_normalized(pos: torch.Tensor, size: tuple[int, int], *, align_corners: bool = True) -> torch.Tensor:
    """Absolute pixel positions (N, 2, H, W) -> ``grid_sample`` grid (N, H, W, 2).

    Args:
        pos: x (channel 0) and y (channel 1) positions in pixels of an image of ``size``.
        size: (H, W) of the image that will be sampled.
        align_corners: the ``grid_sample`` convention the grid is for. ``True``: pixel 0 -> -1,
            pixel ``W - 1`` -> +1 (a size-1 dimension maps to 0). ``False``: ``(2 p + 1) / W - 1``,
            the same sample positions, but a position half a pixel or more outside a size-1
            dimension reads the padding (PWC-Net's warping relies on this).
    """
    (sx, ox), (sy, oy) = _normalization(size[1], align_corners), _normalization(size[0], align_corners)
    return torch.stack((pos[:, 0] * sx - ox, pos[:, 1] * sy - oy), dim=-1)


def _normalization(n: int, align_corners: bool) -> tuple[float, float]:
    """``(scale, offset)``: a pixel position ``p`` along an axis of ``n`` pixels is at ``p * scale - offset``
    in ``grid_sample`` coordinates. Python floats: no small tensors to build (cheaper, nothing to trace)."""
    if align_corners:
        return (2.0 / (n - 1), 1.0) if n > 1 else (0.0, 0.0)
    return 2.0 / n, 1.0 - 1.0 / n


def flow_to_grid(flow: torch.Tensor, size: tuple[int, int] | None = None,
                 base: torch.Tensor | None = None, *, align_corners: bool = True) -> torch.Tensor:
    """Relative pixel flow (N, 2, H, W) -> absolute sampling grid (N, H, W, 2) in [-1, 1] for ``grid_sample``.

    Args:
        flow: flow in pixels, defined on an H x W frame.
        size: (H_src, W_src) of the image that will be sampled; defaults to the flow's (H, W).
        base: the (1, 2, H, W) :func:`pixel_grid` of the flow's frame, to reuse across calls.
        align_corners: the convention of the ``grid_sample`` call (see :func:`pixel_to_normalized`).
    """
    h, w = flow.shape[2:]
    hs, ws = size if size is not None else (h, w)
    if base is None:
        base = pixel_grid(h, w, device=flow.device, dtype=flow.dtype)
    # the pixel grid is normalised on its own (one image), then the scaled flow is added (add_flow)
    grid = pixel_to_normalized(base, (hs, ws), align_corners=align_corners)
    return add_flow(grid, flow, (hs, ws), align_corners=align_corners)


def add_flow(grid: torch.Tensor, flow: torch.Tensor, size: tuple[int, int], *, align_corners: bool = True
             ) -> torch.Tensor:
    """A normalised sampling grid (1 or N, H, W, 2) plus a pixel flow (N, 2, H, W), scaled into grid units.

    ``size``: (H_src, W_src) of the sampled image. One pass over the batch (a fused multiply-add when both
    axes have the same scale, e.g. square images) instead of five for normalising ``pixel grid + flow``;
    the grid itself can be normalised once and reused (see :func:`flow_to_grid`).
    """
    sx, sy = _normalization(size[1], align_corners)[0], _normalization(size[0], align_corners)[0]
    if sx == sy:
        return torch.add(grid, flow.permute(0, 2, 3, 1), alpha=sx)
    return torch.stack((flow[:, 0] * sx, flow[:, 1] * sy), dim=-1) + grid  # (not in place: grid may be batched)


def sample(image: torch.Tensor, flow: torch.Tensor, *, padding_mode: str = "border", mode: str = "bilinear",
           base: torch.Tensor | None = None) -> torch.Tensor:
    """``image`` read at ``p + flow[p]`` (``grid_sample``, ``align_corners=True``), in the dtype of ``image``."""
    grid = flow_to_grid(flow, (image.shape[2], image.shape[3]), base)
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
