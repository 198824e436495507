"""The base class of every genloss loss: validation, value range, precision and batch reduction in one place."""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .._options import strict_options
from .._validation import (
    CheckBudget,
    ValueRange,
    check_pair,
    check_reduction,
    check_value_range,
    check_values,
    full_precision,
    hand_written_autograd_refused,
    reduce_batch,
    to_unit_range,
)
from ..transforms.color import normalize_colorspace


def prepare_pair(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    channels: int | Sequence[int] | None,
    min_size: int | tuple[int, int] | None,
    value_range: ValueRange,
    budget: CheckBudget | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a pair (structure, NaN/Inf, value range), cast to the compute dtype and map onto [0, 1]."""
    input, target = check_pair(input, target, channels=channels, min_size=min_size)
    check_values(input, "input", value_range, budget)
    check_values(target, "target", value_range, budget)
    return to_unit_range(input, value_range), to_unit_range(target, value_range)


class ImageLoss(nn.Module):
    """Base class: ``forward(input, target)`` validates, computes a per-image loss and reduces it.

    Subclasses implement :meth:`per_image`, which maps two validated (N, C, H, W) tensors in [0, 1]
    to a tensor of shape [N] (one value per image), and may override :meth:`total` with a cheaper sum.

    Reductions act on the batch dimension: ``'sum'`` (the papers' default) adds the per-image
    values, ``'mean'`` averages them, ``'none'`` returns the [N] tensor.

    Value range: inputs are expected in ``value_range`` (default [0, 1]) and mapped exactly onto
    [0, 1] before the loss; values clearly outside it, NaN and Inf raise a ``ValueError`` (see
    :mod:`genloss._validation` for how this stays free of GPU synchronisation).

    Dtypes: the pair is computed in the wider of its two float dtypes and in at least float32, and
    the result has that dtype (float64 stays float64; float16/bfloat16 and autocast regions give
    float32), because the perceptual models use powers, epsilons of 1e-10 and ``asin`` near 0 that
    16-bit floats cannot represent.

    Args:
        colorspace: ``'RGB'`` or ``'LA'`` (greyscale; spellings as :func:`genloss.registry.normalize_colorspace`).
        reduction: ``'sum'`` | ``'mean'`` | ``'none'`` over the batch.
        value_range: the range ``(lo, hi)`` of the input images, mapped exactly onto [0, 1].

    Shape:
        - input, target: (N, C, H, W) with C in :attr:`channels` and H, W >= :attr:`min_size`.
        - output: scalar, or (N,) with ``reduction='none'``.

    Returns:
        The reduced loss (see the subclass for its range).

    Raises:
        TypeError: non-tensor or integer input.
        ValueError: wrong rank, shape, channel count or size, NaN/Inf, values outside ``value_range``,
            input and target on different devices.

    References:
        The validation follows piq's single validator; the reductions are the Watson paper's.

    Example:
        >>> import torch
        >>> from genloss.losses.base import ImageLoss
        >>> class MeanAbs(ImageLoss):
        ...     def per_image(self, input, target):
        ...         return (input - target).abs().flatten(1).mean(1)
        >>> MeanAbs(reduction="none")(torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))
        tensor([1., 1.])
    """

    #: channel counts accepted by this loss (``None``: any)
    channels: int | Sequence[int] | None = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:  # every loss' flags refuse truthy strings such as 'False'
            cls.__init__ = _notes_meta_constants(strict_options(cls.__dict__["__init__"]))
        if "forward" not in cls.__dict__ and getattr(cls.forward, "_image_loss_forward", False):
            # only where ImageLoss.forward (or a class's copy of it) is what the class would run: a
            # forward inherited from an intermediate class or a mixin stays what it is
            cls.forward = _forward_of(cls)
    #: smallest accepted (H, W)
    min_size: int | tuple[int, int] | None = None
    #: tensors outside the state dict that were built on the meta device (see _notes_meta_constants)
    _meta_constants: tuple[str, ...] = ()
    #: True for a loss whose ``_apply`` sets every tensor outside its state dict anew from its options (so
    #: ``to_empty()`` after a build on the meta device leaves nothing uninitialised)
    _rebuilds_constants: bool = False

    def __init__(
        self,
        *,
        colorspace: str = "RGB",
        reduction: str = "sum",
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        self.colorspace = normalize_colorspace(colorspace)
        self.reduction = check_reduction(reduction)
        self.value_range = check_value_range(value_range)
        #: how this loss checks its inputs' values (each loss checks its own first CUDA calls readably)
        self._checks = CheckBudget()

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            input: prediction, float tensor of shape (N, C, H, W) with values in ``value_range``.
            target: reference, same shape and device.

        Returns:
            a scalar for ``reduction='sum'``/``'mean'``, or a tensor of shape [N] for ``'none'``.
        """
        if self._meta_constants and not input.is_meta:
            raise RuntimeError(_meta_message(self))
        # .half() / .bfloat16() of the loss or of a model that holds it (or 16-bit tensors loaded with
        # assign=True, or passed to torch.func.functional_call) round the tuned parameters and a backbone's;
        # 16-bit images are computed in float32 anyway, so the only effect would be a silently different value
        for p in self.parameters():
            if p.dtype in _SIXTEEN_BIT:
                raise TypeError(_rounded_message(self))
        input, target = prepare_pair(
            input, target, channels=self.channels, min_size=self.min_size, value_range=self.value_range,
            budget=self._checks,
        )
        with full_precision(input.device.type):
            if self.reduction == "sum":
                return self.total(input, target)
            return reduce_batch(self.per_image(input, target), self.reduction)

    forward._image_loss_forward = True  # type: ignore[attr-defined]  # see __init_subclass__

    def total(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Sum of :meth:`per_image` over the batch; losses with a cheaper direct sum override it."""
        return self.per_image(input, target).sum()

    def freeze(self) -> ImageLoss:
        """Stop gradients to the parameters (tuned metrics are frozen, as the paper's provider does)."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def extra_repr(self) -> str:
        rng = "" if self.value_range == (0.0, 1.0) else f", value_range={self.value_range}"
        return f"colorspace={self.colorspace!r}, reduction={self.reduction!r}{rng}"


#: parameter dtypes that a loss refuses (see ImageLoss.forward)
_SIXTEEN_BIT = (torch.float16, torch.bfloat16)


def _notes_meta_constants(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a loss' constructor so that the instance notes which of its tensors outside the state dict
    (constant buffers such as transform matrices, a frozen backbone) were built on the meta device.

    Deferred initialisation (build under ``torch.device("meta")``, then ``to_empty()`` and
    ``load_state_dict()``) restores only what the state dict holds: those tensors would be left
    uninitialised memory and the loss would return garbage. :meth:`ImageLoss.forward` refuses such a
    loss on real inputs instead (meta inputs, for shapes, still work).
    """

    @functools.wraps(init)
    def noting(self: ImageLoss, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)
        # once, after the whole constructor: each class of a hierarchy has its own wrapped __init__, and an
        # inner one runs before the outer ones have finished building the instance
        if type(self).__init__ is not noting:
            return
        if not self._rebuilds_constants and any(t.is_meta for t in (*self.parameters(), *self.buffers())):
            in_state = set(self.state_dict(keep_vars=True))
            named = (*self.named_parameters(), *self.named_buffers())
            self._meta_constants = tuple(n for n, t in named if t.is_meta and n not in in_state)

    return noting


def _rounded_message(loss: ImageLoss) -> str:
    rounded = [(n, p.dtype) for n, p in loss.named_parameters() if p.dtype in _SIXTEEN_BIT]
    names = ", ".join(n for n, _ in rounded[:3]) + (", ..." if len(rounded) > 3 else "")
    dtype = rounded[0][1]
    return (
        f"{type(loss).__name__} parameters are {dtype} ({names}): a dtype cast of the module rounded them, and "
        "the loss would silently compute with the rounded values (it computes 16-bit images in float32 "
        "anyway); keep the loss in float32 or float64: loss.float() (e.g. after model.half()); 16-bit "
        "inputs are accepted as they are"
    )


def _meta_message(loss: ImageLoss) -> str:
    names = ", ".join(loss._meta_constants[:4]) + (", ..." if len(loss._meta_constants) > 4 else "")
    return (
        f"this {type(loss).__name__} was built on the meta device: its constants outside the state dict "
        f"({names}) are not restored by to_empty() and load_state_dict(), so it would compute with "
        "uninitialised memory; build the loss on a real device (it is built from its options and weight "
        "files, no deferred initialisation needed) and move it with .to(device)"
    )


def _forward_of(cls: type) -> Callable[..., torch.Tensor]:
    """A copy of :meth:`ImageLoss.forward` with its own code object, for ``cls``.

    ``torch.compile`` keeps its compiled graphs per code object, at most
    ``torch._dynamo.config.recompile_limit`` (8) of them. With every loss sharing one ``forward``,
    the ninth loss class or mode compiled in one process (say, nine of the registered losses) hit
    that limit: an error under ``fullgraph=True``, otherwise a silent fall-back to eager code. A
    code object per class gives each loss its own limit (and its name in profiles and tracebacks).
    """
    base = ImageLoss.forward
    code = base.__code__
    if hasattr(code, "co_qualname"):  # Python >= 3.11; replace() gives a new code object either way
        code = code.replace(co_qualname=f"{cls.__qualname__}.forward")
    else:  # pragma: no cover
        code = code.replace()
    forward = types.FunctionType(code, base.__globals__, base.__name__, base.__defaults__, base.__closure__)
    forward.__kwdefaults__ = base.__kwdefaults__
    functools.update_wrapper(forward, base)
    forward.__qualname__ = f"{cls.__qualname__}.forward"
    forward.__module__ = cls.__module__  # where pickle finds it by its qualified name
    forward._image_loss_forward = True  # type: ignore[attr-defined]
    del forward.__wrapped__  # it is not a wrapper: inspect and docs should read this function itself
    return forward


def custom_backward_applies(input: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether a loss' hand-written backward applies: a plain input that needs a gradient, a fixed target.

    That is the usual case (a prediction against data). Under ``torch.func`` transforms (grad, vmap;
    of either tensor) autograd.Functions without vmap rules do not apply, nor to forward-mode AD's
    dual tensors (no ``jvp``), and under ``torch.compile`` the compiler fuses the plain form itself:
    those take the plain autograd path.
    """
    if target.requires_grad or not input.requires_grad or not torch.is_grad_enabled():
        return False
    return not torch.compiler.is_compiling() and not hand_written_autograd_refused(input, target)


def grey_channels(colorspace: str) -> int | tuple[int, ...]:
    """Channel counts a loss accepts: 3 for RGB; 1 or 3 (converted to BT.601 grey) for LA."""
    return 3 if colorspace == "RGB" else (1, 3)
