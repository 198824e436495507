"""A batched coarse-to-fine optical flow estimator in plain PyTorch (no weights), registered as ``'coarse2fine'``.

Method: dense pyramidal Lucas-Kanade with iterative warping and confidence-weighted smoothing.

1. Both images are converted to greyscale (Rec. 601 luma) and put into a Gaussian-like pyramid
   (area downsampling by 2) down to a coarsest side of about ``min_size`` pixels.
2. From the coarsest level to the finest, the flow of the coarser level is upsampled (vectors
   doubled), then refined ``iterations`` times: image 2 and its gradients are backward-warped by
   the current flow, the brightness-constancy residual is linearised around it and the update is the
   least-squares solution over a Gaussian window (a 2 x 2 system per pixel, solved in closed form).
   The image gradients are the average of image 1's and warped image 2's, which makes the step
   symmetric and converges in fewer iterations than using one image's gradients. A small Tikhonov
   term keeps the update near zero where the window has no texture.
3. After every iteration the flow is smoothed by a Gaussian weighted with the smallest eigenvalue of
   the structure tensor (how well the window constrains both flow components), so untextured
   regions take the flow of their textured neighbours instead of noise, and outliers are damped
   (the role median filtering plays in classical variational methods).

Everything is a batched tensor operation (no Python loop over the batch or pixels), runs on CPU and
CUDA in the input's device, computes in float32 (float64 inputs in float64) and returns the flow in
the input dtype. The estimator has no parameters; it is differentiable (all ops are), but the
CorrWise wrapper calls it under ``torch.no_grad``.

The maximal motion it recovers is about ``2 ** (levels - 1) * 2`` pixels (Lucas-Kanade's range of
1-2 pixels at the coarsest level); with the default ``min_size=12`` that is about 8 px at 64 x 64,
16 px at 128 x 128 and 32 px at 256 x 256.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..._validation import full_precision
from ...transforms.color import as_grey
from ...transforms.grid import pixel_grid, sample
from ..warp import resize_flow
from ._learned import check_flow_pair
from .base import FlowEstimator

#: (N, 1 or 3, H, W) -> (N, 1, H, W) BT.601 luma (the weights of OpenCV's ``COLOR_RGB2GRAY`` as well)
to_grey = as_grey


def _gaussian_taps(sigma: float) -> list[float]:
    """Normalised 1-D Gaussian taps, radius ceil(2 sigma)."""
    radius = max(1, int(math.ceil(2.0 * sigma)))
    taps = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-radius, radius + 1)]
    total = sum(taps)
    return [t / total for t in taps]


@functools.lru_cache(maxsize=64)
def _taps_tensor(taps: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The taps as a tensor on ``device``, copied once per process: a host-to-device copy of a pageable list
    waits for the CUDA stream, which once per filter call would synchronise every iteration."""
    return torch.tensor(taps, dtype=dtype, device=device)


def _separable_filter(x: torch.Tensor, taps: list[float], conv: bool | None = None) -> torch.Tensor:
    """Filter every channel of (N, C, H, W) with the separable kernel ``taps (x) taps``, replicate padding.

    On the CPU a sum of shifted slices (2-3x faster than a depthwise ``conv2d``, which dominated the
    estimator's time there). On other devices two depthwise convolutions: 4 kernel launches instead
    of about 2 * len(taps), which matters where launches, not arithmetic, bound small images.
    ``conv`` forces one of the two (tests compare them on the CPU).
    """
    r = len(taps) // 2
    h, w = x.shape[2:]
    if conv if conv is not None else x.device.type != "cpu":
        c = x.shape[1]
        k = _taps_tensor(tuple(taps), x.device, x.dtype)
        p = F.pad(x, (r, r, r, r), mode="replicate")
        p = F.conv2d(p, k.view(1, 1, 1, -1).expand(c, 1, 1, len(taps)), groups=c)
        return F.conv2d(p, k.view(1, 1, -1, 1).expand(c, 1, len(taps), 1), groups=c)
    p = F.pad(x, (r, r, 0, 0), mode="replicate")
    y = p[..., :, 0:w] * taps[0]
    for i in range(1, len(taps)):
        y = y.add_(p[..., :, i:i + w], alpha=taps[i])
    p = F.pad(y, (0, 0, r, r), mode="replicate")
    z = p[..., 0:h, :] * taps[0]
    for i in range(1, len(taps)):
        z = z.add_(p[..., i:i + h, :], alpha=taps[i])
    return z


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences (N, 1, H, W) -> (gx, gy), one-sided at the border."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (p[:, :, 1:-1, 2:] - p[:, :, 1:-1, :-2])
    gy = 0.5 * (p[:, :, 2:, 1:-1] - p[:, :, :-2, 1:-1])
    return gx, gy


def _warp_border(x: torch.Tensor, flow: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Backward warp with border padding; ``base`` is the (1, 2, H, W) pixel grid, reused across iterations."""
    return sample(x, flow, padding_mode="border", base=base)


class CoarseToFineFlow(FlowEstimator):
    """Batched pyramidal Lucas-Kanade flow in PyTorch (see the module docstring for the method).

    Args:
        min_size: the coarsest pyramid level has a shorter side of at least this many pixels
            (levels are added while halving keeps it above ``min_size``).
        max_levels: upper bound on the number of pyramid levels.
        iterations: warping iterations per level (the coarsest level gets twice as many, where they
            are cheap and the flow is still far from the solution).
        window_sigma: standard deviation (pixels) of the Gaussian window of the least-squares fit.
        smooth_sigma: standard deviation of the confidence-weighted flow smoothing after every
            iteration (0 disables it).
        regularization: Tikhonov weight added to the structure tensor's diagonal (in squared
            intensity units per pixel, intensities in [0, 1]); larger values give smaller updates in
            weakly textured windows.
        symmetric_gradients: linearise with the average gradient of image 1 and warped image 2
            (default; more accurate on larger motion) instead of image 1's only (the structure tensor
            is then filtered once per level, which is faster).
        presmooth_sigma: standard deviation of a Gaussian blur of both greyscale images before the
            pyramid (0 disables it). The default 0.5 (3 taps) lowers the end-point error at 128 and
            256 px by 5-12% (same mean at 64) and the sub-pixel bias on bilinearly moved images.
        check_range: reject images clearly outside [0, 1].

    Defaults were chosen on translated, affinely and smoothly warped photographs (see
    ``benchmarks/corrwise.py``): 2 iterations per level with smoothing beat 3-6 without.

    Input: ``image1``, ``image2`` (N, C, H, W) float in [0, 1], C in {1, 3}, same shape and device.
    Output: (N, 2, H, W) flow in pixels (x, y), ``image1``'s pixel ``p`` <-> ``image2``'s ``p + flow``.
    """

    learned = False

    def __init__(self, min_size: int = 12, max_levels: int = 6, iterations: int = 2, window_sigma: float = 1.5,
                 smooth_sigma: float = 2.0, regularization: float = 1e-6, symmetric_gradients: bool = True,
                 presmooth_sigma: float = 0.5, check_range: bool = True) -> None:
        super().__init__()
        if min_size < 4:
            raise ValueError(f"min_size must be at least 4, got {min_size}")
        if max_levels < 1 or iterations < 1:
            raise ValueError(f"max_levels and iterations must be >= 1, got {max_levels} and {iterations}")
        if window_sigma <= 0 or smooth_sigma < 0 or regularization <= 0 or presmooth_sigma < 0:
            raise ValueError("window_sigma and regularization must be > 0, smooth_sigma and presmooth_sigma >= 0")
        self.min_size = int(min_size)
        self.max_levels = int(max_levels)
        self.iterations = int(iterations)
        self.window_sigma = float(window_sigma)
        self.smooth_sigma = float(smooth_sigma)
        self.regularization = float(regularization)
        self.symmetric_gradients = bool(symmetric_gradients)
        self.presmooth_sigma = float(presmooth_sigma)
        self.check_range = check_range

    def extra_repr(self) -> str:
        return (f"min_size={self.min_size}, max_levels={self.max_levels}, iterations={self.iterations}, "
                f"window_sigma={self.window_sigma}, smooth_sigma={self.smooth_sigma}, "
                f"presmooth_sigma={self.presmooth_sigma}")

    @staticmethod
    def _smooth(flow: torch.Tensor, sxx: torch.Tensor, sxy: torch.Tensor, syy: torch.Tensor,
                kernel: list[float]) -> torch.Tensor:
        """Gaussian smoothing of the flow weighted by the structure tensor's smallest eigenvalue."""
        confidence = 0.5 * (sxx + syy) - torch.sqrt(0.25 * (sxx - syy) ** 2 + sxy * sxy)
        c = confidence.unsqueeze(1).clamp_min(0) + 1e-9
        num = _separable_filter(torch.cat((flow * c, c), dim=1), kernel)
        return num[:, :2] / num[:, 2:]

    def num_levels(self, height: int, width: int) -> int:
        """Pyramid levels used for an image of this size (1 = no pyramid)."""
        levels, side = 1, min(height, width)
        while levels < self.max_levels and side // 2 >= self.min_size:
            side //= 2
            levels += 1
        return levels

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        a, b = check_flow_pair(image1, image2, check_range=self.check_range)
        out_dtype = a.dtype
        work = torch.float64 if a.dtype == torch.float64 else torch.float32
        n, _, h, w = a.shape
        # both images in one tensor: every pyramid op is one kernel call instead of two
        grey = to_grey(torch.cat((a, b)).to(work))
        with full_precision(grey.device.type):
            flow = self._estimate(grey, n)
        return flow.to(out_dtype)

    def _estimate(self, grey: torch.Tensor, n: int) -> torch.Tensor:
        h, w = grey.shape[2:]
        if self.presmooth_sigma > 0:
            # a slight blur of both images evens out the interpolation blur that separates a
            # sub-pixel-shifted image from its warp back (the bias that locks LK to whole pixels)
            grey = _separable_filter(grey, _gaussian_taps(self.presmooth_sigma))
        pyramid = [grey]
        for _ in range(self.num_levels(h, w) - 1):
            ph, pw = pyramid[-1].shape[2:]
            pyramid.append(F.interpolate(pyramid[-1], size=(ph // 2, pw // 2), mode="area"))
        dev, dt = grey.device, grey.dtype
        window = _gaussian_taps(self.window_sigma)
        smooth = _gaussian_taps(self.smooth_sigma) if self.smooth_sigma > 0 else None

        flow = torch.zeros(n, 2, *pyramid[-1].shape[2:], device=dev, dtype=dt)
        for level in range(len(pyramid) - 1, -1, -1):
            both = pyramid[level]
            lh, lw = both.shape[2:]
            if flow.shape[2:] != (lh, lw):
                # vectors rescaled to the finer pixels (python scalars: no host-to-device copy per level)
                flow = resize_flow(flow, (lh, lw))
            i1, i2 = both[:n], both[n:]
            g1x, g1y = _gradients(i1)
            if self.symmetric_gradients:
                g2x, g2y = _gradients(i2)
                stack2 = torch.cat((i2, g2x, g2y), dim=1)  # warped together: one grid_sample per iteration
            base = pixel_grid(lh, lw, device=dev, dtype=dt)
            iters = self.iterations * 2 if level == len(pyramid) - 1 else self.iterations
            if not self.symmetric_gradients:
                # image 1's gradients only: the structure tensor is filtered once per level and each
                # iteration filters only the two mismatch terms (2 instead of 5 channels)
                sxx, sxy, syy = _separable_filter(torch.cat((g1x * g1x, g1x * g1y, g1y * g1y), 1), window).unbind(1)
                sxx, syy = sxx + self.regularization, syy + self.regularization
                det = sxx * syy - sxy * sxy
            initial = flow
            for _ in range(iters):
                if self.symmetric_gradients:
                    warped = _warp_border(stack2, flow, base)
                    gx = 0.5 * (g1x + warped[:, 1:2])
                    gy = 0.5 * (g1y + warped[:, 2:3])
                    gt = warped[:, 0:1] - i1
                    terms = torch.cat((gx * gx, gx * gy, gy * gy, gx * gt, gy * gt), dim=1)
                    sxx, sxy, syy, sxt, syt = _separable_filter(terms, window).unbind(1)
                    sxx = sxx + self.regularization
                    syy = syy + self.regularization
                    det = sxx * syy - sxy * sxy
                else:
                    gt = _warp_border(i2, flow, base) - i1
                    sxt, syt = _separable_filter(torch.cat((g1x * gt, g1y * gt), 1), window).unbind(1)
                # the Tikhonov term pulls the level's *total* update towards zero (not each step's),
                # so poorly textured windows cannot drift away from the coarse estimate over iterations
                drift = flow - initial
                bx = sxt + self.regularization * drift[:, 0]
                by = syt + self.regularization * drift[:, 1]
                du = (sxy * by - syy * bx) / det
                dv = (sxy * bx - sxx * by) / det
                # a linearisation is only valid within about a pixel; bigger steps come from outliers
                step = torch.stack((du, dv), dim=1).clamp(-1.0, 1.0)
                flow = flow + step
                if smooth is not None:
                    flow = self._smooth(flow, sxx, sxy, syy, smooth)
        return flow
