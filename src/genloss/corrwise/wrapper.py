"""``CorrWise``: any image loss computed after aligning prediction and target with optical flow.

Geng, Hamilton and Owens, *Comparing Correspondences: Video Prediction with Correspondence-wise
Losses*, CVPR 2022. See ``docs/corrwise.md`` for when to use it and every option.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_pair
from . import regularizers as R
from .flow.base import get_flow
from .occlusion import forward_backward_consistency
from .warp import PADDING_MODES, resize_flow
from .warp import backward_warp as _backward_warp
from .warp import forward_warp as _forward_warp

#: the flow estimator used when ``flow=None``: classical, batched, no weights (works offline)
DEFAULT_FLOW = "coarse2fine"

FlowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
            receives the images detached and clamped to [0, 1]; images whose channel count is not 1 or
            3 are averaged to one channel for it.
        backward_warp: ``True`` (default, the paper's): estimate the flow on the target's pixels and
            *sample* the prediction there (``grid_sample``). ``False``: estimate the flow on the
            prediction's pixels and *splat* the prediction forward into the target's frame
            (differentiable bilinear splatting, normalised by the splatted weight). Target pixels that
            nothing lands on (holes) are always masked (see ``occlusion`` for how).
        return_warped: also return the warped prediction: ``(loss, warped)``.
        return_info: also return a dict: ``(loss, info)`` (or ``(loss, warped, info)`` with
            ``return_warped``). Keys: ``'flow'`` (estimated flow, before scaling; on the target's pixels
            for backward warping, the prediction's for forward warping), ``'warped'`` (prediction in
            the target's frame, before masking), ``'mask'`` ((N, 1, H, W) in the target's frame: 1 =
            compared, 0 = masked; ``None`` without masking), ``'base_loss'``, ``'regularization'``
            (dict of the weighted terms), and with ``symmetric`` the same for the reverse direction
            (``'flow_reverse'``, ``'warped_reverse'``, ``'mask_reverse'``).
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
        occlusion_alpha1, occlusion_alpha2: the tolerances of the consistency check (UnFlow's 0.01
            and 0.5 squared pixels).
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
        flow_kwargs: keyword arguments for :func:`get_flow` when ``flow`` is a name.

    The regularisers use the flow in units of the image size (the paper's scaling), computed before
    ``scale_clip``. With ``symmetric`` they are averaged over the two directions. They are added to
    the base loss: to a scalar as the batch mean, to an [N] result per image. Of a detached flow they
    would be constants, so a positive weight with ``detach_flow=True`` raises.

    Shapes: ``input`` (prediction) and ``target`` are (N, C, H, W) float tensors of the same shape on
    the same device (any C the base loss accepts). Works on CPU and CUDA; all flow and warp tensors
    are created on the inputs' device.
    """

    def __init__(
        self,
        base_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        flow: str | nn.Module | FlowFn | None = None,
        *,
        backward_warp: bool = True,
        return_warped: bool = False,
        return_info: bool = False,
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
    ) -> None:
        super().__init__()
        if not callable(base_loss):
            raise TypeError(f"base_loss must be callable (e.g. nn.L1Loss()), got {type(base_loss).__name__}")
        if not isinstance(scale_clip, (int, float)) or not 0 <= scale_clip < 1:
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

        self.base_loss = base_loss
        if flow is None:
            flow = DEFAULT_FLOW
        if isinstance(flow, str):
            flow = get_flow(flow, **dict(flow_kwargs or {}))
        elif flow_kwargs:
            raise ValueError("flow_kwargs only apply when flow is a name")
        if not callable(flow):
            raise TypeError(f"flow must be None, a flow name or a callable/module, got {type(flow).__name__}")
        self.flow = flow
        self.backward_warp = bool(backward_warp)
        self.return_warped = bool(return_warped)
        self.return_info = bool(return_info)
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

    @staticmethod
    def _check_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
        if size is None:
            return None
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if len(hw) != 2 or not all(isinstance(s, int) and s >= 1 for s in hw):
            raise ValueError(f"flow_size must be None, a positive int or a (height, width) pair, got {size!r}")
        return hw  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return (f"backward_warp={self.backward_warp}, scale_clip={self.scale_clip}, "
                f"padding_mode={self.padding_mode!r}, symmetric={self.symmetric}, occlusion={self.occlusion}, "
                f"flow_size={self.flow_size}")

    # -- flow ---------------------------------------------------------------------------------------
    def _flow_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach() if self.detach_flow else x
        if x.shape[1] not in (1, 3):
            x = x.mean(1, keepdim=True)
        x = x.clamp(0, 1)
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
        flow = resize_flow(flow.to(image1.dtype), tuple(image1.shape[2:]))
        return flow.detach() if self.detach_flow else flow

    # -- loss ---------------------------------------------------------------------------------------
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Any:
        """Correspondence-wise loss of prediction ``input`` against ``target``.

        Args:
            input: prediction, (N, C, H, W) float tensor (values in [0, 1] for genloss base losses).
            target: reference, same shape and device.

        Returns:
            the base loss' output (plus regularisers); with ``return_warped`` / ``return_info`` a tuple
            ``(loss, warped)``, ``(loss, info)`` or ``(loss, warped, info)``.
        """
        pred, target = check_pair(input, target)
        out_device = pred.device
        if self.device is not None:
            pred, target = pred.to(self.device), target.to(self.device)
        n = pred.shape[0]

        # flow_tp: on the target's pixels into the prediction; flow_pt: the reverse. Both directions
        # are needed for occlusion or symmetry, and then come from one batched call.
        need_tp = self.backward_warp or self.symmetric or self.occlusion
        need_pt = (not self.backward_warp) or self.symmetric or self.occlusion
        if need_tp and need_pt:
            both = self.estimate_flow(torch.cat((target, pred)), torch.cat((pred, target)))
            flow_tp, flow_pt = both[:n], both[n:]
        elif need_tp:
            flow_tp, flow_pt = self.estimate_flow(target, pred), None
        else:
            flow_tp, flow_pt = None, self.estimate_flow(pred, target)

        loss, warped, mask, flow = self._direction(pred, target, flow_tp, flow_pt)
        info: dict[str, Any] = {"flow": flow, "warped": warped, "mask": mask}
        reg_images = [(flow, target if self.backward_warp else pred)]
        if self.symmetric:
            loss_r, warped_r, mask_r, flow_r = self._direction(target, pred, flow_pt, flow_tp)
            info.update(flow_reverse=flow_r, warped_reverse=warped_r, mask_reverse=mask_r)
            loss = loss + loss_r
            reg_images.append((flow_r, pred if self.backward_warp else target))
        info["base_loss"] = loss

        terms = self._regularizers(reg_images)
        info["regularization"] = terms
        if terms:
            reg = sum(terms.values())
            if loss.dim() == 0:
                loss = loss + reg.mean()
            elif loss.shape == (n,):
                loss = loss + reg
            else:
                raise ValueError(f"flow regularisers need a base loss that returns a scalar or one value per image, "
                                 f"got shape {tuple(loss.shape)}")
        if loss.device != out_device:
            loss = loss.to(out_device)
        if self.return_info:
            return (loss, warped, info) if self.return_warped else (loss, info)
        return (loss, warped) if self.return_warped else loss

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
        return self.base_loss(compared, fixed), warped, mask, flow

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
