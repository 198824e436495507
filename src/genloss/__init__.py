"""genloss: loss functions for image generation.

Public API::

    from genloss import get_loss, list_losses, LossProvider, CorrWise

    loss_fn = get_loss("Watson-DFT", colorspace="RGB")        # nn.Module
    loss = loss_fn(prediction, target)                         # NCHW float in [0, 1]
"""

from __future__ import annotations

from typing import Any

from .registry import LossProvider, get_loss, list_losses, loss_info, register_loss

__version__ = "0.1.0"

__all__ = ["CorrWise", "LossProvider", "get_loss", "list_losses", "loss_info", "register_loss", "__version__"]


def __getattr__(name: str) -> Any:
    # CorrWise pulls in the flow estimators; import it only when asked for.
    if name == "CorrWise":
        from .corrwise import CorrWise

        return CorrWise
    raise AttributeError(f"module 'genloss' has no attribute {name!r}")
