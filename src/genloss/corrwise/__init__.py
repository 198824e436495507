"""Correspondence-wise losses (Geng, Hamilton, Owens, CVPR 2022): align with optical flow, then compare.

``CorrWise(base_loss, flow=...)`` wraps any image loss and returns a tensor; ``CorrWise.align`` returns an
:class:`Alignment` (flow, warped prediction, mask, loss parts). The flow estimators live in
:mod:`genloss.corrwise.flow` behind one registry (``get_flow``, ``list_flows``, ``register_flow``);
warping and occlusion helpers are here too.
"""

from .flow import FlowEstimator, get_flow, list_flows, register_flow
from .occlusion import forward_backward_consistency, inside_frame
from .warp import backward_warp, flow_to_grid, forward_warp, pixel_grid, resize_flow
from .wrapper import DEFAULT_FLOW, Alignment, CorrWise

__all__ = [
    "DEFAULT_FLOW",
    "Alignment",
    "CorrWise",
    "FlowEstimator",
    "backward_warp",
    "flow_to_grid",
    "forward_backward_consistency",
    "forward_warp",
    "get_flow",
    "inside_frame",
    "list_flows",
    "pixel_grid",
    "register_flow",
    "resize_flow",
]
