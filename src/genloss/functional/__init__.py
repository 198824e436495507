"""Functional twins of every loss: ``functional.ssim(input, target, ...)`` is ``SSIMLoss(...)(input, target)``.

Each function takes the same options as its class and shares its
implementation: it builds (once, cached per options and device) an instance in eval mode and calls
it, so the two can never disagree. Shapes, ranges and errors are those of the class.

| function | class |
|---|---|
| :func:`l1`, :func:`l2` | :class:`~genloss.L1Loss`, :class:`~genloss.L2Loss` |
| :func:`ssim`, :func:`ms_ssim` | :class:`~genloss.SSIMLoss`, :class:`~genloss.MSSSIMLoss` |
| :func:`watson_dct`, :func:`watson_dft` | :class:`~genloss.WatsonDCT`, :class:`~genloss.WatsonDFT` |
| :func:`watson_vgg` | :class:`~genloss.WatsonVGG` |
| :func:`adaptive` | :class:`~genloss.AdaptiveLoss` |
| :func:`deep_loss` | :class:`~genloss.DeepLoss` |

Modules are imported on first use, as for the classes. (The modules are named ``_<family>`` so that
a module never shadows the function of the same name, e.g. ``genloss.functional.ssim``.)
"""

from __future__ import annotations

import importlib
from typing import Any

#: function name -> module that defines it
_LAZY = {
    "l1": "genloss.functional._pixel",
    "l2": "genloss.functional._pixel",
    "ssim": "genloss.functional._ssim",
    "ms_ssim": "genloss.functional._ssim",
    "watson_dct": "genloss.functional._watson",
    "watson_dft": "genloss.functional._watson",
    "watson_vgg": "genloss.functional._watson_vgg",
    "adaptive": "genloss.functional._adaptive",
    "deep_loss": "genloss.functional._deep",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'genloss.functional' has no attribute {name!r}")
    loaded = importlib.import_module(module)
    # bind every function of that module at once (one import per family)
    for other, where in _LAZY.items():
        if where == module:
            globals()[other] = getattr(loaded, other)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted(__all__)
