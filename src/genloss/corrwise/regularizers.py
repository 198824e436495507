"""Flow regularisers of the CorrWise paper: magnitude, smoothness, edge-aware smoothness, out-of-frame penalty.

All take a pixel flow (N, 2, H, W) and return one value per image, shape [N]. Like the paper, the
magnitude and smoothness terms measure the flow in units of the image size (x divided by W - 1, y by
H - 1), so their weights do not depend on the resolution.

They only matter for training when the flow carries a gradient (``CorrWise(detach_flow=False)`` with a
differentiable estimator); of a detached flow they are constants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..transforms.grid import flow_to_grid


def normalized_flow(flow: torch.Tensor) -> torch.Tensor:
    """Flow in units of the frame size: x / (W - 1), y / (H - 1) (the paper's scaling)."""
    h, w = flow.shape[2:]
    return torch.cat((flow[:, :1] * (1.0 / max(w - 1, 1)), flow[:, 1:] * (1.0 / max(h - 1, 1))), dim=1)


def sobel(x: torch.Tensor, padding: str = "replicate") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel 3x3 Sobel derivatives (d/dx, d/dy) of (N, C, H, W), same size.

    Unnormalised kernels (``[1, 2, 1]`` smoothing, central difference), as the paper; positive d/dx
    for values increasing to the right. ``padding='replicate'`` (default) gives zero derivatives of a
    constant field everywhere; ``'zeros'`` is the paper code's (``conv2d(padding=1)``), which makes a
    constant flow look non-smooth along the image border (a penalty proportional to its magnitude).
    """
    if padding not in ("replicate", "zeros"):
        raise ValueError(f"padding must be 'replicate' or 'zeros', got {padding!r}")
    if padding == "replicate":
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    c = x.shape[1]
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype)
    k = torch.stack((kx, kx.t())).unsqueeze(1).repeat(c, 1, 1, 1)  # (2C, 1, 3, 3): per channel dx, dy
    g = F.conv2d(x, k, padding=0 if padding == "replicate" else 1, groups=c)
    return g[:, 0::2], g[:, 1::2]


def _vector_norm(x: torch.Tensor, norm: int) -> torch.Tensor:
    if norm not in (1, 2):
        raise ValueError(f"norm must be 1 or 2, got {norm}")
    return torch.linalg.vector_norm(x, ord=norm, dim=1)


def flow_magnitude(flow: torch.Tensor, norm: int = 1) -> torch.Tensor:
    """Mean L1 (``norm=1``) or L2 (``norm=2``) length of the size-normalised flow vectors, per image [N]."""
    return _vector_norm(normalized_flow(flow), norm).flatten(1).mean(1)


def flow_smoothness(flow: torch.Tensor, norm: int = 1, padding: str = "replicate") -> torch.Tensor:
    """Mean length of the Sobel derivatives of the size-normalised flow, averaged over x and y, per image [N].

    ``padding='zeros'`` reproduces the paper code's border term (see :func:`sobel`).
    """
    gx, gy = sobel(normalized_flow(flow), padding)
    return 0.5 * (_vector_norm(gx, norm).flatten(1).mean(1) + _vector_norm(gy, norm).flatten(1).mean(1))


def edge_aware_smoothness(flow: torch.Tensor, image: torch.Tensor, edge_constant: float = 150.0,
                          second_order: bool = False, padding: str = "replicate") -> torch.Tensor:
    """Flow smoothness down-weighted across image edges (the paper's ``smoothness``), per image [N].

    The derivative of the flow along x is weighted by ``exp(-edge_constant * mean_c |d image / dx|)``
    (and likewise for y), so the flow may change where the image does, and penalised with the robust
    ``sqrt(x^2 + 1e-6)``.

    Args:
        flow: (N, 2, H, W) pixel flow.
        image: (N, C, H, W) image the flow is defined on (the reference frame), same H, W.
        edge_constant: edge sensitivity (the paper's 150, for images in [0, 1] and Sobel derivatives).
        second_order: penalise second derivatives (d2/dx2, d2/dy2) instead of first ones.
        padding: ``'replicate'`` (default) or the paper code's ``'zeros'`` (see :func:`sobel`).
    """
    if image.shape[0] != flow.shape[0] or image.shape[2:] != flow.shape[2:]:
        raise ValueError(f"image {tuple(image.shape)} does not match flow {tuple(flow.shape)}")
    igx, igy = sobel(image, padding)
    wx = torch.exp(-(edge_constant * igx).abs().mean(1, keepdim=True))
    wy = torch.exp(-(edge_constant * igy).abs().mean(1, keepdim=True))
    fgx, fgy = sobel(normalized_flow(flow), padding)
    if second_order:
        fgx, _ = sobel(fgx, padding)
        _, fgy = sobel(fgy, padding)

    def robust(x: torch.Tensor) -> torch.Tensor:
        return (x.pow(2) + 1e-6).sqrt()

    return 0.5 * ((wx * robust(fgx)).flatten(1).mean(1) + (wy * robust(fgy)).flatten(1).mean(1))


def out_of_frame_penalty(flow: torch.Tensor) -> torch.Tensor:
    """Mean distance (in normalised [-1, 1] coordinates) by which ``p + flow[p]`` leaves the frame, per image [N].

    Zero for flows that stay inside the image; what the paper's ``edge_penalty`` describes ("the out of
    bounds flow loss").
    """
    grid = flow_to_grid(flow)  # (N, H, W, 2) in [-1, 1] inside the frame
    excess = (grid.abs() - 1).clamp_min(0).sum(-1)
    return 0.5 * excess.flatten(1).mean(1)


def large_flow_penalty(flow: torch.Tensor) -> torch.Tensor:
    """The paper code's ``edge_penalty``: mean of ``max(|flow| - 1, 0)`` over both components, in pixels, [N].

    Kept for reproducing published settings: it penalises every flow component longer than one
    pixel, not flow that leaves the frame (see :func:`out_of_frame_penalty`).
    """
    return (flow.abs() - 1).clamp_min(0).flatten(1).mean(1)
