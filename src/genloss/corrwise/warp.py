"""Differentiable image warping by optical flow: backward warping (sampling) and forward warping (splatting).

Flow convention (as everywhere in genloss, see ``flow/base.py``): a flow ``f`` of shape (N, 2, H, W)
in pixels, channel 0 = x, channel 1 = y, defined on the pixels of a *reference* frame.

* :func:`backward_warp` ``(image, f)`` reads ``image`` at ``p + f[p]`` for every pixel ``p`` of the
  reference frame: if ``f`` maps frame A to image B (``p`` in A corresponds to ``p + f[p]`` in B),
  ``backward_warp(B, f)`` is B resampled into A's frame.
* :func:`forward_warp` ``(image, f)`` pushes every pixel ``p`` of ``image`` to ``p + f[p]``: if ``f``
  maps image A to frame B, ``forward_warp(A, f)`` is A moved into B's frame. Pixels of B that no
  pixel of A lands on are holes; the returned weight map says where they are.

Pixel centres are at integer coordinates, ``0 .. W-1`` and ``0 .. H-1`` (``align_corners=True``); the
grid and the pixel -> ``grid_sample`` conversion live in :mod:`genloss.transforms.grid`.

Precision: grids and sampling run in at least float32 and the result is cast back. In float16 a
pixel position of 255 has a spacing of 0.125 px, and bfloat16 cannot even represent 255 + 0.5, so a
16-bit grid would misplace every sample (and the normalised grid loses the sub-pixel part entirely).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..transforms.grid import flow_to_grid, pixel_grid

__all__ = ["PADDING_MODES", "backward_warp", "flow_to_grid", "forward_warp", "pixel_grid", "resize_flow"]

PADDING_MODES = ("zeros", "border", "reflection")


def _check_flow(image: torch.Tensor, flow: torch.Tensor) -> None:
    if not isinstance(flow, torch.Tensor) or flow.dim() != 4 or flow.shape[1] != 2:
        shape = tuple(flow.shape) if isinstance(flow, torch.Tensor) else type(flow).__name__
        raise ValueError(f"flow must be a tensor of shape (N, 2, H, W), got {shape}")
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a tensor of shape (N, C, H, W), got {shape}")
    if image.shape[0] != flow.shape[0]:
        raise ValueError(f"image and flow have different batch sizes ({image.shape[0]} and {flow.shape[0]})")
    if image.device != flow.device:
        raise ValueError(f"image and flow are on different devices ({image.device} and {flow.device})")


def backward_warp(image: torch.Tensor, flow: torch.Tensor, padding_mode: str = "reflection",
                  mode: str = "bilinear") -> torch.Tensor:
    """Sample ``image`` at ``p + flow[p]`` (bilinear): ``image`` resampled into the flow's frame.

    Args:
        image: (N, C, H, W) float tensor, any range.
        flow: (N, 2, H', W') pixel flow defined on the output frame (usually H' = H, W' = W).
        padding_mode: value read outside the image: ``'zeros'``, ``'border'`` (nearest edge pixel) or
            ``'reflection'`` (mirrored at the edge; the CorrWise paper's default).
        mode: ``'bilinear'`` (differentiable in image and flow) or ``'nearest'``.

    Returns:
        (N, C, H', W') tensor on ``image``'s device, in the promoted dtype of image and flow (computed
        in at least float32). Differentiable with respect to ``image`` and ``flow``.
    """
    _check_flow(image, flow)
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    out_dtype = torch.promote_types(image.dtype, flow.dtype)
    work = _work_dtype(out_dtype)
    grid = flow_to_grid(flow.to(work), size=(image.shape[2], image.shape[3]))
    out = F.grid_sample(image.to(work), grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    return out.to(out_dtype)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for 16-bit data (see the module docstring), the dtype itself otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def forward_warp(image: torch.Tensor, flow: torch.Tensor, weight: torch.Tensor | None = None,
                 eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear splatting: push pixel ``p`` of ``image`` to ``p + flow[p]`` and normalise by the splatted weight.

    Every source pixel adds its value, times a bilinear weight, to the four output pixels around its
    destination; the output is the weighted sum divided by the sum of weights (a weighted average of
    the source pixels landing near each output pixel). Output pixels that receive a total weight
    below ``eps`` are holes (disocclusions, or nothing moved there): they are set to 0 and their
    weight is reported, so the caller can mask them.

    Args:
        image: (N, C, H, W) float tensor.
        flow: (N, 2, H, W) pixel flow defined on ``image``'s pixels.
        weight: optional (N, 1, H, W) per-source-pixel weight in [0, 1] (e.g. 0 for occluded pixels,
            which then do not splat at all).
        eps: total weight below which an output pixel counts as a hole.

    Returns:
        ``(warped, splat_weight)``: (N, C, H, W) splatted image and (N, 1, H, W) total weight that
        landed on each output pixel (about 1 where the flow is locally a translation). Differentiable
        with respect to ``image`` and ``flow`` (the bilinear weights depend on the flow's fractional
        part). Destinations outside the frame are dropped.
    """
    _check_flow(image, flow)
    if image.shape[2:] != flow.shape[2:]:
        raise ValueError(f"forward_warp needs image and flow of the same size, got {tuple(image.shape[2:])} "
                         f"and {tuple(flow.shape[2:])}")
    out_dtype = torch.promote_types(image.dtype, flow.dtype)
    dtype = _work_dtype(out_dtype)
    n, c, h, w = image.shape
    image, flow = image.to(dtype), flow.to(dtype)
    pos = pixel_grid(h, w, device=flow.device, dtype=dtype) + flow
    x, y = pos[:, 0], pos[:, 1]  # (N, H, W)
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    src_w = torch.ones_like(fx) if weight is None else weight.to(dtype).reshape(n, h, w)

    # values and weights are splatted together: channels 0..C-1 = value * weight, channel C = weight
    payload = torch.cat((image * src_w.unsqueeze(1), src_w.unsqueeze(1)), dim=1)  # (N, C+1, H, W)
    payload = payload.permute(0, 2, 3, 1).reshape(n * h * w, c + 1)
    batch_offset = (torch.arange(n, device=flow.device) * (h * w)).view(n, 1, 1)
    out = torch.zeros(n * h * w, c + 1, device=flow.device, dtype=dtype)
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        xi, yi = x0 + dx, y0 + dy
        bw = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        # out-of-frame destinations get weight 0 and a valid dummy index (0) instead of a boolean
        # gather, so the number of scattered rows stays fixed (no host sync, friendly to CUDA graphs)
        idx = torch.where(inside, batch_offset + yi * w + xi, torch.zeros_like(xi)).reshape(-1)
        contrib = payload * (bw * inside).reshape(-1, 1)
        out = out.index_add(0, idx, contrib)
    out = out.view(n, h, w, c + 1).permute(0, 3, 1, 2)
    total = out[:, c:]
    warped = out[:, :c] / total.clamp_min(eps)
    warped = torch.where(total >= eps, warped, torch.zeros_like(warped))
    return warped.to(out_dtype), total.to(out_dtype)


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a pixel flow (N, 2, H, W) to ``size`` = (H', W') and rescale its vectors to the new pixel units.

    Uses the half-pixel convention of ``F.interpolate(..., align_corners=False)`` (the one of image
    resizing with antialiasing): vectors are scaled by ``W'/W`` and ``H'/H``.
    """
    h, w = flow.shape[2:]
    if (h, w) == tuple(size):
        return flow
    out = F.interpolate(flow, size=tuple(size), mode="bilinear", align_corners=False)
    return torch.cat((out[:, :1] * (size[1] / w), out[:, 1:] * (size[0] / h)), dim=1)
