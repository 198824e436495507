"""The one place that knows every loss: name -> class, with descriptions, weight files and metadata.

The built-in losses are declared in :data:`_BUILTIN` by the import path of their class, so listing
them imports nothing and building one imports only its own module (``get_loss('L1')`` never loads
torchvision). :func:`get_loss` forwards its options to the class's constructor, so the defaults live
on the class and an unknown or misspelt option raises a ``TypeError`` naming the valid ones.

Adding a loss is one module with an :class:`~genloss.losses.base.ImageLoss` subclass plus one
registration: a line in :data:`_BUILTIN`, or ``@register_loss(...)`` on a user's class.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ._options import check_options, resolve_target, valid_options
from .transforms.color import COLORSPACES, normalize_colorspace

__all__ = [
    "COLORSPACES",
    "LossInfo",
    "LossProvider",
    "get_loss",
    "list_losses",
    "loss_info",
    "make_loss",
    "normalize_colorspace",
    "register_loss",
]


@dataclass(frozen=True)
class LossInfo:
    """What the registry knows of one loss."""

    name: str
    #: the class, or its import path ``'package.module:Class'`` (imported on first use)
    target: str | type[nn.Module]
    description: str
    family: str
    aliases: tuple[str, ...] = ()
    #: weight files used with ``pretrained=True``, per colour space (names in :data:`genloss.weights.WEIGHT_FILES`)
    weight_files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: constructor options fixed by this entry (e.g. the backbone of ``Deeploss-VGG``)
    preset: Mapping[str, Any] = field(default_factory=dict)
    #: one of the nine metrics of the Watson paper's ``LossProvider``
    paper: bool = False
    #: torchvision's ImageNet backbone files the loss loads besides its tuned weights (names in
    #: :data:`genloss.weights.WEIGHT_FILES`; large, so ``genloss weights download`` fetches them only by name)
    backbone_files: tuple[str, ...] = ()

    @property
    def cls(self) -> type[nn.Module]:
        """The loss class (imports its module on first access)."""
        return resolve_target(self.target)

    def files(self, colorspace: str, pretrained: bool = True) -> tuple[str, ...]:
        """The downloadable files the loss loads when built: its tuned weights for ``colorspace`` (with
        ``pretrained``) and its ImageNet backbone (with torchvision's default ``pretrained_backbone=True``)."""
        tuned = self.weight_files.get(normalize_colorspace(colorspace), ()) if pretrained else ()
        return (*tuned, *self.backbone_files)

    def missing_files(self, colorspace: str, weights_dir: str | os.PathLike | None = None,
                      pretrained: bool = True) -> list[str]:
        """The files of :meth:`files` that are not present (and valid) where the loss looks for them."""
        from .weights import status

        return [name for name, path in status(self.files(colorspace, pretrained), weights_dir).items() if path is None]

    def missing_note(self, colorspace: str, weights_dir: str | os.PathLike | None = None, pretrained: bool = True,
                     error: Exception | None = None) -> str | None:
        """One line naming every file the loss still needs (tuned weights and ImageNet backbone: Watson-VGG
        and Deeploss-VGG need torchvision's VGG16 besides their tuned file) and how to provide them;
        ``None`` when none is missing. ``error``: the ``WeightsUnavailableError`` building it raised,
        whose file is named too (it was missing where the loss looked)."""
        from .weights import missing_note

        missing = self.missing_files(colorspace, weights_dir, pretrained)
        name = getattr(error, "name", None)
        if name and name not in missing:
            missing.append(name)
        return missing_note(missing, self.backbone_files) if missing else None

    def options(self) -> list[str]:
        """Names of the constructor options :func:`get_loss` accepts for this loss."""
        return list(valid_options(self.cls, exclude=self.preset))

    def build(self, **options: Any) -> nn.Module:
        """Construct the loss with ``options`` (strict: unknown options raise ``TypeError``)."""
        cls = self.cls
        check_options(f"loss {self.name!r} ({cls.__name__})", cls, options, exclude=self.preset)
        return cls(**self.preset, **options)


_REGISTRY: dict[str, LossInfo] = {}
_ALIASES: dict[str, str] = {}


def _add(info: LossInfo) -> LossInfo:
    for key in (info.name, *info.aliases):
        k = key.lower()
        if k in _ALIASES and _ALIASES[k] != info.name:
            raise ValueError(f"loss name {key!r} is already registered for {_ALIASES[k]!r}")
    for key in (info.name, *info.aliases):
        _ALIASES[key.lower()] = info.name
    _REGISTRY[info.name] = info
    return info


# torchvision's file names of the ImageNet backbones (genloss.losses.deep.BACKBONES[...].file_name, which
# imports torchvision: the registry lists losses without importing them)
_VGG16 = "vgg16-397923af.pth"
_SQUEEZENET = "squeezenet1_1-b8a52dc0.pth"


def _tuned(stem: str) -> dict[str, tuple[str, ...]]:
    return {"RGB": (f"rgb_{stem}_trial0.pth",), "LA": (f"gray_{stem}_trial0.pth",)}


_BUILTIN = (
    LossInfo("L1", "genloss.losses.pixel:L1Loss", "Sum of absolute pixel differences.", "pixel", paper=True),
    LossInfo("L2", "genloss.losses.pixel:L2Loss", "Sum of squared pixel differences.", "pixel", ("MSE",),
             paper=True),
    LossInfo("SSIM", "genloss.losses.ssim:SSIMLoss",
             "1 - SSIM (11x11 Gaussian window, sigma 1.5), as the Watson paper.", "ssim", paper=True),
    LossInfo("MS-SSIM", "genloss.losses.ssim:MSSSIMLoss", "1 - multi-scale SSIM (5 scales; beyond the paper).",
             "ssim", ("MSSSIM",)),
    LossInfo("Adaptive", "genloss.losses.adaptive:AdaptiveLoss",
             "Barron's adaptive robust loss (NLL) on scaled-YUV DCT coefficients, one alpha and scale per "
             "coefficient (tuned weights: 64x64 only).", "adaptive", weight_files=_tuned("adaptive"), paper=True),
    LossInfo("Watson-DCT", "genloss.losses.watson:WatsonDCT",
             "Watson's perceptual model on the 8x8 block DCT (luminance + contrast masking, Minkowski pooling).",
             "watson", ("Watson", "Watson-dct"), _tuned("watson_dct"), paper=True),
    LossInfo("Watson-DFT", "genloss.losses.watson:WatsonDFT",
             "Watson's perceptual model on the 8x8 block DFT: masked amplitude distance plus phase distance.",
             "watson", ("Watson-FFT",), _tuned("watson_fft"), paper=True),
    LossInfo("Watson-VGG", "genloss.losses.watson_vgg:WatsonVGG",
             "Watson's model on VGG16 features: per-channel sensitivities, contrast masking, Minkowski pooling.",
             "watson", ("Watson-vgg", "Watson-deep"), _tuned("watson_vgg"), paper=True,
             backbone_files=(_VGG16,)),
    LossInfo("Deeploss-VGG", "genloss.losses.deep:DeepLoss",
             "LPIPS-style distance on ImageNet VGG16 features with the Watson paper's tuned linear weights.",
             "deep", weight_files=_tuned("pnet_lin_vgg"), preset={"backbone": "vgg"}, paper=True,
             backbone_files=(_VGG16,)),
    LossInfo("Deeploss-Squeeze", "genloss.losses.deep:DeepLoss",
             "LPIPS-style distance on ImageNet SqueezeNet 1.1 features with the Watson paper's tuned linear "
             "weights.", "deep", weight_files=_tuned("pnet_lin_squeeze"), preset={"backbone": "squeeze"},
             paper=True, backbone_files=(_SQUEEZENET,)),
)
for _info in _BUILTIN:
    _add(_info)


def register_loss(
    name: str,
    cls: type[nn.Module] | str | None = None,
    *,
    description: str,
    family: str = "user",
    aliases: tuple[str, ...] = (),
    weight_files: Mapping[str, tuple[str, ...]] | None = None,
    preset: Mapping[str, Any] | None = None,
) -> Any:
    """Register a loss class under ``name`` (case-insensitive) and its aliases.

    Use as ``register_loss("MyLoss", MyLoss, description=...)`` or as a class decorator
    ``@register_loss("MyLoss", description=...)``. The class is built by :func:`get_loss` with the
    user's options (checked against its constructor's signature). Returns the class (decorator) or
    its :class:`LossInfo`.

    Raises:
        ValueError: the name or an alias is already taken by another loss.
    """

    def add(target: type[nn.Module] | str) -> LossInfo:
        return _add(LossInfo(name, target, description, family, tuple(aliases), dict(weight_files or {}),
                             dict(preset or {})))

    if cls is not None:
        return add(cls)

    def deco(target: type[nn.Module]) -> type[nn.Module]:
        add(target)
        return target

    return deco


def unregister_loss(name: str) -> None:
    """Remove a loss (and its aliases) from the registry; mainly for tests of user registrations."""
    info = loss_info(name)
    for key in (info.name, *info.aliases):
        _ALIASES.pop(key.lower(), None)
    _REGISTRY.pop(info.name, None)


def loss_info(name: str) -> LossInfo:
    """The :class:`LossInfo` of a loss, by any of its (case-insensitive) names.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: unknown name (the message lists the available ones).
    """
    if not isinstance(name, str):
        raise TypeError(f"loss name must be a string, got {type(name).__name__}")
    try:
        return _REGISTRY[_ALIASES[name.lower()]]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; available: {', '.join(list_losses())}") from None


def list_losses(family: str | None = None) -> list[str]:
    """Canonical names of every registered loss, in registration order (optionally of one ``family``,
    case-insensitive, e.g. ``'watson'``).

    Raises:
        ValueError: a ``family`` no registered loss belongs to (the message lists the families).
    """
    if family is None:
        return list(_REGISTRY)
    names = [n for n, i in _REGISTRY.items() if i.family.lower() == str(family).lower()]
    if not names:
        families = sorted({i.family for i in _REGISTRY.values()})
        raise ValueError(f"no loss of family {family!r}; families: {', '.join(families)}")
    return names


def get_loss(name: str, **options: Any) -> nn.Module:
    """Build a loss by name; the by-name twin of constructing its class.

    ``get_loss("SSIM", reduction="none")`` is ``SSIMLoss(reduction="none")``: every option is
    forwarded to the class (see each class for its options and defaults; they are the same here).

    Args:
        name: one of :func:`list_losses` (case-insensitive; the paper's spellings such as
            ``'Watson-fft'`` or ``'Deeploss-vgg'`` work too).
        **options: constructor options of the loss' class, e.g. ``colorspace``, ``pretrained``,
            ``reduction``, ``value_range``.

    Raises:
        ValueError: unknown loss name.
        TypeError: an option the class does not accept (the message lists the valid ones).
    """
    return loss_info(name).build(**options)


#: options that apply to some losses only (the paper's ``LossProvider`` takes them for every loss);
#: :func:`make_loss` passes them on where the class accepts them
COMMON_OPTIONS = ("colorspace", "reduction", "pretrained", "deterministic", "image_size", "weights_dir", "value_range")


def make_loss(name: str, common: Mapping[str, Any] | None = None, /, **options: Any) -> nn.Module:
    """:func:`get_loss` for code that builds many losses with one set of settings (configs, the CLI).

    ``common`` holds settings from :data:`COMMON_OPTIONS` given for every loss alike (e.g. a config's
    ``pretrained: true``); each is passed only to losses whose class accepts it (L1 has no weights,
    SSIM no randomness). ``options`` are forwarded strictly, as by :func:`get_loss`.

    Raises:
        TypeError: ``common`` holds a key outside :data:`COMMON_OPTIONS`, or ``options`` one the class
            does not accept.
    """
    info = loss_info(name)
    common = dict(common or {})
    bad = sorted(set(common) - set(COMMON_OPTIONS))
    if bad:
        raise TypeError(f"make_loss: {bad} are not common options; common options are {COMMON_OPTIONS}")
    accepted = info.options()
    merged = {k: v for k, v in common.items() if k in accepted}
    merged.update(options)
    return info.build(**merged)


class LossProvider:
    """The Watson paper's interface: ``LossProvider().get_loss_function(name, colorspace, ...)``.

    Keeps the paper's meaning and defaults: ``reduction='sum'``, ``deterministic=False`` (the
    random shift of the Watson losses while the module is in training mode), ``pretrained=True``.
    ``deterministic``, ``pretrained`` and ``image_size`` are accepted for every loss as in the
    paper and passed on only to the losses that have them (e.g. L1 has no weights and no
    randomness); other keyword options are forwarded strictly, as by :func:`get_loss`.
    """

    color_models = list(COLORSPACES)

    @property
    def loss_functions(self) -> list[str]:
        """Names of every loss (the paper's nine metrics and genloss' additions)."""
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
        """Build the loss ``model`` as the paper's ``LossProvider`` does (see the class docstring)."""
        common = {"colorspace": colorspace, "reduction": reduction, "deterministic": deterministic,
                  "pretrained": pretrained, "image_size": image_size}
        return make_loss(model, common, **kwargs)

