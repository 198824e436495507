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

Everything is a batched tensor operation (no Python loop over pixels; on the CPU a large pyramid
level is solved a few images at a time, see ``_CPU_CHUNK_PIXELS``), runs on CPU and CUDA in the
input's device, computes in float32 (float64 inputs in float64) and returns the flow in the input
dtype. On the CPU the filters and resamplings along image axes of up to 128 pixels are small matrix
products (see ``_CPU_MATRIX_MAX``). The estimator has no parameters; it is differentiable (all ops
are), and works under ``torch.func`` transforms and ``torch.compile``, but the CorrWise wrapper
calls it under ``torch.no_grad``.

The maximal motion it recovers is about ``2 ** (levels - 1) * 2`` pixels (Lucas-Kanade's range of
1-2 pixels at the coarsest level); with the default ``min_size=12`` that is about 8 px at 64 x 64,
16 px at 128 x 128 and 32 px at 256 x 256.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..._validation import full_precision
from ...transforms.color import LUMA_WEIGHTS, as_grey
from ...transforms.grid import add_flow, pixel_grid, pixel_to_normalized
from ..warp import resize_flow
from ._learned import check_flow_pair
from .base import FlowEstimator

#: (N, 1 or 3, H, W) -> (N, 1, H, W) BT.601 luma (the weights of OpenCV's ``COLOR_RGB2GRAY`` as well)
to_grey = as_grey


#: the largest Gaussian standard deviation (pixels) of coarse2fine's options: 4001 taps (an infinite or
#: huge sigma would build a Python list of billions of taps)
MAX_SIGMA = 1000.0


def _sigma_option(name: str, *, zero_disables: bool) -> property:
    """A Gaussian's standard deviation (pixels) whose taps are computed when it is set.

    Not while ``torch.compile`` traces: with ``dynamic=True`` a float option is traced as a symbolic
    float, whose Python math (``math.exp`` of a symbolic power) Dynamo cannot evaluate. Setting the
    option later (``flow.window_sigma = 2.0``) recomputes the taps, so they never go stale.
    """

    def fget(self) -> float:
        return getattr(self, "_" + name)

    def fset(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number of pixels, got {value!r}")
        value = float(value)
        if not (value > 0 or (zero_disables and value == 0)) or value > MAX_SIGMA:
            raise ValueError(f"{name} must be {'>= 0' if zero_disables else '> 0'} and at most {MAX_SIGMA:g} px "
                             f"(a window of 2 * ceil(2 sigma) + 1 taps), got {value}")
        setattr(self, "_" + name, value)
        setattr(self, f"_{name}_taps", _gaussian_taps(value) if value > 0 else None)

    return property(fget, fset, doc=f"{name} (pixels); 0 disables the filter" if zero_disables else f"{name} (pixels)")


def _gaussian_taps(sigma: float) -> tuple[float, ...]:
    """Normalised 1-D Gaussian taps, radius ceil(2 sigma)."""
    radius = max(1, int(math.ceil(2.0 * sigma)))
    taps = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-radius, radius + 1)]
    total = sum(taps)
    return tuple(t / total for t in taps)


# -- separable linear operators on the CPU ----------------------------------------------------------
# Every linear step along an image axis of up to _CPU_MATRIX_MAX pixels (the Gaussian windows, the
# central differences, the area downsampling of the pyramid, the bilinear upsampling of the flow) is
# one matrix product with a small (n_out, n_in) matrix there, the replicate padding folded into its
# border entries. A 64-wide product does ~10x the multiply-adds of a 7-tap sum of shifted slices, but
# in one pass over memory and into one output instead of a padded copy and a pass per tap: 2-3x
# faster than slices at 32-64 pixels (themselves 2-3x faster than a depthwise conv2d on the CPU), as
# fast at 128, 2x slower at 256 (the multiply-adds grow with the axis), where slices are used. The
# matrices are built in double precision from Python floats and cached per size, device and dtype.

#: the longest image axis (pixels) along which the CPU applies a linear operator as a dense matrix
_CPU_MATRIX_MAX = 128


def _filter_weights(n: int, taps: tuple[float, ...]) -> list[list[float]]:
    """Rows of the (n, n) 1-D filter ``taps`` (centred) with replicate padding: taps past an edge fall on it."""
    r = len(taps) // 2
    rows = [[0.0] * n for _ in range(n)]
    for o, row in enumerate(rows):
        for k, t in enumerate(taps):
            row[min(max(o + k - r, 0), n - 1)] += t
    return rows


def _difference_weights(n: int, gain: float) -> list[list[float]]:
    """Rows of (n, n) central differences ``gain (x[o + 1] - x[o - 1]) / 2``, one-sided at the edges (replicate)."""
    rows = [[0.0] * n for _ in range(n)]
    for o, row in enumerate(rows):
        row[min(o + 1, n - 1)] += 0.5 * gain
        row[max(o - 1, 0)] -= 0.5 * gain
    return rows


def _area_weights(n_out: int, n_in: int) -> list[list[float]]:
    """Rows of ``F.interpolate(mode='area')`` (adaptive average pooling): output ``o`` averages
    inputs ``floor(o n_in / n_out)`` to ``ceil((o + 1) n_in / n_out) - 1``."""
    rows = [[0.0] * n_in for _ in range(n_out)]
    for o, row in enumerate(rows):
        start, end = (o * n_in) // n_out, -(-((o + 1) * n_in) // n_out)
        for i in range(start, end):
            row[i] = 1.0 / (end - start)
    return rows


def _bilinear_weights(n_out: int, n_in: int, gain: float) -> list[list[float]]:
    """Rows of ``gain`` times ``F.interpolate(mode='bilinear', align_corners=False)`` along one axis
    (half-pixel centres; sources left of pixel 0 clamp to it, the last pixel repeats)."""
    rows = [[0.0] * n_in for _ in range(n_out)]
    for o, row in enumerate(rows):
        src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(src), n_in - 1)
        frac = min(src - i0, 1.0)
        row[i0] += gain * (1.0 - frac)
        row[min(i0 + 1, n_in - 1)] += gain * frac
    return rows


def _build_matrix(kind: str, n_out: int, n_in: int, param: tuple[float, ...], device: torch.device,
                  dtype: torch.dtype) -> torch.Tensor:
    if kind == "filter":
        rows = _filter_weights(n_in, param)
    elif kind == "difference":
        rows = _difference_weights(n_in, param[0])
    elif kind == "area":
        rows = _area_weights(n_out, n_in)
    elif kind == "bilinear":
        rows = _bilinear_weights(n_out, n_in, param[0])
    else:  # 'rows': the matrix is param, row-major
        rows = [list(param[i * n_in:(i + 1) * n_in]) for i in range(n_out)]
    return torch.tensor(rows, dtype=dtype, device=device)


@functools.lru_cache(maxsize=128)
def _cached_matrix(kind: str, n_out: int, n_in: int, param: tuple[float, ...], device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
    # a normal tensor even when first asked for under torch.inference_mode: a later call with
    # gradients may save it for the backward pass, which an inference tensor cannot be
    with torch.inference_mode(False):
        return _build_matrix(kind, n_out, n_in, param, device, dtype)


def _cacheable(like: torch.Tensor) -> bool:
    """Whether a constant made for computing with ``like`` may be taken from (and put into) a cache.

    Not while torch.compile traces (dynamo would trace through the cache anyway, and warn; a constant
    built in the graph is as good), and not for tensor subclasses such as the FakeTensors of
    ``make_fx`` or ``FakeTensorMode``: a constant built there holds no data and would be returned to
    later real calls, and a real cached one cannot enter their computation.
    """
    return type(like) is torch.Tensor and not torch.compiler.is_compiling()


def _matrix(kind: str, n_out: int, n_in: int, param: tuple[float, ...], like: torch.Tensor,
            dtype: torch.dtype | None = None) -> torch.Tensor:
    """The (n_out, n_in) operator ``kind``: 'filter' (taps ``param``), 'difference' and 'bilinear' (gain
    ``param[0]``), 'area', or 'rows' (``param`` itself, row-major), on ``like``'s device, in ``dtype``
    (default ``like``'s). Cached when :func:`_cacheable`.
    """
    dtype = dtype or like.dtype
    if not _cacheable(like):
        return _build_matrix(kind, n_out, n_in, param, like.device, dtype)
    return _cached_matrix(kind, n_out, n_in, param, like.device, dtype)


def _along_w(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Apply the (W', W) operator ``m`` along the last axis of (N, C, H, W): one matrix product."""
    n, c, h, w = x.shape
    return (x.reshape(n * c * h, w) @ m.t()).view(n, c, h, m.shape[0])


def _along_h(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Apply the (H', H) operator ``m`` along the rows of (N, C, H, W): one batched product, ``m`` shared."""
    n, c, h, w = x.shape
    return torch.matmul(m, x.reshape(n * c, h, w)).view(n, c, m.shape[0], w)


def _separable_filter(x: torch.Tensor, taps: Sequence[float], conv: bool | None = None) -> torch.Tensor:
    """Filter every channel of (N, C, H, W) with the separable kernel ``taps (x) taps``, replicate padding.

    On the CPU a matrix product or a sum of shifted slices per axis (see above). On other devices two
    depthwise convolutions: 4 kernel launches, where launches, not arithmetic, bound small images.
    ``conv`` forces the convolutions (True) or the CPU path (False); tests compare them on the CPU.
    """
    taps = tuple(taps)
    if conv if conv is not None else x.device.type != "cpu":
        r, c = len(taps) // 2, x.shape[1]
        # cached on the device: a host-to-device copy of a pageable list waits for the CUDA stream,
        # which once per filter call would synchronise every iteration
        k = _matrix("rows", 1, len(taps), taps, x).view(-1)
        p = F.pad(x, (r, r, r, r), mode="replicate")
        p = F.conv2d(p, k.view(1, 1, 1, -1).expand(c, 1, 1, len(taps)), groups=c)
        return F.conv2d(p, k.view(1, 1, -1, 1).expand(c, 1, len(taps), 1), groups=c)
    y = _filter_axis(x, taps, 3)
    del x  # an argument passed as a temporary is released before the output is allocated (less memory)
    return _filter_axis(y, taps, 2)


def _filter_axis(x: torch.Tensor, taps: tuple[float, ...], axis: int) -> torch.Tensor:
    """The 1-D filter ``taps`` along ``axis`` (2: H, 3: W) of (N, C, H, W) on the CPU, replicate padding."""
    n = x.shape[axis]
    if n <= _CPU_MATRIX_MAX:
        m = _matrix("filter", n, n, taps, x)
        return _along_w(x, m) if axis == 3 else _along_h(x, m)
    r = len(taps) // 2
    p = F.pad(x, (r, r, 0, 0) if axis == 3 else (0, 0, r, r), mode="replicate")
    y = p.narrow(axis, 0, n) * taps[0]
    for i in range(1, len(taps)):
        y.add_(p.narrow(axis, i, n), alpha=taps[i])
    return y


def _gradients(x: torch.Tensor, gain: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``gain`` times the central differences (N, 1, H, W) -> (gx, gy), one-sided at the border."""
    h, w = x.shape[2:]
    if x.device.type == "cpu" and max(h, w) <= _CPU_MATRIX_MAX:
        # entries +-gain/2 (powers of two in use): the products are exact and the sums add exact
        # zeros, so this is bit for bit the slice formula below
        return (_along_w(x, _matrix("difference", w, w, (gain,), x)),
                _along_h(x, _matrix("difference", h, h, (gain,), x)))
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = (0.5 * gain) * (p[:, :, 1:-1, 2:] - p[:, :, 1:-1, :-2])
    gy = (0.5 * gain) * (p[:, :, 2:, 1:-1] - p[:, :, :-2, 1:-1])
    return gx, gy


def _grey_pair(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(2N, 1, H, W): the BT.601 luma of ``a`` then of ``b`` (N, 1 or 3, H, W), in ``dtype``.

    On the CPU one small matrix product per image (the luma weights times its RGB planes) instead of
    concatenating the RGB pair and five elementwise passes.
    """
    a, b = a.to(dtype), b.to(dtype)
    if a.shape[1] == 1:
        return torch.cat((a, b))
    if a.device.type != "cpu":
        return to_grey(torch.cat((a, b)))  # both images at once: one kernel per operation
    n, _, h, w = a.shape
    luma = _matrix("rows", 1, 3, LUMA_WEIGHTS, a, dtype)
    return torch.cat((torch.matmul(luma, a.reshape(n, 3, h * w)),
                      torch.matmul(luma, b.reshape(n, 3, h * w)))).view(2 * n, 1, h, w)


def _downsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area downsampling of (N, C, H, W) to ``size`` (a pyramid level)."""
    h, w = x.shape[2:]
    if x.device.type != "cpu" or max(h, w) > _CPU_MATRIX_MAX:
        return F.interpolate(x, size=size, mode="area")
    y = _along_w(x, _matrix("area", size[1], w, (), x))
    return _along_h(y, _matrix("area", size[0], h, (), x))


def _upsample_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """:func:`resize_flow` (bilinear, vectors rescaled to the new pixels) to the next pyramid level."""
    h, w = flow.shape[2:]
    sx, sy = size[1] / w, size[0] / h
    if flow.device.type != "cpu" or sx != sy or max(size) > _CPU_MATRIX_MAX:
        return resize_flow(flow, size)
    # equal scales (always, for pyramids of square images): the vector scaling is folded into the matrix
    y = _along_w(flow, _matrix("bilinear", size[1], w, (sx,), flow))
    return _along_h(y, _matrix("bilinear", size[0], h, (1.0,), flow))


def _build_grid(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return pixel_to_normalized(pixel_grid(height, width, device=device, dtype=dtype), (height, width))


@functools.lru_cache(maxsize=16)
def _cached_grid(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    with torch.inference_mode(False):  # see _cached_matrix
        return _build_grid(height, width, device, dtype)


def _normalized_grid(like: torch.Tensor) -> torch.Tensor:
    """The (1, H, W, 2) ``grid_sample`` grid of the pixel centres (``align_corners=True``) of ``like``
    (N, C, H, W), on its device and in its dtype, for :func:`_warp_border`.

    Cached up to 256 x 256 pixels (at most 16 grids of 0.5 MB in float32; built on the device, so no
    host copy) when :func:`_cacheable`.
    """
    height, width = like.shape[2:]
    if not _cacheable(like) or height * width > 1 << 16:
        return _build_grid(height, width, like.device, like.dtype)
    return _cached_grid(height, width, like.device, like.dtype)


def _warp_border(x: torch.Tensor, flow: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Backward warp with border padding; ``base`` is the level's :func:`_normalized_grid` (see :func:`add_flow`)."""
    grid = add_flow(base, flow, x.shape[2:], align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


#: On the CPU a pyramid level is solved in chunks of images of at most this many pixels in all (at
#: least one image; every image is independent): a chunk's temporaries stay in the cache and reuse
#: each other's memory instead of new pages. Measured at 64 x 64, batch 32: two chunks of 16 images
#: are 10-20% faster than one (with 3-6x fewer page faults), four chunks slower again. Eager code only.
_CPU_CHUNK_PIXELS = 1 << 16


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
    window_sigma = _sigma_option("window_sigma", zero_disables=False)
    smooth_sigma = _sigma_option("smooth_sigma", zero_disables=True)
    presmooth_sigma = _sigma_option("presmooth_sigma", zero_disables=True)

    def __init__(self, min_size: int = 12, max_levels: int = 6, iterations: int = 2, window_sigma: float = 1.5,
                 smooth_sigma: float = 2.0, regularization: float = 1e-6, symmetric_gradients: bool = True,
                 presmooth_sigma: float = 0.5, check_range: bool = True) -> None:
        super().__init__()
        if min_size < 4:
            raise ValueError(f"min_size must be at least 4, got {min_size}")
        if max_levels < 1 or iterations < 1:
            raise ValueError(f"max_levels and iterations must be >= 1, got {max_levels} and {iterations}")
        # (the sigmas are checked by their setters, see _sigma_option)
        if not math.isfinite(regularization) or regularization <= 0:
            raise ValueError(f"regularization must be a finite number > 0, got {regularization}")
        self.min_size = int(min_size)
        self.max_levels = int(max_levels)
        self.iterations = int(iterations)
        self.window_sigma = window_sigma
        self.smooth_sigma = smooth_sigma
        self.regularization = float(regularization)
        self.symmetric_gradients = bool(symmetric_gradients)
        self.presmooth_sigma = presmooth_sigma
        self.check_range = check_range

    def __setstate__(self, state: dict) -> None:
        # estimators pickled before the sigmas became properties hold them as plain attributes
        old = {k: state.pop(k) for k in ("window_sigma", "smooth_sigma", "presmooth_sigma") if k in state}
        super().__setstate__(state)
        for name, value in old.items():
            setattr(self, name, value)

    def extra_repr(self) -> str:
        return (f"min_size={self.min_size}, max_levels={self.max_levels}, iterations={self.iterations}, "
                f"window_sigma={self.window_sigma}, smooth_sigma={self.smooth_sigma}, "
                f"presmooth_sigma={self.presmooth_sigma}")

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
        with full_precision(a.device.type):
            # both images in one tensor: every pyramid op is one call instead of two (passed without
            # a name, so that it is released once the pyramid is built)
            flow = self._estimate(_grey_pair(a, b, work), a.shape[0])
        return flow.to(out_dtype)

    def _estimate(self, grey: torch.Tensor, n: int) -> torch.Tensor:
        """The flow (N, 2, H, W) from the greyscale images (2N, 1, H, W): image 1 then image 2."""
        h, w = grey.shape[2:]
        if self._presmooth_sigma_taps is not None:
            # a slight blur of both images evens out the interpolation blur that separates a
            # sub-pixel-shifted image from its warp back (the bias that locks LK to whole pixels)
            grey = _separable_filter(grey, self._presmooth_sigma_taps)
        pyramid = [grey]
        del grey
        for _ in range(self.num_levels(h, w) - 1):
            ph, pw = pyramid[-1].shape[2:]
            pyramid.append(_downsample(pyramid[-1], (ph // 2, pw // 2)))
        dev, dt = pyramid[0].device, pyramid[0].dtype
        window, smooth = self._window_sigma_taps, self._smooth_sigma_taps

        flow = torch.zeros(n, 2, *pyramid[-1].shape[2:], device=dev, dtype=dt)
        iterations = self.iterations * 2  # at the coarsest level
        while pyramid:
            # coarsest first; popped, so that a level's images are released once its inputs are built
            moving, fixed, structure = self._level_inputs(pyramid.pop(), n, window)
            lh, lw = moving.shape[2:]
            if flow.shape[2:] != (lh, lw):
                # vectors rescaled to the finer pixels (python scalars: no host-to-device copy per level)
                flow = _upsample_flow(flow, (lh, lw))
            base = _normalized_grid(moving)
            # Not while compiling: a loop over chunks, even of one chunk, makes the graph depend on the
            # batch size (one recompilation per batch size even with dynamic=True, an error after 8),
            # and the compiler plans the temporaries' memory itself.
            chunk = n
            if dev.type == "cpu" and not torch.compiler.is_compiling():
                chunk = max(1, _CPU_CHUNK_PIXELS // (lh * lw))
            parts = [slice(None)] if chunk >= n else [slice(i, i + chunk) for i in range(0, n, chunk)]
            flows = []
            for part in parts:
                f = initial = flow[part]
                inputs = (moving[part], fixed[part], None if structure is None else tuple(x[part] for x in structure))
                for _ in range(iterations):
                    f = self._step(f, initial, *inputs, base, window, smooth)
                flows.append(f)
            flow = flows[0] if len(flows) == 1 else torch.cat(flows)
            del flows, f, initial, inputs, moving, fixed, structure
            iterations = self.iterations
        return flow

    def _level_inputs(self, both: torch.Tensor, n: int, window: tuple[float, ...]
                      ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """``(moving, fixed, structure)`` of one pyramid level (images 1 and 2 stacked in ``both``) for :meth:`_step`.

        Symmetric gradients: image 2 and its gradients are warped together (one grid_sample per
        iteration) and ``fixed`` is added to the result, so that channel 0 becomes the residual
        gt = warp(i2) - i1 and channels 1-2 the mean gradients 0.5 (g1 + warped g2). The gradients
        are halved in the difference operator (exact: a power of two) for that: moving = (i2, g2 / 2),
        fixed = (-i1, g1 / 2), structure = None.

        Image 1's gradients only: moving = i2, fixed = (i1, g1), and the structure tensor is filtered
        once per level, structure = ((sxx, syy), sxy, det); each iteration filters only the two
        mismatch terms (2 instead of 5 channels).
        """
        i1, i2 = both[:n], both[n:]
        if self.symmetric_gradients:
            hgx, hgy = _gradients(both, gain=0.5)
            fixed = torch.cat((i1, hgx[:n], hgy[:n]), dim=1)
            fixed[:, 0].neg_()
            return torch.cat((i2, hgx[n:], hgy[n:]), dim=1), fixed, None
        g1x, g1y = _gradients(i1)
        sxx, sxy, syy = _separable_filter(torch.cat((g1x * g1x, g1x * g1y, g1y * g1y), 1), window).unbind(1)
        diag = torch.stack((sxx, syy), dim=1) + self.regularization
        return i2, torch.cat((i1, g1x, g1y), dim=1), (diag, sxy, diag[:, 0] * diag[:, 1] - sxy * sxy)

    def _step(self, flow: torch.Tensor, initial: torch.Tensor, moving: torch.Tensor, fixed: torch.Tensor,
              structure: tuple[torch.Tensor, ...] | None, base: torch.Tensor, window: tuple[float, ...],
              smooth: tuple[float, ...] | None) -> torch.Tensor:
        """One warping iteration at one level: the flow after the least-squares update and the smoothing.

        ``moving``, ``fixed``, ``structure``: see :meth:`_level_inputs`; ``initial``: the level's
        flow before its first iteration; ``base``: the level's :func:`_normalized_grid`; ``window``,
        ``smooth``: the Gaussian taps of the least-squares window and of the smoothing (or None).

        On the CPU a fresh multi-MB tensor costs more in page faults than the arithmetic on it, so
        the update works in place on few temporaries and releases each (``del``) once used: the
        next ones reuse their memory. The in-place operations never modify a tensor that autograd
        saved (the estimator stays differentiable), always write to a tensor that torch.func.vmap
        batches when any operand is batched, and have vmap batching rules (``addcmul_``, ``clamp_``
        and ``square_`` have none: their out-of-place forms are used).
        """
        n, _, lh, lw = flow.shape
        reg = self.regularization
        s: torch.Tensor | None = None
        if structure is None:
            t = _warp_border(moving, flow, base).add_(fixed)  # (gt, gx, gy)
            # every product g_i * (gt, gx, gy) in one operation, (N, 2, 3, H, W): a sixth channel
            # (gy gx = gx gy) costs less than five products and a concatenation; passed without a
            # name, so that the filter can release it early
            s = _separable_filter((t[:, 1:3].unsqueeze(2) * t.unsqueeze(1)).view(n, 6, lh, lw), window)
            del t
            diag, sxy, st = s[:, 1:6:4], s[:, 2], s[:, 0:4:3]  # (sxx, syy), sxy, (sxt, syt)
            diag += reg  # the Tikhonov term
            det = torch.addcmul(diag[:, 0] * diag[:, 1], sxy, sxy, value=-1)
        else:
            diag, sxy, det = structure
            gt = _warp_border(moving, flow, base) - fixed[:, :1]
            st = _separable_filter(fixed[:, 1:] * gt, window)
            del gt
        # the Tikhonov term pulls the level's *total* update towards zero (not each step's), so poorly
        # textured windows cannot drift away from the coarse estimate over iterations
        b = torch.add(st, flow - initial, alpha=reg)
        del st
        # the 2 x 2 solve for both components at once: (sxy by - syy bx, sxy bx - sxx by) / det
        step = torch.addcmul(b.flip(1).mul_(sxy.unsqueeze(1)), diag.flip(1), b, value=-1).div_(det.unsqueeze(1))
        del b, det
        # a linearisation is only valid within about a pixel; bigger steps come from outliers
        flow = torch.clamp(step, -1.0, 1.0).add_(flow)
        del step
        if smooth is None:
            return flow
        # Gaussian smoothing weighted by the smallest eigenvalue of the structure tensor. The weight is
        # twice its formula 0.5 (sxx + syy) - sqrt(0.25 (sxx - syy)^2 + sxy^2), plus 2e-9: every value
        # scaled by a power of two, the weighted mean is exactly the same, in two operations fewer
        sxx, syy = diag[:, 0], diag[:, 1]
        root = torch.addcmul((sxx - syy).pow_(2), sxy, sxy, value=4).sqrt_()
        weight = (sxx + syy).sub_(root).clamp_min_(0).add_(2e-9).unsqueeze(1)
        del s, diag, sxx, sxy, syy, root  # the structure tensor is released before the filter allocates
        num = _separable_filter(torch.cat((flow * weight, weight), dim=1), smooth)
        return num[:, :2] / num[:, 2:]
