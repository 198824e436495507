"""genloss: loss functions for image generation.

Public API::

    from genloss import WatsonDFT, SSIMLoss, CorrWise, get_loss, list_losses

    loss_fn = WatsonDFT()                           # tuned weights, nn.Module
    loss = loss_fn(prediction, target)              # NCHW float in [0, 1]
    get_loss("SSIM", reduction="none")              # the same classes, by name

The loss classes are imported on first access, so ``import genloss`` and ``get_loss('L1')`` stay cheap
(no torchvision, no flow estimators).
"""

from __future__ import annotations

import importlib
from typing import Any

from .registry import LossProvider, get_loss, list_losses, loss_info, register_loss

__version__ = "0.1.0"

#: public name -> module that defines it (imported lazily by ``__getattr__``)
_LAZY = {
    "L1Loss": "genloss.losses.pixel",
    "L2Loss": "genloss.losses.pixel",
    "SSIMLoss": "genloss.losses.ssim",
    "MSSSIMLoss": "genloss.losses.ssim",
    "WatsonDCT": "genloss.losses.watson",
    "WatsonDFT": "genloss.losses.watson",
    "WatsonVGG": "genloss.losses.watson_vgg",
    "DeepLoss": "genloss.losses.deep",
    "AdaptiveLoss": "genloss.losses.adaptive",
    "ImageLoss": "genloss.losses.base",
    "CorrWise": "genloss.corrwise",
    "functional": "genloss.functional",
}

__all__ = [
    *_LAZY,
    "LossProvider",
    "get_loss",
    "list_losses",
    "loss_info",
    "register_loss",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'genloss' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if name == "functional" else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
