"""``CorrWise``: any image loss computed after aligning prediction and target with optical flow.

Geng, Hamilton and Owens, *Comparing Correspondences: Video Prediction with Correspondence-wise
Losses*, CVPR 2022. See ``docs/corrwise.md`` for when to use it and every option.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._options import check_options, strict_options
from .._validation import (
    ValueRange,
    check_pair,
    check_value_range,
    check_values,
    full_precision,
    to_unit_range,
)
from ..losses.base import ImageLoss
from . import regularizers as R
from .flow.base import check_flow_options, get_flow
from .occlusion import forward_backward_consistency
from .warp import PADDING_MODES, resize_flow
from .warp import backward_warp as _backward_warp
from .warp import forward_warp as _forward_warp

__all__ = ["DEFAULT_FLOW", "Alignment", "CorrWise"]

#: the flow estimator used when ``flow=None``: classical, batched, no weights (works offline)
DEFAULT_FLOW = "coarse2fine"

#: flows longer than this (pixels) are refused with NaN/Inf: no image is a million pixels wide, so
#: such a value is an estimator failure, never a motion
FLOW_LIMIT = 1e6

FlowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Alignment:
    """What :meth:`CorrWise.align` computed: the loss, its parts, and the flow, warp and mask behind it.

    Directions: ``flow`` is defined on the target's pixels for backward warping (``p`` of the target
    matches ``p + flow[p]`` of the prediction) and on the prediction's pixels for forward warping.
    ``warped`` is the prediction in the target's frame (before masking), ``mask`` (N, 1, H, W) is 1
    where the pixel is compared and 0 where it is masked (``None`` without masking). With
    ``symmetric=True`` the ``*_reverse`` fields hold the same for the target warped into the
    prediction's frame; otherwise they are ``None``.
    """

    #: what ``forward`` returns: ``base_loss`` plus the regularisation terms
    loss: torch.Tensor
    #: the base loss of the aligned pair (the sum of both directions with ``symmetric``)
    base_loss: torch.Tensor
    #: the weighted regularisation terms by name (``flow_magnitude``, ``flow_smoothness``, ``out_of_frame``)
    regularization: Mapping[str, torch.Tensor]
    #: estimated flow (N, 2, H, W) in pixels, before ``scale_clip``
    flow: torch.Tensor
    #: the prediction warped into the target's frame (N, C, H, W)
    warped: torch.Tensor
    #: (N, 1, H, W) compare mask in the target's frame, or ``None``
    mask: torch.Tensor | None = None
    flow_reverse: torch.Tensor | None = None
    warped_reverse: torch.Tensor | None = None
    mask_reverse: torch.Tensor | None = None


class CorrWise(nn.Module):
    r"""Correspondence-wise ``base_loss``: align the prediction to the target with optical flow, then compare.

    With the default backward warping the loss is

    .. math::
        L_{corr}(\hat y, y) = L\big(\mathrm{warp}(\hat y,\ (1 - \epsilon)\, F(y, \hat y)),\ y\big)

    where :math:`F(y, \hat y)` is the flow from the target's pixels into the prediction, estimated
    without gradient, and :math:`\epsilon` = ``scale_clip``. The prediction is resampled into the
    **target's frame** and compared with the target there, as in the paper's code (which warps its
    first argument, the prediction, onto the second). Gradients reach the prediction only through the
    (differentiable) warp: the loss rewards the right content at approximately the right place.

    Args:
        base_loss: the loss to align, any callable ``base_loss(input, target)`` on (N, C, H, W)
            tensors: ``nn.L1Loss()``, ``nn.MSELoss()``, every genloss loss (``get_loss('Watson-DFT')``,
            which expect values in [0, 1]) or a user module. Its reduction is passed through unchanged:
            CorrWise returns whatever it returns (scalar, [N], or elementwise).
        flow: the flow estimator. ``None`` (default) is ``'coarse2fine'``, a batched classical
            estimator in PyTorch that needs no weights; a name from :func:`genloss.corrwise.get_flow`
            (``'coarse2fine'``, ``'dis'``, ``'farneback'``, ``'raft'``, ``'raft-small'``, ``'pwcnet'``);
            or any module/callable ``flow(image1, image2) -> (N, 2, H, W)`` in pixels with genloss'
            convention (pixel ``p`` of ``image1`` corresponds to ``p + flow[p]`` in ``image2``). It
            receives the images detached and mapped from ``value_range`` onto [0, 1] (never clamped);
            images whose channel count is not 1 or 3 are averaged to one channel for it. A user's
            estimator class can be registered by name with :func:`genloss.corrwise.register_flow`.
        backward_warp: ``True`` (default, the paper's): estimate the flow on the target's pixels and
            *sample* the prediction there (``grid_sample``). ``False``: estimate the flow on the
            prediction's pixels and *splat* the prediction forward into the target's frame
            (differentiable bilinear splatting, normalised by the splatted weight). Target pixels that
            nothing lands on (holes) are always masked (see ``occlusion`` for how).
        return_warped: also return the warped prediction: ``(loss, warped)``.
        padding_mode: what backward warping reads outside the prediction: ``'reflection'``
            (default, the paper's), ``'border'`` or ``'zeros'``.
        scale_clip: the paper's epsilon, in [0, 1): the flow is multiplied by ``1 - scale_clip``
            before warping, so the prediction is only moved 90% of the way (default 0.1) and a
            residual gradient keeps pulling content to its correct place. 0 aligns fully.
        symmetric: also warp the target into the prediction's frame and *add* that loss, as the
            paper's code does (``forward_loss + backward_loss``, so the value is about twice the
            one-directional loss). Default ``False``: one direction, half the flow cost (the default
            estimator then meets its time budget). Use ``True`` to reproduce the paper.
        flow_size: compute the flow at this (H, W) (an int means square) and resize it (vectors
            rescaled) to the image size; the warp and the base loss always run at full resolution.
            ``None`` (default): the flow is computed at the image size. Smaller is faster; larger can
            help learned estimators on small images.
        occlusion: mask pixels whose flow fails the forward-backward consistency check (UnFlow's
            ``|f_ab + f_ba(p + f_ab)|^2 < alpha1 (|f_ab|^2 + |f_ba|^2) + alpha2``; needs the flow in
            both directions, computed in one batched call). Masked pixels of the warped prediction are
            replaced by the target's own pixels, so they contribute zero to a pixelwise loss and a
            perceptual loss sees identical content in both images there. (With a ``'mean'``
            reduction, masked pixels count as zeros in the average.) Default ``False``, as the paper.
        occlusion_alpha1: the relative tolerance ``alpha1`` of the consistency check (UnFlow's 0.01).
        occlusion_alpha2: the absolute tolerance ``alpha2`` of the consistency check, in squared
            pixels (UnFlow's 0.5).
        detach_flow: compute the flow under ``torch.no_grad`` (default, the paper's ``detach=True``).
            ``False`` lets gradients flow through a differentiable estimator into the prediction (and
            into the estimator's parameters if they require grad); needed for the regularisers to
            have an effect. ``'dis'``/``'farneback'`` are not differentiable.
        flow_magnitude_weight: weight of the mean flow magnitude (the paper's ``reg_flow_mag``).
        flow_smoothness_weight: weight of the mean flow gradient magnitude (``reg_flow_grad_mag``);
            with ``edge_aware`` it is the edge-aware smoothness instead.
        flow_reg_norm: 1 or 2, the vector norm of both terms above (``flow_reg_norm``).
        edge_aware: 0 (plain smoothness), 1 (edge-aware first order) or 2 (edge-aware second order),
            the paper's ``edge_aware``; edges are those of the image the flow is defined on.
        edge_constant: edge sensitivity of the edge-aware smoothness (the paper's 150).
        out_of_frame_weight: weight of a penalty on flow that points outside the frame (the paper's
            ``edge_penalty``, whose docstring describes this).
        faithful_edge_penalty: use the paper code's penalty instead, ``mean(max(|flow| - 1, 0))`` in
            pixels, which penalises every flow longer than one pixel rather than out-of-frame flow.
            Only for reproducing published settings.
        device: compute flow, warp and loss on this device and return the loss on the input's device
            (the paper's ``device``); the estimator is moved there. ``None``: the inputs' device.
        flow_kwargs: keyword arguments for :func:`get_flow` when ``flow`` is a name, forwarded strictly
            to the estimator's class (a misspelt option is a ``TypeError`` listing the valid ones).
        value_range: ``(lo, hi)``, the range of the images (default (0, 1); (0, 255) for 8-bit data,
            (-1, 1) for tanh outputs). Images clearly outside it (by more than 5% of its width), NaN
            and Inf are refused. Only the flow estimator sees the images mapped onto [0, 1]; the base
            loss receives them in their own units, so it must accept that range itself (e.g.
            ``get_loss('SSIM', value_range=(0, 255))``; a genloss loss of another ``value_range`` is
            refused with a ``ValueError`` naming both).

    The regularisers use the flow in units of the image size (the paper's scaling), computed before
    ``scale_clip``. With ``symmetric`` they are averaged over the two directions. They are added to
    the base loss: to a scalar as the batch mean, to an [N] result per image. Of a detached flow they
    would be constants, so a positive weight with ``detach_flow=True`` raises.

    Shape:
        ``input`` (prediction) and ``target``: (N, C, H, W) float tensors of the same shape on the
        same device (any C the base loss accepts, H, W >= 1). The flow and mask fields of
        :meth:`align` are (N, 2, H, W) and (N, 1, H, W).

    Returns:
        ``forward`` returns a tensor: what the base loss returns (a scalar, [N], or elementwise) plus
        the regularisers, >= 0 for non-negative base losses, 0 for identical images with a pixelwise
        loss. With ``return_warped=True`` (the paper's option): ``(loss, warped)``. The flow, warp,
        mask and the loss' parts come from :meth:`align`. Dtype: 16-bit images are computed in float32
        (the genloss dtype rule), float64 stays float64; warps always sample in at least float32.

    Raises:
        TypeError: non-tensor or non-float images, a non-callable ``base_loss`` or ``flow``, an
            unknown ``flow_kwargs`` option.
        ValueError: bad shapes (not 4-D, zero height or width, mismatched pair), images outside
            ``value_range`` or containing NaN/Inf, a flow estimator that returns the wrong shape or
            NaN/Inf values, invalid options. On CUDA the value checks become device-side assertions
            after the first calls (no synchronisation; see :mod:`genloss._validation`).

    References:
        D. Geng, M. Hamilton, A. Owens, *Comparing Correspondences: Video Prediction with
        Correspondence-wise Losses*, CVPR 2022 (code: github.com/dangeng/CorrWiseLosses).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from genloss.corrwise import CorrWise
        >>> target = torch.rand(2, 3, 32, 32)
        >>> prediction = torch.roll(target, shifts=1, dims=3)
        >>> loss = CorrWise(nn.L1Loss())
        >>> loss(prediction, target).shape
        torch.Size([])
        >>> a = loss.align(prediction, target)
        >>> a.flow.shape, a.warped.shape, a.mask is None
        (torch.Size([2, 2, 32, 32]), torch.Size([2, 3, 32, 32]), True)
        >>> CorrWise(nn.L1Loss(), value_range=(0, 255))(255 * prediction, 255 * target).shape
        torch.Size([])
    """

    @strict_options
    def __init__(
        self,
        base_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        flow: str | nn.Module | FlowFn | None = None,
        *,
        backward_warp: bool = True,
        return_warped: bool = False,
        padding_mode: str = "reflection",
        scale_clip: float = 0.1,
        symmetric: bool = False,
        flow_size: int | tuple[int, int] | None = None,
        occlusion: bool = False,
        occlusion_alpha1: float = 0.01,
        occlusion_alpha2: float = 0.5,
        detach_flow: bool = True,
        flow_magnitude_weight: float = 0.0,
        flow_smoothness_weight: float = 0.0,
        flow_reg_norm: int = 1,
        edge_aware: int = 0,
        edge_constant: float = 150.0,
        out_of_frame_weight: float = 0.0,
        faithful_edge_penalty: bool = False,
        device: str | torch.device | None = None,
        flow_kwargs: Mapping[str, Any] | None = None,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        if not callable(base_loss):
            raise TypeError(f"base_loss must be callable (e.g. nn.L1Loss()), got {type(base_loss).__name__}")
        if not 0 <= scale_clip < 1:  # (a finite float by now: strict_options)
            raise ValueError(f"scale_clip must be in [0, 1) (the flow is scaled by 1 - scale_clip), got {scale_clip!r}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if flow_reg_norm not in (1, 2):
            raise ValueError(f"flow_reg_norm must be 1 or 2, got {flow_reg_norm!r}")
        if edge_aware not in (0, 1, 2):
            raise ValueError(f"edge_aware must be 0, 1 or 2, got {edge_aware!r}")
        weights = {"flow_magnitude_weight": flow_magnitude_weight, "flow_smoothness_weight": flow_smoothness_weight,
                   "out_of_frame_weight": out_of_frame_weight}
        for name, value in weights.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if detach_flow and any(v > 0 for v in weights.values()):
            raise ValueError(
                "flow regularisers have no effect on a detached flow (they would add a constant); "
                "pass detach_flow=False with a differentiable flow estimator to use them"
            )
        if occlusion_alpha1 < 0 or occlusion_alpha2 < 0:
            raise ValueError("occlusion_alpha1 and occlusion_alpha2 must be >= 0")
        self.flow_size = self._check_size(flow_size)
        self.value_range: ValueRange = check_value_range(value_range)
        if isinstance(base_loss, ImageLoss) and base_loss.value_range != self.value_range:
            # the base loss receives the aligned images in CorrWise's units: with another range it would
            # refuse them (or read them in the wrong units), naming only its own range
            raise ValueError(
                f"CorrWise(value_range={self.value_range}) passes the aligned images to its base loss "
                f"{type(base_loss).__name__} in that range, but the base loss has value_range={base_loss.value_range}; "
                f"build it with value_range={self.value_range} too"
            )

        self.base_loss = base_loss
        if flow is None:
            flow = DEFAULT_FLOW
        if isinstance(flow, str):
            check_flow_options(flow, dict(flow_kwargs or {}))
            flow = get_flow(flow, **dict(flow_kwargs or {}))
        elif flow_kwargs:
            raise ValueError("flow_kwargs only apply when flow is a name")
        if not callable(flow):
            raise TypeError(f"flow must be None, a flow name or a callable/module, got {type(flow).__name__}")
        self.flow = flow
        self.backward_warp = bool(backward_warp)
        self.return_warped = bool(return_warped)
        self.padding_mode = padding_mode
        self.scale_clip = float(scale_clip)
        self.symmetric = bool(symmetric)
        self.occlusion = bool(occlusion)
        self.occlusion_alpha1 = float(occlusion_alpha1)
        self.occlusion_alpha2 = float(occlusion_alpha2)
        self.detach_flow = bool(detach_flow)
        self.flow_magnitude_weight = float(flow_magnitude_weight)
        self.flow_smoothness_weight = float(flow_smoothness_weight)
        self.flow_reg_norm = int(flow_reg_norm)
        self.edge_aware = int(edge_aware)
        self.edge_constant = float(edge_constant)
        self.out_of_frame_weight = float(out_of_frame_weight)
        self.faithful_edge_penalty = bool(faithful_edge_penalty)
        self.device = torch.device(device) if device is not None else None
        if self.device is not None and isinstance(self.flow, nn.Module):
            self.flow.to(self.device)

    @classmethod
    def from_config(cls, base_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    options: Mapping[str, Any] | None = None) -> CorrWise:
        """Build from a config's ``corrwise`` mapping, strictly: an unknown key is a ``TypeError`` naming it.

        Args:
            base_loss: the loss to align.
            options: CorrWise's keyword arguments (``flow_kwargs`` are checked against the estimator).

        Raises:
            TypeError: an unknown or misspelt option (the message lists the valid ones).

        Example:
            >>> from torch import nn
            >>> from genloss.corrwise import CorrWise
            >>> CorrWise.from_config(nn.L1Loss(), {"scale_clip": 0.0}).scale_clip
            0.0
        """
        opts = dict(options or {})
        check_options("CorrWise", cls, opts, exclude=("base_loss",))
        return cls(base_loss, **opts)

    @staticmethod
    def _check_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
        if size is None:
            return None
        message = f"flow_size must be None, a positive int or a (height, width) pair of them, got {size!r}"
        try:
            hw = (size, size) if isinstance(size, numbers.Integral) else tuple(size)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(message) from None
        # (True is an int to Python, but no size)
        if len(hw) != 2 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in hw):
            raise ValueError(message)
        return int(hw[0]), int(hw[1])

    def extra_repr(self) -> str:
        return (f"backward_warp={self.backward_warp}, scale_clip={self.scale_clip}, "
                f"padding_mode={self.padding_mode!r}, symmetric={self.symmetric}, occlusion={self.occlusion}, "
                f"flow_size={self.flow_size}")

    # -- flow ---------------------------------------------------------------------------------------
    def _flow_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach() if self.detach_flow else x
        if x.shape[1] not in (1, 3):
            x = x.mean(1, keepdim=True)
        # the estimators work on [0, 1]: map the declared range exactly (never clamp: clamping a
        # [0, 255] image turns it into a flat white frame and the flow silently becomes zero)
        x = to_unit_range(x, self.value_range)
        if self.flow_size is not None and tuple(x.shape[2:]) != self.flow_size:
            x = F.interpolate(x, size=self.flow_size, mode="bilinear", align_corners=False, antialias=True)
        return x

    def estimate_flow(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        """Flow (N, 2, H, W) from ``image1``'s pixels into ``image2`` as the wrapper computes it."""
        a, b = self._flow_input(image1), self._flow_input(image2)
        if self.detach_flow:
            with torch.no_grad():
                flow = self.flow(a, b)
        else:
            flow = self.flow(a, b)
        n = image1.shape[0]
        if not isinstance(flow, torch.Tensor) or flow.dim() != 4 or flow.shape[:2] != (n, 2) \
                or flow.shape[2:] != a.shape[2:]:
            got = tuple(flow.shape) if isinstance(flow, torch.Tensor) else type(flow).__name__
            raise ValueError(f"the flow estimator must return a tensor of shape {(n, 2, *a.shape[2:])} "
                             f"(pixels, x then y), got {got}")
        self._check_flow_values(flow)
        flow = resize_flow(flow.to(image1.dtype), tuple(image1.shape[2:]))
        return flow.detach() if self.detach_flow else flow

    def _check_flow_values(self, flow: torch.Tensor) -> None:
        """Refuse NaN/Inf flow (sync-free on CUDA): warping by it would silently give a wrong loss."""
        try:
            check_values(flow, "flow", (-FLOW_LIMIT, FLOW_LIMIT))
        except ValueError as e:
            name = type(self.flow).__name__
            raise ValueError(f"the flow estimator {name} returned NaN or Inf values ({e}); the loss would be "
                             "meaningless. Check its inputs and weights") from None

    # -- loss ---------------------------------------------------------------------------------------
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Correspondence-wise loss of prediction ``input`` against ``target``.

        Args:
            input: prediction, (N, C, H, W) float tensor with values in ``value_range``.
            target: reference, same shape and device.

        Returns:
            the base loss' output plus the regularisers; ``(loss, warped)`` with ``return_warped``.
        """
        a = self.align(input, target)
        return (a.loss, a.warped) if self.return_warped else a.loss

    def align(self, prediction: torch.Tensor, target: torch.Tensor) -> Alignment:
        """Align ``prediction`` to ``target`` and compare them; every intermediate result in an :class:`Alignment`.

        Args:
            prediction: (N, C, H, W) float tensor with values in ``value_range``.
            target: reference, same shape and device.

        Returns:
            an :class:`Alignment`; its ``loss`` is what :meth:`forward` returns (differentiable with
            respect to the prediction).

        Raises:
            ValueError, TypeError: as :class:`CorrWise`.
        """
        pred, target = check_pair(prediction, target)
        # CorrWise checks the range itself (its flow estimator needs it), whatever its base loss declares
        check_values(pred, "CorrWise input", self.value_range)
        check_values(target, "CorrWise target", self.value_range)
        out_device = pred.device
        if self.device is not None:
            pred, target = pred.to(self.device), target.to(self.device)
        with full_precision(pred.device.type):
            a = self._align(pred, target)
        if a.loss.device != out_device:
            a = Alignment(**{**a.__dict__, "loss": a.loss.to(out_device)})
        return a

    def _flows(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(flow_tp, flow_pt)``: target -> prediction and the reverse, each only where needed."""
        n = pred.shape[0]
        need_tp = self.backward_warp or self.symmetric or self.occlusion
        need_pt = (not self.backward_warp) or self.symmetric or self.occlusion
        if need_tp and need_pt:  # both directions from one batched call
            both = self.estimate_flow(torch.cat((target, pred)), torch.cat((pred, target)))
            return both[:n], both[n:]
        if need_tp:
            return self.estimate_flow(target, pred), None
        return None, self.estimate_flow(pred, target)

    def _align(self, pred: torch.Tensor, target: torch.Tensor) -> Alignment:
        n = pred.shape[0]
        flow_tp, flow_pt = self._flows(pred, target)
        loss, warped, mask, flow = self._direction(pred, target, flow_tp, flow_pt)
        reg_images = [(flow, target if self.backward_warp else pred)]
        reverse: dict[str, torch.Tensor | None] = {}
        if self.symmetric:
            loss_r, warped_r, mask_r, flow_r = self._direction(target, pred, flow_pt, flow_tp)
            reverse = {"flow_reverse": flow_r, "warped_reverse": warped_r, "mask_reverse": mask_r}
            loss = loss + loss_r
            reg_images.append((flow_r, pred if self.backward_warp else target))
        base = loss
        terms = self._regularizers(reg_images)
        if terms:
            reg = sum(terms.values())
            if loss.dim() == 0:
                loss = loss + reg.mean()
            elif loss.shape == (n,):
                loss = loss + reg
            else:
                raise ValueError(f"flow regularisers need a base loss that returns a scalar or one value per image, "
                                 f"got shape {tuple(loss.shape)}")
        return Alignment(loss=loss, base_loss=base, regularization=terms, flow=flow, warped=warped, mask=mask,
                         **reverse)

    def _direction(
        self, moving: torch.Tensor, fixed: torch.Tensor, flow_fm: torch.Tensor | None, flow_mf: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Warp ``moving`` into ``fixed``'s frame and compare. ``flow_fm``: fixed -> moving; ``flow_mf``: reverse."""
        scale = 1.0 - self.scale_clip
        mask = None
        if self.backward_warp:
            assert flow_fm is not None
            warped = _backward_warp(moving, flow_fm * scale, padding_mode=self.padding_mode)
            if self.occlusion:
                assert flow_mf is not None
                mask = forward_backward_consistency(flow_fm, flow_mf, self.occlusion_alpha1, self.occlusion_alpha2)
            flow = flow_fm
        else:
            assert flow_mf is not None
            visible = None
            if self.occlusion:
                assert flow_fm is not None
                # occluded pixels of the moving image have no place in the fixed frame: they do not splat
                visible = forward_backward_consistency(flow_mf, flow_fm, self.occlusion_alpha1, self.occlusion_alpha2)
            warped, weight = _forward_warp(moving, flow_mf * scale, weight=visible)
            mask = (weight.detach() > 1e-3).to(warped.dtype)  # holes: nothing landed there
            flow = flow_mf
        compared = warped if mask is None else torch.lerp(fixed, warped, mask)
        value = self.base_loss(compared, fixed)
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"the base loss must return a torch.Tensor, got {type(value).__name__} "
                            f"({self.base_loss!r})")
        return value, warped, mask, flow

    def _regularizers(self, flows_and_images: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        k = len(flows_and_images)
        if self.flow_magnitude_weight > 0:
            terms["flow_magnitude"] = self.flow_magnitude_weight * sum(
                R.flow_magnitude(f, self.flow_reg_norm) for f, _ in flows_and_images) / k
        if self.flow_smoothness_weight > 0:
            if self.edge_aware:
                vals = [R.edge_aware_smoothness(f, img, self.edge_constant, second_order=self.edge_aware == 2)
                        for f, img in flows_and_images]
            else:
                vals = [R.flow_smoothness(f, self.flow_reg_norm) for f, _ in flows_and_images]
            terms["flow_smoothness"] = self.flow_smoothness_weight * sum(vals) / k
        if self.out_of_frame_weight > 0:
            penalty = R.large_flow_penalty if self.faithful_edge_penalty else R.out_of_frame_penalty
            terms["out_of_frame"] = self.out_of_frame_weight * sum(penalty(f) for f, _ in flows_and_images) / k
        return terms
