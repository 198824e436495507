"""The one input validator of genloss (losses, functional twins and CorrWise), so bad input fails alike everywhere.

Two kinds of checks:

* **structure** (free: shapes, dtypes and devices are host metadata): a floating (N, C, H, W) tensor,
  non-empty, with an allowed channel count and at least the loss' minimum size; input and target
  of the same shape and device. Raises ``TypeError`` or ``ValueError`` naming the argument.
* **values** (:func:`check_values`: NaN/Inf and the value range, one ``aminmax`` per tensor). On the
  CPU every call is checked and raises a ``ValueError`` that states the range seen and the fix. On
  CUDA a readable check needs a device-to-host copy, which would stall the GPU pipeline, so each loss
  checks its first :data:`CUDA_SYNC_CHECKS` calls that way (the typical mistake, a [0, 255] or
  [-1, 1] batch, shows up on the first batch) and later calls not at all, which keeps the hot path
  free of extra kernels (a NaN input still gives a NaN loss). ``GENLOSS_SYNC_CHECKS=1`` checks every
  CUDA call readably; ``GENLOSS_DEVICE_CHECKS=1`` checks the later calls with a device-side assertion
  (``torch._assert_async``: no synchronisation; the error surfaces at the next sync). Under
  ``torch.compile`` the device-side assertion is traced (the compiler fuses it); under ``torch.func``
  transforms the check runs on the underlying tensor.

Dtype rule (every loss): input and target are computed in the wider of their two floating dtypes,
and in at least float32 (16-bit data and autocast regions are computed in float32, because the
perceptual models use powers and epsilons of 1e-10 that 16-bit floats cannot represent). The result
has that dtype: float64 in, float64 out; float16/bfloat16 in, float32 out.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence, Set

import torch

from . import _env

REDUCTIONS = ("sum", "mean", "none")

#: values may exceed the declared range by this fraction of its width (interpolation overshoot,
#: unclamped generator outputs); anything beyond is a different range and is refused
RANGE_TOLERANCE = 0.05

#: CUDA calls per loss whose values are checked with a (synchronising) host read
CUDA_SYNC_CHECKS = 8

ValueRange = tuple[float, float]


def check_reduction(reduction: str) -> str:
    """Return ``reduction`` if it is one of ``'sum'``, ``'mean'``, ``'none'``; raise ``ValueError`` otherwise."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_value_range(value_range: object) -> ValueRange:
    """Validate a ``value_range=(lo, hi)`` option: a sequence of two finite real numbers with ``lo < hi``.

    Strings, bytes, mappings and bools are refused although Python iterates or counts them as numbers
    (``"05"`` would read as (0, 5), ``b"01"`` as (48, 49)). Returns ``(float(lo), float(hi))``.
    """
    message = f"value_range must be a pair (lo, hi) of numbers, got {value_range!r}"
    if isinstance(value_range, (str, bytes, Mapping, Set)):
        raise TypeError(message)
    try:
        pair = tuple(value_range)  # type: ignore[arg-type]  (a tuple, a list, a config's list, an array)
    except TypeError:
        raise TypeError(message) from None
    if len(pair) != 2 or not all(_is_real(v) for v in pair):
        raise TypeError(message)
    lo, hi = (float(v) for v in pair)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"value_range must be finite with lo < hi, got {value_range!r}")
    return lo, hi


def _is_real(v: object) -> bool:
    """A real number: not a bool; a one-element tensor of a real dtype counts (``torch.tensor([0., 1.])``)."""
    if isinstance(v, torch.Tensor):
        return v.numel() == 1 and v.dtype != torch.bool and not v.is_complex()
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first frame outside genloss (the user's line that built the loss).

    A fixed ``stacklevel`` points into genloss' own constructor wrappers when they add frames, and the
    default filter then shows such a warning once per process for every loss built anywhere.
    """
    frame, level = sys._getframe(1), 2  # (stacklevel 2: the frame that called warn_caller)
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "genloss":
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def check_image(
    x: object,
    name: str = "input",
    *,
    channels: int | Sequence[int] | None = None,
    min_size: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """Check the structure of a floating NCHW image batch and return it (no data is read).

    Args:
        x: the object to check.
        name: the argument's name, used in error messages.
        channels: allowed channel count(s), or ``None`` for any.
        min_size: smallest allowed (H, W) (an int means square); zero-sized images are always refused.

    Raises:
        TypeError: not a tensor, or not floating point.
        ValueError: not 4-D, empty batch, zero height or width, wrong channel count, too small.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be a 4-D tensor of shape (N, C, H, W), got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} must be a floating point tensor, got dtype {x.dtype}; "
            "convert 8-bit images with x.float() / 255 (or x.float() with value_range=(0, 255))"
        )
    n, c, h, w = x.shape
    if n == 0:
        raise ValueError(f"{name} has an empty batch (N = 0)")
    if h == 0 or w == 0:
        raise ValueError(f"{name} has zero height or width (shape {tuple(x.shape)})")
    if channels is not None:
        allowed = (channels,) if isinstance(channels, int) else tuple(channels)
        if c not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} has {c} channel{'' if c == 1 else 's'}, expected {want}")
    if min_size is not None:
        mh, mw = (min_size, min_size) if isinstance(min_size, int) else min_size
        if h < mh or w < mw:
            raise ValueError(f"{name} is {h}x{w} pixels, smaller than the minimum {mh}x{mw} of this loss")
    return x


def compute_dtype(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    """The dtype a loss computes in for inputs of dtypes ``a`` and ``b`` (see the module's dtype rule)."""
    dtype = torch.promote_types(a, b)
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_pair(
    input: object,
    target: object,
    *,
    channels: int | Sequence[int] | None = None,
    min_size: int | tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a prediction/target pair (structure only) and cast both to their :func:`compute_dtype`."""
    a = check_image(input, "input", channels=channels, min_size=min_size)
    b = check_image(target, "target", channels=channels, min_size=min_size)
    if a.shape != b.shape:
        raise ValueError(f"input and target must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"input and target are on different devices ({a.device} and {b.device})")
    dtype = compute_dtype(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def in_functorch_transform(*tensors: torch.Tensor) -> bool:
    """True inside ``torch.func`` transforms (grad, vmap) and for batched tensors, where hand-written
    autograd.Functions (no vmap rules, no setup_context), in-place products and ``out=`` do not apply.

    Three cases: a transform is active (any Function called there needs a vmap rule, even on plain
    tensors, e.g. a vmap over the target only); a tensor is wrapped by one; a tensor is batched by
    the vmap that ``autograd.grad(..., is_grads_batched=True)`` runs a backward under (the gradient
    arriving in a hand-written backward). False while ``torch.compile`` traces (dynamo cannot call
    the check, and compiled graphs hold no wrappers).
    """
    if torch.compiler.is_compiling():
        return False
    from torch._C._functorch import is_functorch_wrapped_tensor, is_legacy_batchedtensor, peek_interpreter_stack

    if peek_interpreter_stack() is not None:
        return True
    return any(is_functorch_wrapped_tensor(t) or is_legacy_batchedtensor(t) for t in tensors)


def has_forward_tangent(*tensors: torch.Tensor) -> bool:
    """True for the dual tensors of forward-mode AD (``torch.autograd.forward_ad``), which hand-written
    autograd.Functions without a ``jvp`` cannot take (False while ``torch.compile`` traces)."""
    if torch.compiler.is_compiling():
        return False
    from torch.autograd.forward_ad import unpack_dual

    return any(unpack_dual(t).tangent is not None for t in tensors)


def hand_written_autograd_refused(*tensors: torch.Tensor) -> bool:
    """True where genloss' hand-written autograd.Functions cannot take these tensors: inside ``torch.func``
    transforms or on their tensors (no vmap rules, :func:`in_functorch_transform`) and for forward-mode
    AD's dual tensors (no ``jvp``, :func:`has_forward_tangent`). The losses take plain autograd there."""
    return in_functorch_transform(*tensors) or has_forward_tangent(*tensors)


def _underlying(x: torch.Tensor) -> torch.Tensor:
    """The plain tensor under ``torch.func`` wrappers (grad/vmap), whose data can be read eagerly."""
    from torch._C._functorch import get_unwrapped, is_functorch_wrapped_tensor

    while is_functorch_wrapped_tensor(x):
        x = get_unwrapped(x)
    return x


def _range_message(name: str, seen: str, value_range: ValueRange) -> str:
    lo, hi = value_range
    return (
        f"{name} has values in {seen}, outside the expected range [{lo:g}, {hi:g}]. Pass value_range=(lo, hi) "
        "to declare the range of your images (e.g. (-1, 1) for tanh outputs, (0, 255) for 8-bit data); "
        "the loss maps it exactly onto [0, 1]"
    )


class CheckBudget:
    """How the values of one loss' inputs are checked on each call (see the module docstring).

    One per loss instance, so that every loss checks its own first CUDA calls readably.
    """

    def __init__(self, sync_calls: int = CUDA_SYNC_CHECKS) -> None:
        self.sync_calls_left = sync_calls

    def mode(self, data: torch.Tensor) -> str:
        """``'readable'`` (host read, ``ValueError``), ``'device'`` (``_assert_async``) or ``'skip'``."""
        if torch.compiler.is_compiling():
            return "device"
        if data.device.type == "meta":  # shapes without values (tracing, deferred initialisation): nothing to check
            return "skip"
        if data.device.type == "cpu":
            return "readable"
        cuda = data.device.type == "cuda" and torch.cuda.is_available()
        capturing = cuda and torch.cuda.is_current_stream_capturing()
        if not capturing and (_env.flag(_env.SYNC_CHECKS) or self.sync_calls_left > 0):
            self.sync_calls_left -= 1
            return "readable"
        return "device" if _env.flag(_env.DEVICE_CHECKS) else "skip"


#: the budget of checks made outside a loss (CorrWise inputs and flows, image writers)
_SHARED_BUDGET = CheckBudget()


def check_values(
    x: torch.Tensor, name: str = "input", value_range: ValueRange = (0.0, 1.0), budget: CheckBudget | None = None
) -> None:
    """Refuse NaN/Inf and values outside ``value_range`` (plus :data:`RANGE_TOLERANCE` of its width).

    One ``aminmax`` pass: NaN propagates into both ends, so the same reduction checks finiteness.
    ``budget`` (one per loss) decides how CUDA tensors are checked; see the module docstring.

    Raises:
        ValueError: NaN/Inf values, or values outside the range (the message names the range seen
            and the ``value_range`` option).
    """
    lo, hi = value_range
    tol = RANGE_TOLERANCE * (hi - lo)
    data = x.detach() if torch.compiler.is_compiling() else _underlying(x.detach())
    mode = (budget or _SHARED_BUDGET).mode(data)
    if mode == "skip":
        return
    if mode == "device":
        mn, mx = torch.aminmax(data)
        ok = (mn >= lo - tol) & (mx <= hi + tol)
        # no format spec: under torch.compile(dynamic=True) a range from a module-level constant is traced
        # as a symbolic float, and Dynamo raises an internal error formatting one with :g (CorrWise's flow)
        torch._assert_async(ok, f"{name} contains NaN/Inf or values outside [{lo}, {hi}] (see value_range)")
        return
    mn, mx = (float(v) for v in torch.aminmax(data))
    if not (math.isfinite(mn) and math.isfinite(mx)):
        raise ValueError(f"{name} contains NaN or Inf values")
    if mn < lo - tol or mx > hi + tol:
        raise ValueError(_range_message(name, f"[{mn:.4g}, {mx:.4g}]", value_range))


def to_unit_range(x: torch.Tensor, value_range: ValueRange) -> torch.Tensor:
    """Map images of ``value_range`` onto [0, 1]: ``(x - lo) / (hi - lo)`` (identity for (0, 1))."""
    lo, hi = value_range
    if lo == 0.0 and hi == 1.0:
        return x
    return (x - lo) / (hi - lo)


@contextlib.contextmanager
def full_precision(device_type: str) -> Iterator[None]:
    """Disable autocast for ``device_type`` inside the block (the models are tuned in float32).

    Autocast would silently run the convolutions and matmuls of a loss in 16 bit; every genloss loss
    and flow estimator computes inside this guard instead.
    """
    # (devices without autocast, such as meta, have nothing to disable: asking would raise)
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    else:
        yield


def reduce_batch(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a per-image loss of shape [N]: ``'sum'`` -> scalar, ``'mean'`` -> scalar, ``'none'`` -> [N]."""
    if reduction == "sum":
        return per_image.sum()
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
