"""SSIM and MS-SSIM losses (``1 - SSIM``), with an 11x11 Gaussian window (sigma 1.5).

``SSIM`` reproduces the Watson paper's code: zero-padded "same" convolution (the SSIM map has the
image's size), constants ``C1 = 0.01**2``, ``C2 = 0.03**2`` for a data range of 1, and the loss
per image is ``1 - mean(SSIM map)`` over channels and pixels.

``MS-SSIM`` (Wang et al. 2003, beyond the paper) follows the standard definition (as
``pytorch-msssim`` and ``piq``): valid convolutions, 5 scales with weights (0.0448, 0.2856,
0.3001, 0.2363, 0.1333), 2x2 average pooling between scales, contrast-structure terms clamped at
0 (ReLU) so the product is defined; the loss is ``1 - MS-SSIM``. It needs images of at least
(win - 1) * 2**(scales - 1) + 1 = 161 px per side with the default 5 scales; smaller images raise
an error naming the size (pass ``scales=`` to use fewer).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..transforms.color import as_grey
from .base import ImageLoss, grey_channels

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@functools.lru_cache(maxsize=8)
def _gauss_1d(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian window of ``size`` taps."""
    return _gauss_1d(size, sigma).to(dtype=dtype, device=device)


def _band_matrix(n: int, g: torch.Tensor, same: bool) -> torch.Tensor:
    """(n_out, n) matrix ``K`` with ``K @ v`` = 1-D correlation of ``v`` with ``g``.

    ``same=True``: zero padding, n_out = n (the paper's SSIM); ``False``: valid, n_out = n - k + 1.
    """
    k = g.numel()
    r = k // 2
    n_out = n if same else n - k + 1
    offset = -r if same else 0
    i = torch.arange(n_out, device=g.device).view(-1, 1)
    j = torch.arange(n, device=g.device).view(1, -1)
    tap = j - (i + offset)  # index into g
    inside = (tap >= 0) & (tap < k)
    return torch.where(inside, g[tap.clamp(0, k - 1)], torch.zeros((), dtype=g.dtype, device=g.device))


def _blur(x: torch.Tensor, g: torch.Tensor, same: bool) -> torch.Tensor:
    """Separable Gaussian filter of (..., H, W) as two matrix products with banded matrices.

    On CPU and GPU this is several times faster than a depthwise ``conv2d`` at these sizes (the
    band has only 11 non-zeros per row, but a dense GEMM on 64-256 px rows beats the conv kernels).
    """
    kh = _band_matrix(x.shape[-2], g, same)
    kw = _band_matrix(x.shape[-1], g, same)
    return kh @ x @ kw.t()


def ssim_maps(
    x: torch.Tensor,
    y: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    same_padding: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM map and contrast-structure map of two (N, C, H, W) images.

    All five local statistics are filtered together as one (5N, C, H, W) batch.
    Returns ``(ssim_map, cs_map)``, each (N, C, H', W') (H' = H with ``same_padding``).
    """
    g = gaussian_window(window, sigma, x.dtype, x.device)
    n = x.shape[0]
    stats = _blur(torch.cat([x, y, x * x, y * y, x * y], 0), g, same_padding)
    mu_x, mu_y, xx, yy, xy = stats.split(n, 0)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_xy = mu_x * mu_y
    mu_xx = mu_x * mu_x
    mu_yy = mu_y * mu_y
    cs = (2 * (xy - mu_xy) + c2) / ((xx - mu_xx) + (yy - mu_yy) + c2)
    lum = (2 * mu_xy + c1) / (mu_xx + mu_yy + c1)
    return lum * cs, cs


class SSIMLoss(ImageLoss):
    """``1 - SSIM`` per image, as the Watson paper's SSIM.

    Shapes: input, target (N, C, H, W) in [0, 1]; RGB: C = 3, LA: C in {1, 3} (3 is converted to
    grey). Output: scalar (``'sum'``/``'mean'`` over the batch) or [N] (``'none'``).

    Note: the paper's code returns ``1 - mean SSIM`` over the whole batch for its ``'sum'``
    reduction, which equals ``reduction='mean'`` here; on a batch of one all agree.
    """

    def __init__(self, *, colorspace: str = "RGB", reduction: str = "sum", window: int = 11, sigma: float = 1.5,
                 data_range: float = 1.0, value_range: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__(colorspace=colorspace, reduction=reduction, value_range=value_range)
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window must be a positive odd number, got {window}")
        self.channels = grey_channels(self.colorspace)
        self.window, self.sigma, self.data_range = window, sigma, data_range

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.colorspace == "LA":
            input, target = as_grey(input), as_grey(target)
        s, _ = ssim_maps(input, target, self.window, self.sigma, self.data_range, same_padding=True)
        return 1 - s.flatten(1).mean(1)


class MSSSIMLoss(ImageLoss):
    """``1 - MS-SSIM`` per image (multi-scale SSIM, Wang et al. 2003).

    Args:
        scales: number of scales (default 5, weights renormalised when fewer are used).
        window, sigma, data_range: as :class:`SSIMLoss`.

    Input: (N, C, H, W) in [0, 1] with H, W >= (window - 1) * 2**(scales - 1) + 1.
    """

    def __init__(self, *, colorspace: str = "RGB", reduction: str = "sum", scales: int = 5, window: int = 11,
                 sigma: float = 1.5, data_range: float = 1.0, value_range: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__(colorspace=colorspace, reduction=reduction, value_range=value_range)
        if not 1 <= scales <= len(MS_SSIM_WEIGHTS):
            raise ValueError(f"scales must be in 1..{len(MS_SSIM_WEIGHTS)}, got {scales}")
        self.channels = grey_channels(self.colorspace)
        self.scales, self.window, self.sigma, self.data_range = scales, window, sigma, data_range
        self.min_size = (window - 1) * 2 ** (scales - 1) + 1
        w = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
        self.register_buffer("weights", (w / w.sum()).float(), persistent=False)

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.colorspace == "LA":
            input, target = as_grey(input), as_grey(target)
        w = self.weights.to(input.dtype)
        values = []
        x, y = input, target
        for i in range(self.scales):
            s, cs = ssim_maps(x, y, self.window, self.sigma, self.data_range, same_padding=False)
            term = s if i == self.scales - 1 else cs
            values.append(F.relu(term.flatten(2).mean(2)))  # (N, C)
            if i < self.scales - 1:
                # odd sizes: pad like pytorch-msssim so no row/column is dropped
                pad = (x.shape[-2] % 2, x.shape[-1] % 2)
                x = F.avg_pool2d(x, 2, padding=pad)
                y = F.avg_pool2d(y, 2, padding=pad)
        stacked = torch.stack(values, 0)  # (S, N, C)
        ms = torch.prod(stacked.clamp_min(1e-12) ** w.view(-1, 1, 1), 0)  # clamp: finite grads at 0
        return 1 - ms.mean(1)

    def extra_repr(self) -> str:
        return f"scales={self.scales}, reduction={self.reduction!r}"


__all__ = ["MSSSIMLoss", "SSIMLoss", "gaussian_window", "ssim_maps"]
