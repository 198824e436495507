"""The one place that knows every loss: name -> factory, with descriptions.

Loss modules register a factory with :func:`register_loss`. Every factory takes the keyword
arguments ``colorspace``, ``pretrained``, ``reduction``, ``deterministic``, ``image_size`` and
``weights_dir`` (and may take more), and returns an ``nn.Module`` ``loss(input, target)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

COLORSPACES = ("RGB", "LA")
_GREY_NAMES = {"la", "l", "grey", "gray", "greyscale", "grayscale", "grey-scale", "gray-scale"}


def normalize_colorspace(colorspace: str) -> str:
    """Map the accepted spellings to ``'RGB'`` or ``'LA'`` (greyscale); raise on anything else."""
    if not isinstance(colorspace, str):
        raise TypeError(f"colorspace must be a string, got {type(colorspace).__name__}")
    if colorspace.lower() == "rgb":
        return "RGB"
    if colorspace.lower() in _GREY_NAMES:
        return "LA"
    raise ValueError(f"colorspace must be 'RGB' or 'LA' (greyscale), got {colorspace!r}")


@dataclass(frozen=True)
class LossInfo:
    """What the registry knows of one loss."""

    name: str
    factory: Callable[..., nn.Module]
    description: str
    family: str
    aliases: tuple[str, ...] = ()
    #: weight files used with ``pretrained=True``, per colour space
    weight_files: dict[str, tuple[str, ...]] = field(default_factory=dict)


_REGISTRY: dict[str, LossInfo] = {}
_ALIASES: dict[str, str] = {}
_LOSS_MODULES = (
    "genloss.losses.pixel",
    "genloss.losses.ssim",
    "genloss.losses.watson",
    "genloss.losses.deep",
    "genloss.losses.adaptive",
)
_loaded = False


def register_loss(
    name: str,
    *,
    description: str,
    family: str,
    aliases: tuple[str, ...] = (),
    weight_files: dict[str, tuple[str, ...]] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers ``factory`` under ``name`` (case-insensitive) and its aliases."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        info = LossInfo(name, factory, description, family, aliases, dict(weight_files or {}))
        for key in (name, *aliases):
            k = key.lower()
            if k in _ALIASES and _ALIASES[k] != name:
                raise ValueError(f"loss name {key!r} is already registered for {_ALIASES[k]!r}")
            _ALIASES[k] = name
        _REGISTRY[name] = info
        return factory

    return deco


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        for mod in _LOSS_MODULES:
            importlib.import_module(mod)
        _loaded = True


def loss_info(name: str) -> LossInfo:
    """The :class:`LossInfo` of a loss, by any of its (case-insensitive) names."""
    _ensure_loaded()
    if not isinstance(name, str):
        raise TypeError(f"loss name must be a string, got {type(name).__name__}")
    try:
        return _REGISTRY[_ALIASES[name.lower()]]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; available: {', '.join(list_losses())}") from None


def list_losses(family: str | None = None) -> list[str]:
    """Canonical names of every registered loss, in registration order (optionally of one family)."""
    _ensure_loaded()
    return [n for n, i in _REGISTRY.items() if family is None or i.family == family]


def get_loss(
    name: str,
    *,
    colorspace: str = "RGB",
    pretrained: bool = True,
    reduction: str = "sum",
    deterministic: bool = False,
    image_size: Any = None,
    weights_dir: Any = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a loss by name.

    Args:
        name: one of :func:`list_losses` (case-insensitive; the paper's spellings such as
            ``'Watson-fft'`` or ``'Deeploss-vgg'`` work too).
        colorspace: ``'RGB'`` (3-channel input) or ``'LA'`` (greyscale: 1-channel input, or
            3-channel input converted with BT.601 luma weights).
        pretrained: load the authors' weights tuned on BAPPS 2AFC (frozen).
        reduction: ``'sum'`` (default, as the paper), ``'mean'`` or ``'none'`` (shape [N]).
        deterministic: ``False`` adds the paper's random shift of up to 8 px (Watson losses only).
        image_size: optional (C, H, W); only the adaptive loss uses it, and infers it otherwise.
        weights_dir: a folder that holds the weight files (overrides cache and download).
        **kwargs: loss-specific options, see each loss' class.
    """
    info = loss_info(name)
    loss = info.factory(
        colorspace=normalize_colorspace(colorspace),
        pretrained=pretrained,
        reduction=reduction,
        deterministic=deterministic,
        image_size=image_size,
        weights_dir=weights_dir,
        **kwargs,
    )
    if pretrained:
        # Tuned losses are metrics, not models: freeze them, as the paper's provider does.
        for p in loss.parameters():
            p.requires_grad_(False)
    return loss


class LossProvider:
    """The paper's interface: ``LossProvider().get_loss_function(name, colorspace, ...)``."""

    color_models = list(COLORSPACES)

    @property
    def loss_functions(self) -> list[str]:
        return list_losses()

    def get_loss_function(
        self,
        model: str,
        colorspace: str = "RGB",
        reduction: str = "sum",
        deterministic: bool = False,
        pretrained: bool = True,
        image_size: Any = None,
        **kwargs: Any,
    ) -> nn.Module:
        """Same meaning as in the paper's repository; see :func:`get_loss`."""
        return get_loss(
            model,
            colorspace=colorspace,
            reduction=reduction,
            deterministic=deterministic,
            pretrained=pretrained,
            image_size=image_size,
            **kwargs,
        )
