"""Occlusion masks from forward-backward flow consistency (the test of UnFlow, Meister et al., AAAI 2018).

A pixel ``p`` of frame A with flow ``f_ab[p]`` into frame B is *visible* (not occluded) when following
the flow there and back returns to ``p``:

    |f_ab(p) + f_ba(p + f_ab(p))|^2  <  alpha1 * (|f_ab(p)|^2 + |f_ba(p + f_ab(p))|^2) + alpha2

``alpha1 = 0.01`` and ``alpha2 = 0.5`` are UnFlow's values (pixels squared). The tolerance grows with
the motion because flow errors do.
"""

from __future__ import annotations

import torch

from ..transforms.grid import pixel_grid
from .warp import backward_warp


def forward_backward_consistency(flow_ab: torch.Tensor, flow_ba: torch.Tensor, alpha1: float = 0.01,
                                 alpha2: float = 0.5, mark_out_of_frame: bool = False) -> torch.Tensor:
    """Visibility mask of frame A: 1 where ``flow_ab`` and ``flow_ba`` agree, 0 where A's pixel is occluded in B.

    Args:
        flow_ab: (N, 2, H, W) pixel flow on A's pixels into B.
        flow_ba: (N, 2, H, W) pixel flow on B's pixels into A.
        alpha1: relative tolerance (fraction of the squared flow magnitudes).
        alpha2: absolute tolerance in squared pixels.
        mark_out_of_frame: also mark as occluded the pixels whose flow leaves the frame of B (they
            have no correspondence; the consistency test alone reads the border of ``flow_ba`` there).

    Returns:
        (N, 1, H, W) float mask in {0, 1} (1 = visible), in ``flow_ab``'s dtype, without gradient.
    """
    if flow_ab.shape != flow_ba.shape or flow_ab.dim() != 4 or flow_ab.shape[1] != 2:
        raise ValueError(f"flow_ab and flow_ba must both have shape (N, 2, H, W), got {tuple(flow_ab.shape)} "
                         f"and {tuple(flow_ba.shape)}")
    if alpha1 < 0 or alpha2 < 0:
        raise ValueError(f"alpha1 and alpha2 must be >= 0, got {alpha1} and {alpha2}")
    with torch.no_grad():
        back = backward_warp(flow_ba, flow_ab, padding_mode="border")
        mismatch = (flow_ab + back).pow(2).sum(1, keepdim=True)
        bound = alpha1 * (flow_ab.pow(2).sum(1, keepdim=True) + back.pow(2).sum(1, keepdim=True)) + alpha2
        visible = mismatch < bound
        if mark_out_of_frame:
            visible = visible & inside_frame(flow_ab)
    return visible.to(flow_ab.dtype)


def inside_frame(flow: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) bool: where ``p + flow[p]`` lies inside the frame (within half a pixel of its border)."""
    _, _, h, w = flow.shape
    pos = pixel_grid(h, w, device=flow.device, dtype=flow.dtype) + flow
    x, y = pos[:, 0], pos[:, 1]
    return ((x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)).unsqueeze(1)
