"""Barron's general robust loss, its log partition function and its negative log-likelihood.

J. T. Barron, "A General and Adaptive Robust Loss Function", CVPR 2019. For a residual ``x``, shape
``alpha`` and scale ``c > 0`` the loss is

    rho(x, alpha, c) = |alpha - 2| / alpha * (((x / c)^2 / |alpha - 2| + 1)^(alpha / 2) - 1),

with the limits ``0.5 (x/c)^2`` (alpha = 2), ``log(0.5 (x/c)^2 + 1)`` (alpha = 0),
``1 - exp(-0.5 (x/c)^2)`` (alpha = -inf) and ``exp(0.5 (x/c)^2) - 1`` (alpha = +inf). For
``alpha >= 0`` the density ``p(x) = exp(-rho(x, alpha, c)) / (c Z(alpha))`` is proper, with the
partition function ``Z(alpha) = integral over R of exp(-rho(x, alpha, 1)) dx``, and the negative
log-likelihood is ``rho(x, alpha, c) + log(c) + log Z(alpha)``.

``log Z`` has no closed form for general alpha. genloss computes it itself: ``scipy.integrate.quad``
(float64) at 513 knots, once on first use (about 0.5 s; then cached in memory and in the genloss
cache dir), interpolated by a cubic Hermite spline in the compressed coordinate
``t(alpha) = sqrt(1 - (1 - alpha/2)^(1/4))``. The coordinate makes ``log Z`` smooth where it is not
smooth in ``alpha``: near ``alpha = 2`` it behaves like ``(2 - alpha) log(2 - alpha)`` (and
``2 - alpha ~ (1 - t)^4``), near ``alpha = 0`` its derivatives grow fast (and ``alpha ~ t^2``). The
spline is accurate to ~1e-10 on ``[0, 2]`` (the tests check 1e-6 against quadrature, closed forms
and Barron's published spline).
Barron's own spline (``partition_spline.npz``) can be used instead with ``source='barron'``.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import torch

#: the alpha range on which :func:`log_partition` (and so :func:`nll`) is defined
ALPHA_RANGE = (0.0, 2.0)
#: number of knots of genloss' own log-partition spline
NUM_KNOTS = 513
PARTITION_SOURCES = ("genloss", "barron")


# --------------------------------------------------------------------------------------------------
# The loss rho and the parameter maps
# --------------------------------------------------------------------------------------------------


def general_loss(x: torch.Tensor, alpha: torch.Tensor | float, scale: torch.Tensor | float) -> torch.Tensor:
    """Barron's general loss ``rho(x, alpha, scale)``, elementwise with broadcasting.

    Args:
        x: residuals, any shape, floating point, any device.
        alpha: shape parameter(s), any real value including ``+-inf``; broadcast against ``x``.
        scale: scale parameter(s) ``> 0``; broadcast against ``x``.

    Returns:
        the loss, the broadcast shape of the inputs, in the dtype of ``x``. Differentiable in
        ``x``, ``alpha`` and ``scale`` (gradients are finite for every finite input).
    """
    alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
    scale = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    z2 = (x / scale) ** 2
    eps = torch.finfo(x.dtype).eps
    # exp() overflows above log(max); clamp the exponent so that huge residuals give a huge but
    # finite loss (the alpha > 2 and alpha = +inf branches grow exponentially).
    max_exp = math.log(torch.finfo(x.dtype).max) - 1.0

    # The general branch, written with log1p/expm1 so that it stays accurate for alpha near 0 and
    # small residuals. Infinite alphas are replaced by 1 here: their own branch is selected below,
    # but NaNs in an unselected torch.where branch would still poison the gradient.
    finite_alpha = torch.where(torch.isinf(alpha), torch.ones_like(alpha), alpha)
    beta = torch.clamp((finite_alpha - 2).abs(), min=eps)
    alpha_safe = torch.where(finite_alpha >= 0, 1.0, -1.0) * torch.clamp(finite_alpha.abs(), min=eps)
    exponent = torch.clamp(0.5 * alpha_safe * torch.log1p(z2 / beta), max=max_exp)
    general = beta / alpha_safe * torch.expm1(exponent)

    loss = torch.where(alpha == 2, 0.5 * z2, general)
    loss = torch.where(alpha == 0, torch.log1p(0.5 * z2), loss)
    loss = torch.where(alpha == -math.inf, -torch.expm1(-0.5 * z2), loss)
    loss = torch.where(alpha == math.inf, torch.expm1(torch.clamp(0.5 * z2, max=max_exp)), loss)
    return loss


def affine_sigmoid(latent: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Map reals into the open interval ``(lo, hi)``; 0 maps to the midpoint (Barron's alpha map)."""
    if not lo < hi:
        raise ValueError(f"affine_sigmoid needs lo < hi, got lo={lo}, hi={hi}")
    return torch.sigmoid(latent) * (hi - lo) + lo


def affine_softplus(latent: torch.Tensor, lo: float, ref: float) -> torch.Tensor:
    """Map reals into ``(lo, inf)``; 0 maps to ``ref`` (Barron's scale map).

    ``(ref - lo) * softplus(latent + s) + lo`` with ``s = log(e - 1)`` so that ``softplus(s) = 1``.
    """
    if not lo < ref:
        raise ValueError(f"affine_softplus needs lo < ref, got lo={lo}, ref={ref}")
    shift = math.log(math.e - 1.0)
    return (ref - lo) * torch.nn.functional.softplus(latent + shift) + lo


# --------------------------------------------------------------------------------------------------
# The partition function: numerical integration (reference) and its spline
# --------------------------------------------------------------------------------------------------


def _rho_unit_scale_np(x: np.ndarray | float, alpha: float) -> np.ndarray | float:
    """rho(x, alpha, 1) in float64 numpy, for alpha in (0, 2) (the integrand of Z)."""
    beta = 2.0 - alpha
    return beta / alpha * np.expm1(0.5 * alpha * np.log1p(x * x / beta))


def log_partition_quad(alpha: float) -> float:
    """``log Z(alpha)`` by adaptive quadrature in float64, for ``alpha`` in [0, 2] (reference value).

    Uses the closed forms ``Z(0) = pi sqrt(2)`` (Cauchy) and ``Z(2) = sqrt(2 pi)`` (Gaussian) at the
    ends. Inside, ``Z = 2 (int_0^1 + int_1^inf) exp(-rho(x, alpha, 1)) dx``; the split keeps the
    peak and the (for small alpha Cauchy-like) tail in separate integrals.
    """
    from scipy import integrate

    alpha = float(alpha)
    if not ALPHA_RANGE[0] <= alpha <= ALPHA_RANGE[1]:
        raise ValueError(f"alpha must be in [0, 2], got {alpha}")
    if alpha == 0.0:
        return math.log(math.pi * math.sqrt(2.0))
    if alpha == 2.0:
        return 0.5 * math.log(2.0 * math.pi)

    def integrand(x: float) -> float:
        return math.exp(-_rho_unit_scale_np(x, alpha))

    total = 0.0
    for lo, hi in ((0.0, 1.0), (1.0, math.inf)):
        value, abserr = integrate.quad(integrand, lo, hi, epsabs=0.0, epsrel=1e-13, limit=500)
        # Z >= sqrt(2 pi) > 2, so an absolute error of 1e-10 is far below the 1e-6 we promise.
        if not abserr < 1e-10:
            raise RuntimeError(f"quadrature of Z({alpha}) did not converge (error estimate {abserr:g})")
        total += value
    return math.log(2.0 * total)


def _alpha_to_coordinate(alpha: torch.Tensor) -> torch.Tensor:
    """The compressed coordinate ``t = sqrt(1 - (1 - alpha/2)^(1/4))`` in [0, 1] for alpha in [0, 2].

    The clamps keep the derivative finite at the two ends (where the true dt/dalpha is infinite):
    there the gradient of the spline is 0 instead of NaN.
    """
    tiny = 1e-30 if alpha.dtype == torch.float64 else 1e-20
    root = torch.clamp(1.0 - 0.5 * alpha, min=tiny) ** 0.25
    return torch.sqrt(torch.clamp(1.0 - root, min=tiny))


def _coordinate_to_alpha_np(t: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_alpha_to_coordinate`: ``alpha = 2 (1 - (1 - t^2)^4)``."""
    return 2.0 * (1.0 - (1.0 - t * t) ** 4)


def _barron_coordinate(alpha: torch.Tensor) -> torch.Tensor:
    """The compression Barron's published spline uses (its branch for alpha < 4, enough for [0, 2])."""
    return (2.25 * alpha - 4.5) / (torch.abs(alpha - 2.0) + 0.25) + alpha + 2.0


class LogPartitionSpline:
    """A cubic Hermite spline of ``log Z(alpha)`` on uniformly spaced knots of a compressed coordinate.

    Knot ``i`` sits at position ``i`` of :meth:`knot_position`; ``values`` and ``tangents`` are the
    float64 values and derivatives (per unit knot spacing) at the knots.

    Args:
        values, tangents: float64 arrays of the same length (>= 2).
        source: ``'genloss'`` (coordinate ``t(alpha)``) or ``'barron'`` (Barron's coordinate).
        coordinate_scale: multiplies the coordinate to give knot positions (genloss: knots - 1,
            Barron: his ``x_scale`` = 1024).
    """

    def __init__(
        self, values: np.ndarray, tangents: np.ndarray, source: str, coordinate_scale: float
    ) -> None:
        if values.shape != tangents.shape or values.ndim != 1 or len(values) < 2:
            raise ValueError(f"spline values/tangents must be 1-D of equal length >= 2, got "
                             f"{values.shape} and {tangents.shape}")
        if source not in PARTITION_SOURCES:
            raise ValueError(f"partition source must be one of {PARTITION_SOURCES}, got {source!r}")
        self.values = values
        self.tangents = tangents
        self.source = source
        self.coordinate_scale = coordinate_scale
        # Copies of the knots per (dtype, device), made once: the spline is evaluated at every forward.
        self._tensors: dict[tuple[torch.dtype, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return f"LogPartitionSpline(source={self.source!r}, knots={len(self.values)})"

    def knot_position(self, alpha: torch.Tensor) -> torch.Tensor:
        coordinate = _alpha_to_coordinate(alpha) if self.source == "genloss" else _barron_coordinate(alpha)
        return coordinate * self.coordinate_scale

    def knot_tensors(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh tensors of the knot values and tangents (shape [knots]), e.g. to keep as module buffers."""
        return (
            torch.as_tensor(self.values, dtype=torch.float64).to(dtype=dtype, device=device),
            torch.as_tensor(self.tangents, dtype=torch.float64).to(dtype=dtype, device=device),
        )

    def _knots(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Eager convenience for log_partition(): copies per (dtype, device), made once. Modules keep
        # their own copies as buffers (AdaptiveLoss), so their forward never builds tensors from numpy.
        key = (dtype, str(device))
        if key not in self._tensors:
            self._tensors[key] = self.knot_tensors(dtype, device)
        return self._tensors[key]

    def evaluate(self, alpha: torch.Tensor, values: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
        """Evaluate at ``alpha`` (assumed in [0, 2]) with knot tensors of :meth:`knot_tensors`.

        Pure torch with no host synchronisation or data-dependent Python control flow, so it traces
        under ``torch.compile(fullgraph=True)`` and works under ``torch.func`` transforms.
        ``values``/``tangents`` must have ``alpha``'s dtype and device.
        """
        position = self.knot_position(alpha)
        # Positions are in [0, knots - 1] for alpha in [0, 2]; the clamp only keeps alpha = 2 (the
        # last knot) in the last interval.
        lower = torch.clamp(position.detach(), 0, values.shape[0] - 2).floor().long()
        t = position - lower.to(alpha.dtype)
        t2 = t * t
        t3 = t2 * t
        # Hermite basis functions on the unit interval.
        h01 = 3 * t2 - 2 * t3
        h00 = 1 - h01
        h11 = t3 - t2
        h10 = h11 - t2 + t
        return (
            values[lower] * h00 + values[lower + 1] * h01 + tangents[lower] * h10 + tangents[lower + 1] * h11
        )

    def __call__(self, alpha: torch.Tensor) -> torch.Tensor:
        """Evaluate at ``alpha`` (assumed in [0, 2]; :func:`log_partition` is the checked API)."""
        values, tangents = self._knots(alpha.dtype, alpha.device)
        return self.evaluate(alpha, values, tangents)


@functools.lru_cache(maxsize=1)
def genloss_partition_spline(num_knots: int = NUM_KNOTS) -> LogPartitionSpline:
    """genloss' own spline of ``log Z``, computed by quadrature on first use and cached.

    Values come from :func:`log_partition_quad` at ``alpha(t_i)`` for ``t_i`` uniform in [0, 1].
    Tangents are the derivatives, at the knots, of the C2 cubic spline through these values with zero
    end slopes; both end slopes are exactly zero in ``t`` (``log Z`` is a smooth function of
    ``alpha ~ t^2`` at ``t = 0``, and ``dalpha/dt = 0`` at ``t = 1``).

    The knots are kept in memory and in ``<genloss cache dir>/log_partition_spline_<knots>.npz``
    (a file that fails the sanity checks is recomputed and overwritten).
    """
    path = _spline_cache_path(num_knots)
    cached = _read_cached_spline(path, num_knots)
    if cached is not None:
        return cached
    from scipy.interpolate import CubicSpline

    t = np.linspace(0.0, 1.0, num_knots)
    alphas = np.clip(_coordinate_to_alpha_np(t), 0.0, 2.0)
    values = np.array([log_partition_quad(a) for a in alphas])
    fit = CubicSpline(t, values, bc_type=((1, 0.0), (1, 0.0)))
    # d/dt -> d/d(knot index): one knot spacing is 1 / (num_knots - 1) in t.
    tangents = fit(t, 1) / (num_knots - 1)
    _write_cached_spline(path, values, tangents)
    return LogPartitionSpline(values, tangents, "genloss", float(num_knots - 1))


def _spline_cache_path(num_knots: int):
    from ..weights import cache_dir

    return cache_dir() / f"log_partition_spline_{num_knots}.npz"


def _read_cached_spline(path, num_knots: int) -> LogPartitionSpline | None:
    """The cached spline, or ``None`` (then it is recomputed) when the file is absent, damaged or another spline's.

    The cache is ours and disposable: a truncated or corrupted file (a kill during an old write, a
    full disk, a bit flip) must never make the loss fail, so every read error means "recompute".
    """
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as f:
            values = np.asarray(f["values"], dtype=np.float64)
            tangents = np.asarray(f["tangents"], dtype=np.float64)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    ok = (
        values.shape == tangents.shape == (num_knots,)
        and np.isfinite(values).all()
        and np.isfinite(tangents).all()
    )
    if ok:
        # A cheap check that the file holds this spline: the two closed-form ends and three knots
        # recomputed by quadrature.
        t = np.linspace(0.0, 1.0, num_knots)
        probes = (0, num_knots // 4, num_knots // 2, (3 * num_knots) // 4, num_knots - 1)
        alphas = np.clip(_coordinate_to_alpha_np(t[list(probes)]), 0.0, 2.0)
        ok = all(abs(values[i] - log_partition_quad(a)) < 1e-10 for i, a in zip(probes, alphas, strict=True))
    return LogPartitionSpline(values, tangents, "genloss", float(num_knots - 1)) if ok else None


def _write_cached_spline(path, values: np.ndarray, tangents: np.ndarray) -> None:
    # Best effort (a read-only home must not break the loss); written to a unique temporary file in
    # the same folder and renamed (genloss._files.atomic_write), so concurrent writers (processes or
    # threads) never mix their bytes, a reader never sees half a file, a failed write leaves no
    # temporary file behind, and the file gets the usual mode (a shared cache stays readable).
    from .._files import atomic_write

    try:
        with atomic_write(path, "wb") as fh:
            np.savez(fh, values=values, tangents=tangents)
    except OSError:
        pass


def barron_partition_spline(weights_dir: str | os.PathLike | None = None) -> LogPartitionSpline:
    """Barron's published spline (``partition_spline.npz``, resolved like every genloss weight file)."""
    from ..weights import resolve

    return _load_barron_spline(str(resolve("partition_spline.npz", weights_dir)))


@functools.lru_cache(maxsize=4)
def _load_barron_spline(path: str) -> LogPartitionSpline:
    with np.load(path, allow_pickle=False) as f:
        return LogPartitionSpline(
            np.asarray(f["values"], dtype=np.float64),
            np.asarray(f["tangents"], dtype=np.float64),
            "barron",
            float(f["x_scale"]),
        )


def partition_spline(
    source: str = "genloss", weights_dir: str | os.PathLike | None = None
) -> LogPartitionSpline:
    """The log-partition spline of ``source``: ``'genloss'`` (own quadrature) or ``'barron'`` (his file)."""
    if source == "genloss":
        return genloss_partition_spline()
    if source == "barron":
        return barron_partition_spline(weights_dir)
    raise ValueError(f"partition source must be one of {PARTITION_SOURCES}, got {source!r}")


def _check_alpha(alpha: torch.Tensor) -> None:
    lo, hi = ALPHA_RANGE
    bad = ~((alpha >= lo) & (alpha <= hi))  # also catches NaN
    if bool(bad.any()):
        raise ValueError(
            f"alpha must be in [{lo}, {hi}] (the range of the log-partition spline), got values in "
            f"[{alpha.min().item():g}, {alpha.max().item():g}]" + (" and NaN" if alpha.isnan().any() else "")
        )


def log_partition(
    alpha: torch.Tensor | float, source: str = "genloss", weights_dir: str | os.PathLike | None = None
) -> torch.Tensor:
    """``log Z(alpha)`` for ``alpha`` in [0, 2], differentiable, any shape/device, float32 or float64.

    Raises ``ValueError`` for alphas outside [0, 2] or NaN (this check reads the values: eager use
    only; :class:`~genloss.AdaptiveLoss` evaluates the spline without it). Integer tensors and Python
    numbers are computed in float64 (``torch.as_tensor(1.0)`` alone would be float32), 16-bit tensors
    in float32 (the knots need more than 16 bits).
    """
    if not isinstance(alpha, torch.Tensor) or not torch.is_floating_point(alpha):
        alpha = torch.as_tensor(alpha, dtype=torch.float64)
    elif alpha.dtype in (torch.float16, torch.bfloat16):
        alpha = alpha.float()
    _check_alpha(alpha)
    return partition_spline(source, weights_dir)(alpha)


def nll(
    x: torch.Tensor,
    alpha: torch.Tensor | float,
    scale: torch.Tensor | float,
    partition: LogPartitionSpline | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Negative log-likelihood ``rho(x, alpha, scale) + log(scale) + log Z(alpha)`` (Barron's Eq. 16).

    Args:
        x: residuals, any shape, floating point.
        alpha: shapes in [0, 2], broadcast against ``x``.
        scale: scales ``> 0``, broadcast against ``x``.
        partition: the spline to use (default: :func:`genloss_partition_spline`).
        check: validate the ranges of ``alpha`` and ``scale`` (costs a device sync; callers that
            guarantee the ranges by construction, like :class:`AdaptiveLoss`, turn it off).

    Returns:
        the NLL per element, broadcast shape, dtype of ``x``. It is not bounded below by zero.
    """
    alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
    scale = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    if check:
        _check_alpha(alpha)
        if not bool((scale > 0).all()):
            raise ValueError("scale must be > 0 everywhere")
    spline = partition if partition is not None else genloss_partition_spline()
    return general_loss(x, alpha, scale) + torch.log(scale) + spline(alpha)
