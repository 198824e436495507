"""SSIM and MS-SSIM losses (``1 - SSIM``), with an 11x11 Gaussian window (sigma 1.5).

``SSIM`` reproduces the Watson paper's code: zero-padded "same" filtering (the SSIM map has the
image's size), constants ``C1 = 0.01**2``, ``C2 = 0.03**2`` for images in [0, 1] (``value_range``
maps any declared range onto [0, 1], so these are always the right constants), and the loss per
image is ``1 - mean(SSIM map)`` over channels and pixels.

``MS-SSIM`` (Wang et al. 2003, beyond the paper) is the standard definition, as ``pytorch-msssim``
and ``piq`` compute it: valid filtering, 5 scales with weights (0.0448, 0.2856, 0.3001, 0.2363,
0.1333), 2x2 average pooling between scales; per channel, a scale whose mean contrast-structure
term (the SSIM at the coarsest scale) is not positive contributes a factor 0, the weighted product
over scales is taken per channel and then averaged over channels; the loss is ``1 - MS-SSIM``.

The separable Gaussian filter is computed in one of two ways chosen by image size (same values up
to float rounding): two products with banded matrices for small images, where one dense GEMM per
axis is fastest, and for larger ones the same products over tiles of 32 rows/columns with their
overlapping borders, whose cost grows linearly with the pixel count (the full banded product
grows as H^2 W). Both are faster on CPU than the depthwise convolutions of the peers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..transforms.color import as_grey
from ._pieces import backward_in_pieces, forward_in_pieces
from .base import ImageLoss, custom_backward_applies, grey_channels

#: the standard MS-SSIM exponents of Wang et al. 2003, finest scale first
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: SSIM stabilising constants for a data range of 1 (K1 = 0.01, K2 = 0.03)
C1 = 0.01**2
C2 = 0.03**2
#: largest image side for which the filter is one banded matrix per axis (cost grows with the side);
#: above it the tiled banded filter is faster (crossover measured with benchmarks/ssim_scaling.py --filters)
BANDED_MAX_SIDE = 384
#: outputs per tile of the tiled filter
TILE = 32


def _check_window(window: object, sigma: object) -> tuple[int, float]:
    """A positive odd integer window and a positive finite sigma (bool and float windows are refused)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window!r}")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    return window, float(sigma)


def gaussian_window(
    size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Normalised 1-D Gaussian window of ``size`` taps (centred), shape (size,).

    Built on ``device`` from ``arange`` in float64, then cast: no host-to-device copy (which would
    synchronise a CUDA stream) and the same taps on every device.
    """
    x = torch.arange(size, dtype=torch.float64, device=device) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype)


def _band_matrix(n: int, g: torch.Tensor, same: bool) -> torch.Tensor:
    """(n_out, n) matrix ``K`` with ``K @ v`` = 1-D correlation of ``v`` with ``g``.

    ``same=True``: zero padding, n_out = n (the paper's SSIM); ``False``: valid, n_out = n - k + 1.
    """
    k = g.numel()
    n_out = n if same else n - k + 1
    offset = -(k // 2) if same else 0
    i = torch.arange(n_out, device=g.device).view(-1, 1)
    j = torch.arange(n, device=g.device).view(1, -1)
    tap = j - (i + offset)  # index into g
    inside = (tap >= 0) & (tap < k)
    # the clamp only keeps the gather in bounds; those entries are replaced by 0 through `inside`
    return torch.where(inside, g[tap.clamp(0, k - 1)], torch.zeros((), dtype=g.dtype, device=g.device))


def _blur_banded(x: torch.Tensor, g: torch.Tensor, same: bool) -> torch.Tensor:
    """Separable filter of (..., H, W) as ``K_H @ x @ K_W^T`` (O(H^2 W + H W^2): small images only)."""
    return _band_matrix(x.shape[-2], g, same) @ x @ _band_matrix(x.shape[-1], g, same).t()


def _filter_tiled(x: torch.Tensor, g: torch.Tensor, same: bool, dim: int) -> torch.Tensor:
    """1-D correlation along ``dim`` (-1 or -2) as tiles of TILE outputs, each a GEMM with one small band.

    Output tile ``t`` depends only on ``TILE + k - 1`` inputs, so the overlapping input windows
    (``unfold``) times one (TILE, TILE + k - 1) band matrix cost ``TILE + k - 1`` multiply-adds per
    pixel at any size, with the efficiency of a GEMM (a depthwise convolution is several times
    slower per multiply-add on CPU).
    """
    k, n = g.numel(), x.shape[dim]
    n_out = n if same else n - k + 1
    tiles = -(-n_out // TILE)
    span = TILE + k - 1
    left = k // 2 if same else 0
    right = tiles * TILE + k - 1 - n - left  # the last window must be complete; outputs past n_out are cut
    band = _band_matrix(span, g, same=False)  # (TILE, span)
    if dim == -1:
        windows = F.pad(x, (left, right)).unfold(-1, span, TILE)  # (..., H, tiles, span)
        return (windows @ band.t()).flatten(-2)[..., :n_out]
    windows = F.pad(x, (0, 0, left, right)).unfold(-2, span, TILE)  # (..., tiles, W, span)
    return (band @ windows.transpose(-1, -2)).flatten(-3, -2)[..., :n_out, :]  # (..., tiles * TILE, W)


def _blur_tiled(x: torch.Tensor, g: torch.Tensor, same: bool) -> torch.Tensor:
    """Separable filter of (..., H, W) with tiled band GEMMs (O(H W) for large images)."""
    return _filter_tiled(_filter_tiled(x, g, same, -2), g, same, -1)


def gaussian_blur(x: torch.Tensor, g: torch.Tensor, same: bool) -> torch.Tensor:
    """Separable correlation of a (..., H, W) batch with the 1-D window ``g`` along H and W.

    ``same=True`` zero-pads (output (..., H, W)); ``False`` is valid (output H - k + 1, W - k + 1).
    Both implementations are matrix products (no convolution kernels, whose TF32 default on CUDA
    would round the local statistics), chosen from the static shape, so fixed under ``torch.compile``.
    """
    if max(x.shape[-2], x.shape[-1]) <= BANDED_MAX_SIDE:
        return _blur_banded(x, g, same)
    return _blur_tiled(x, g, same)


def _ssim_parts(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, same_padding: bool):
    """``(mu_x, mu_y, lum, cs, K', L')`` of two (N, C, H, W) images: the filtered means, the luminance
    and contrast-structure maps and their denominators (see :func:`_ssim_terms`).

    All five local statistics are filtered together as one (5N, C, H, W) batch.
    """
    n = x.shape[0]
    mu_x, mu_y, xx, yy, xy = gaussian_blur(torch.cat([x, y, x * x, y * y, x * y], 0), g, same_padding).split(n, 0)
    mu_xy = mu_x * mu_y
    mu_xx = mu_x * mu_x
    mu_yy = mu_y * mu_y
    k_den = (xx - mu_xx) + (yy - mu_yy) + C2
    l_den = mu_xx + mu_yy + C1
    return mu_x, mu_y, (2 * mu_xy + C1) / l_den, (2 * (xy - mu_xy) + C2) / k_den, k_den, l_den


def ssim_maps(
    x: torch.Tensor,
    y: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    same_padding: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM map and contrast-structure map of two (N, C, H, W) images in [0, 1].

    All five local statistics are filtered together as one (5N, C, H, W) batch.
    Returns ``(ssim_map, cs_map)``, each (N, C, H', W') (H' = H with ``same_padding``, else H - window + 1).
    """
    g = gaussian_window(window, sigma, x.dtype, x.device)
    _, _, lum, cs, _, _ = _ssim_parts(x, y, g, same_padding)
    return lum * cs, cs


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The "same"-padded SSIM map S and its partial derivatives with respect to the filtered statistics.

    Returns ``(S, dS/dmu_x, dS/dsigma_xx, dS/dsigma_xy)``, each (N, C, H, W), where ``mu_x = G x``,
    ``sigma_xx = G x^2`` and ``sigma_xy = G (x y)`` are the Gaussian-filtered moments (the
    variances and covariance follow from them). With ``lum = L / L'`` and ``cs = K / K'``
    (``L' = mu_x^2 + mu_y^2 + C1``, ``K' = sigma_xx - mu_x^2 + sigma_yy - mu_y^2 + C2``):
    ``dS/dsigma_xy = 2 lum / K'``, ``dS/dsigma_xx = -S / K'`` and
    ``dS/dmu_x = 2 cs (mu_y - lum mu_x) / L' + 2 lum (cs mu_x - mu_y) / K'``.
    Differentiable (the plain ops), so a double backward can run through it.
    """
    mu_x, mu_y, lum, cs, k_den, l_den = _ssim_parts(x, y, g, True)
    s = lum * cs
    d_mu = 2 * cs * (mu_y - lum * mu_x) / l_den + 2 * lum * (cs * mu_x - mu_y) / k_den
    return s, d_mu, -s / k_den, 2 * lum / k_den


def _ssim_terms_in_place(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_ssim_terms` without a graph, in place: ``(1 - mean(S) per image, dS/dmu_x, dS/dsigma_xx, dS/dsigma_xy)``.

    The same formulas, with each map written over one that is no longer needed. Out of place, the
    temporaries raised the peak memory above autograd's (102 against 90 MB for a forward + backward
    of 128x3x64x64, ``genloss bench --memory``; 90 MB in place), and on the CPU fresh memory is paid
    in page faults on every call.
    """
    n = x.shape[0]
    stats = gaussian_blur(torch.cat([x, y, x * x, y * y, x * y], 0), g, True)
    mu_x, mu_y, k_den, l_den, cs = stats.split(n, 0)  # filled below; they start as G x, G y, G x², G y², G xy
    mu_xy = mu_x * mu_y
    mu_xx = mu_x * mu_x
    mu_yy = mu_y * mu_y
    # the variances as (G x² - mu_x²) + (G y² - mu_y²), in the plain form's order and without a fused
    # multiply-subtract: where they vanish (flat regions, window 1) they come out exactly 0, as there
    k_den.sub_(mu_xx).add_(l_den.sub_(mu_yy)).add_(C2)
    torch.add(mu_xx, mu_yy, out=l_den).add_(C1)
    cs.sub_(mu_xy).mul_(2).add_(C2).div_(k_den)
    lum = mu_xy.mul_(2).add_(C1).div_(l_den)
    s = lum * cs
    loss = 1 - s.flatten(1).mean(1)
    d_xy = torch.div(lum, k_den, out=mu_xx).mul_(2)
    d_mu = torch.addcmul(mu_y, lum, mu_x, value=-1, out=mu_yy).mul_(cs).div_(l_den)
    d_mu.add_(torch.mul(cs, mu_x, out=l_den).sub_(mu_y).mul_(lum).div_(k_den)).mul_(2)
    return loss, d_mu, s.div_(k_den).neg_(), d_xy


def _ssim_input_gradient(x, y, g, d_mu, d_xx, d_xy, grad_s, out=None):
    """Gradient of ``sum(grad_s * S)`` with respect to x, for a per-image ``grad_s`` (N, 1, 1, 1).

    The statistics are linear in ``x``, ``x^2`` and ``x y`` through the filter G, and G is its own
    transpose (a symmetric window with zero "same" padding), so the gradient is
    ``grad_s (G dS/dmu_x + 2 x G dS/dsigma_xx + y G dS/dsigma_xy)``: one filter of three maps.
    ``out``: a tensor of x's shape for the result (not under batched gradients or create_graph).
    """
    n = x.shape[0]
    a, b, c = gaussian_blur(torch.cat([d_mu, d_xx, d_xy], 0), g, True).split(n, 0)
    if torch.is_grad_enabled():  # create_graph
        return grad_s * (a + 2 * x * b + y * c)
    if out is not None:
        return torch.addcmul(a, x, b, value=2, out=out).addcmul_(y, c).mul_(grad_s)
    # (grad_s last and out of place: under batched gradients, is_grads_batched, it is the batched tensor)
    return torch.addcmul(a, x, b, value=2).addcmul_(y, c) * grad_s


class _SSIMFixedTarget(torch.autograd.Function):
    """``1 - mean(S)`` per image (N,) with the gradient for the input only (the target needs none).

    Autograd would keep the five filtered statistics and a dozen intermediate maps, and run the
    filter's transpose on five maps; here forward keeps the three partial derivatives of S and
    backward filters three maps (see :func:`_ssim_input_gradient`). Under ``create_graph=True``
    the backward is recomputed from differentiable ops, so second derivatives stay correct. On the
    CPU the batch is computed in pieces (see ``_pieces``): 0.79x the time at 128x3x64x64.
    """

    @staticmethod
    def forward(ctx, x, y, g):
        def piece(x, y, scratch):
            loss, d_mu, d_xx, d_xy = _ssim_terms_in_place(x, y, g)
            return loss, (d_mu, d_xx, d_xy), None

        return forward_in_pieces(ctx, x, y, True, piece, keep=(x, y), shared=(g,))

    @staticmethod
    def backward(ctx, grad):
        def piece(grad, saved, out):
            g, x, y, d_mu, d_xx, d_xy = saved
            grad_s = grad.view(-1, 1, 1, 1) / -x[0].numel()
            if torch.is_grad_enabled():  # create_graph: rebuild the partials with a graph through x
                _, d_mu, d_xx, d_xy = _ssim_terms(x, y, g)
            return _ssim_input_gradient(x, y, g, d_mu, d_xx, d_xy, grad_s, out)

        return backward_in_pieces(ctx, grad, piece), None, None


def _positive_power(t: torch.Tensor, w: float) -> torch.Tensor:
    """``max(t, 0) ** w`` with a zero (not NaN) gradient where ``t <= 0``.

    ``relu(t) ** w`` has the derivative ``0 * inf = NaN`` at 0, and clamping to a small positive
    value instead gives a wrong value (``1e-12 ** 0.0448 = 0.29``), so the base is replaced by 1
    where ``t <= 0`` and the result by 0 (the double ``where`` keeps both branches finite).
    """
    positive = t > 0
    base = torch.where(positive, t, torch.ones_like(t))
    return torch.where(positive, base**w, torch.zeros_like(t))


class SSIMLoss(ImageLoss):
    """``1 - SSIM`` per image, as the Watson paper's SSIM (Gaussian window, zero-padded "same" filter).

    The SSIM map of Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5) and the constants
    ``C1 = 0.01**2``, ``C2 = 0.03**2`` for a data range of 1 (images are mapped from ``value_range``
    onto [0, 1] first, so there is no separate data range), averaged over channels and pixels.

    Note: the paper's code returns ``1 - mean SSIM`` over the whole batch for its ``'sum'``
    reduction, which equals ``reduction='mean'`` here; on a batch of one all agree.

    Args:
        colorspace: ``'RGB'`` (3 channels) or ``'LA'`` (greyscale: 1 channel, or 3 channels converted
            with the BT.601 luma weights).
        reduction: ``'sum'`` (default) | ``'mean'`` | ``'none'``, over the batch.
        window: side of the Gaussian window, a positive odd integer (default 11).
        sigma: standard deviation of the Gaussian window in pixels, > 0 (default 1.5).
        value_range: the range ``(lo, hi)`` of the input images; mapped exactly onto [0, 1].

    Shape:
        - input, target: (N, C, H, W), C = 3 (RGB) or C in {1, 3} (LA); any H, W >= 1.
        - output: scalar, or (N,) with ``reduction='none'``.

    Returns:
        The loss ``1 - SSIM``, in [0, 2] per image (0 for identical images); float32, or float64 for
        float64 input (16-bit input is computed and returned in float32).

    Raises:
        TypeError: non-tensor or integer input.
        ValueError: wrong rank, shapes or channel count, NaN/Inf, values outside ``value_range``;
            at construction, a window that is not a positive odd integer or a sigma that is not > 0.

    References:
        Wang, Bovik, Sheikh, Simoncelli, *Image Quality Assessment: From Error Visibility to
        Structural Similarity*, IEEE TIP 2004. Czolbe et al., *A Loss Function for Generative Neural
        Networks Based on Watson's Perceptual Model*, NeurIPS 2020 (baseline).

    Example:
        >>> import torch
        >>> from genloss import SSIMLoss
        >>> x = torch.rand(2, 3, 32, 32)
        >>> loss = SSIMLoss(reduction="none")
        >>> loss(x, x)
        tensor([0., 0.])
        >>> loss(x, torch.rand(2, 3, 32, 32)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        *,
        colorspace: str = "RGB",
        reduction: str = "sum",
        window: int = 11,
        sigma: float = 1.5,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__(colorspace=colorspace, reduction=reduction, value_range=value_range)
        self.window, self.sigma = _check_window(window, sigma)
        self.channels = grey_channels(self.colorspace)

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.colorspace == "LA":
            input, target = as_grey(input), as_grey(target)
        if custom_backward_applies(input, target):
            g = gaussian_window(self.window, self.sigma, input.dtype, input.device)
            return _SSIMFixedTarget.apply(input, target, g)
        s, _ = ssim_maps(input, target, self.window, self.sigma, same_padding=True)
        return 1 - s.flatten(1).mean(1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window={self.window}, sigma={self.sigma}"


class MSSSIMLoss(ImageLoss):
    """``1 - MS-SSIM`` per image: the standard multi-scale SSIM of Wang et al. (2003).

    At each of ``scales`` scales (2x2 average pooling in between, odd sides padded as
    pytorch-msssim does) the mean contrast-structure term per channel is computed with a valid
    Gaussian filter; the coarsest scale uses the full SSIM. Per channel,
    ``MS-SSIM = prod_s max(term_s, 0) ** w_s`` (a scale whose term is not positive makes it 0, as
    in pytorch-msssim and piq), then the mean over channels. Identical to ``pytorch_msssim.ms_ssim``
    (``data_range=1``) and ``piq.multi_scale_ssim`` with their default windows.

    Args:
        colorspace: ``'RGB'`` (3 channels) or ``'LA'`` (greyscale: 1 channel, or 3 channels converted
            with the BT.601 luma weights).
        reduction: ``'sum'`` (default) | ``'mean'`` | ``'none'``, over the batch.
        scales: number of scales, 1..5 (default 5: the standard weights 0.0448, 0.2856, 0.3001,
            0.2363, 0.1333). With fewer scales the first ``scales`` weights are used, renormalised
            to sum to 1.
        window: side of the Gaussian window, a positive odd integer (default 11).
        sigma: standard deviation of the Gaussian window in pixels, > 0 (default 1.5).
        value_range: the range ``(lo, hi)`` of the input images; mapped exactly onto [0, 1].

    Shape:
        - input, target: (N, C, H, W), C = 3 (RGB) or C in {1, 3} (LA), with
          H, W >= ``(window - 1) * 2**(scales - 1) + 1`` (161 px with the defaults).
        - output: scalar, or (N,) with ``reduction='none'``.

    Returns:
        The loss ``1 - MS-SSIM``, in [0, 1] per image (0 for identical images, 1 when a scale has no
        positive structural similarity); float32, or float64 for float64 input.

    Raises:
        TypeError: non-tensor or integer input.
        ValueError: wrong rank, shapes or channel count, images smaller than the minimum size,
            NaN/Inf, values outside ``value_range``; at construction, ``scales`` not an integer in
            1..5, a window that is not a positive odd integer or a sigma that is not > 0.

    References:
        Wang, Simoncelli, Bovik, *Multiscale Structural Similarity for Image Quality Assessment*,
        Asilomar 2003. Wang et al., IEEE TIP 2004 (SSIM). Czolbe et al., NeurIPS 2020 (the SSIM
        baseline it extends).

    Example:
        >>> import torch
        >>> from genloss import MSSSIMLoss
        >>> x = torch.rand(1, 3, 161, 161)
        >>> MSSSIMLoss()(x, x).abs() < 1e-5  # 0 up to float32 rounding
        tensor(True)
        >>> MSSSIMLoss(scales=3, reduction="none")(torch.rand(2, 3, 41, 41), torch.rand(2, 3, 41, 41)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        *,
        colorspace: str = "RGB",
        reduction: str = "sum",
        scales: int = 5,
        window: int = 11,
        sigma: float = 1.5,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__(colorspace=colorspace, reduction=reduction, value_range=value_range)
        if isinstance(scales, bool) or not isinstance(scales, int) or not 1 <= scales <= len(MS_SSIM_WEIGHTS):
            raise ValueError(f"scales must be an integer in 1..{len(MS_SSIM_WEIGHTS)}, got {scales!r}")
        self.window, self.sigma = _check_window(window, sigma)
        self.scales = scales
        self.channels = grey_channels(self.colorspace)
        self.min_size = (self.window - 1) * 2 ** (scales - 1) + 1
        # Python floats, not a buffer: .half()/.float() on the module cannot round them, and the
        # exponents of the standard 5 scales are used unchanged (they sum to 1.0001, not 1)
        w = MS_SSIM_WEIGHTS[:scales]
        self.weights: tuple[float, ...] = w if scales == len(MS_SSIM_WEIGHTS) else tuple(v / sum(w) for v in w)

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.colorspace == "LA":
            input, target = as_grey(input), as_grey(target)
        ms = None
        x, y = input, target
        for i, w in enumerate(self.weights):
            s, cs = ssim_maps(x, y, self.window, self.sigma, same_padding=False)
            term = s if i == self.scales - 1 else cs
            factor = _positive_power(term.flatten(2).mean(2), w)  # (N, C)
            ms = factor if ms is None else ms * factor
            if i < self.scales - 1:
                # odd sides: pad like pytorch-msssim so no row/column is dropped
                pad = (x.shape[-2] % 2, x.shape[-1] % 2)
                x = F.avg_pool2d(x, 2, padding=pad)
                y = F.avg_pool2d(y, 2, padding=pad)
        return 1 - ms.mean(1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scales={self.scales}, window={self.window}, sigma={self.sigma}"


__all__ = ["MSSSIMLoss", "SSIMLoss", "gaussian_blur", "gaussian_window", "ssim_maps"]
