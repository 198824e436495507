"""LPIPS-style deep distances of the Watson paper: Deeploss-VGG and Deeploss-Squeeze.

The distance of Zhang et al. (CVPR 2018), as used by Czolbe et al. (NeurIPS 2020) with their own
tuned linear weights. For an image pair ``x`` (input) and ``y`` (target), with frozen ImageNet
features ``f_k`` of layer ``k`` (C_k channels, H_k x W_k positions):

1. unit-normalise every feature vector over the channels: ``u_k = f_k / (||f_k||_2 + 1e-10)``;
2. weight the squared difference per channel with the non-negative tuned vector ``w_k``:
   ``e_k(h, w) = sum_c w_k[c] (u_k(x)[c, h, w] - u_k(y)[c, h, w]) ** 2`` (a 1x1 convolution);
3. average over positions and add the layers: ``D(x, y) = sum_k mean_{h, w} e_k(h, w)``.

Backbones (torchvision's ImageNet weights, frozen, always in eval mode):

* ``vgg``: VGG16 features at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (64, 128, 256, 512, 512
  channels); inputs of at least 16 x 16 pixels;
* ``squeeze``: SqueezeNet 1.1 features after layers 1, 4, 7, 9, 10, 11, 12 (64, 128, 256, 384, 384,
  512, 512 channels); inputs of at least 17 x 17 pixels.

Differences from the paper's code (details and measurements in docs/deeploss.md):

* **Input scaling.** The paper's code feeds [0, 1] images into LPIPS' shift/scale layer, which LPIPS
  applies to [-1, 1] images. The tuned weights were fitted that way, so ``normalize='original'``
  (the default) keeps it; ``normalize='lpips'`` maps [0, 1] to [-1, 1] first, as LPIPS intends
  (use it with LPIPS' own linear weights or for untuned distances on an ImageNet backbone).
* **Greyscale.** The paper's greyscale wrapper converts RGB to grey only when the *batch size* is
  3 (it meant the channel count) and passes other RGB batches on unchanged. Here ``LA`` takes
  1-channel images, or 3-channel images converted with BT.601 luma, whatever the batch size.
* ``pretrained=False`` starts from ``w_k = 1`` (LPIPS' untuned "baseline"), not from a random 1x1
  convolution whose negative weights could make the distance negative.
* The frozen backbone is a registered submodule (it moves with ``.to(device)``) but is not part of
  the loss' ``state_dict``: the loss' own state is its linear weights, in the paper's file format
  or ours.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from .. import weights as _weights
from .._validation import in_functorch_transform
from ..transforms.color import as_grey
from .base import ImageLoss, grey_channels

#: the epsilon of LPIPS' feature normalisation (kept for fidelity)
EPS = 1e-10

#: LPIPS' input normalisation ``(x - shift) / scale``, meant for images in [-1, 1]
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

NORMALIZE_MODES = ("original", "lpips")

#: a folder holding torchvision's backbone files under their own names (e.g. ``vgg16-397923af.pth``)
ENV_BACKBONE_DIR = _weights.ENV_BACKBONE_DIR


# ------------------------------------------------------------------------------------------------
# backbones
# ------------------------------------------------------------------------------------------------
def _vgg16_features() -> nn.Sequential:
    # Only the convolutional part: building all of torchvision's VGG16 would also allocate (and
    # randomly initialise) its 120M-parameter classifier, ~2 s of CPU for nothing.
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"], batch_norm=False)
    for m in features.modules():  # torchvision's VGG initialisation, for the random backbone
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return features


def _squeezenet1_1_features() -> nn.Sequential:
    return torchvision.models.squeezenet1_1(weights=None).features


@dataclass(frozen=True)
class BackboneSpec:
    """One feature extractor: torchvision's ``features`` cut into slices at ``split_ends``."""

    name: str
    build_features: Callable[[], nn.Sequential]
    weights: torchvision.models.WeightsEnum
    #: the (exclusive) end index in ``features`` of each slice; slice k starts where k-1 ended
    split_ends: tuple[int, ...]
    channels: tuple[int, ...]
    #: smallest (H, W) for which the deepest slice still has at least one position
    min_size: int

    @property
    def file_name(self) -> str:
        """torchvision's file name of the ImageNet weights (as cached in ``$TORCH_HOME/hub/checkpoints``)."""
        return os.path.basename(self.weights.url)


BACKBONES: dict[str, BackboneSpec] = {
    "vgg": BackboneSpec(
        "vgg16", _vgg16_features, torchvision.models.VGG16_Weights.IMAGENET1K_V1,
        split_ends=(4, 9, 16, 23, 30), channels=(64, 128, 256, 512, 512), min_size=16,
    ),
    "squeeze": BackboneSpec(
        "squeezenet1_1", _squeezenet1_1_features, torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1,
        split_ends=(2, 5, 8, 10, 11, 12, 13), channels=(64, 128, 256, 384, 384, 512, 512), min_size=17,
    ),
}


class FeatureSlices(nn.Module):
    """A backbone's ``features`` as consecutive slices; ``forward`` returns every slice's output.

    Input (N, 3, H, W) already normalised for the backbone; output: a list of (N, C_k, H_k, W_k).
    """

    def __init__(self, features: nn.Sequential, split_ends: tuple[int, ...]) -> None:
        super().__init__()
        starts = (0, *split_ends[:-1])
        # Layers keep their index in ``features`` as their name (slices.1.5.weight is features.5.weight).
        self.slices = nn.ModuleList(
            nn.Sequential(OrderedDict((str(i), features[i]) for i in range(a, b)))
            for a, b in zip(starts, split_ends, strict=True)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for s in self.slices:
            x = s(x)
            out.append(x)
        return out

    def run(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every slice's output on ``x``, in ``x``'s dtype whatever the parameters' dtype, fast on the CPU.

        Used by every loss on a backbone (DeepLoss, WatsonVGG):

        * oneDNN's convolutions and pooling are ~2x faster in NHWC on the CPU (docs/deeploss.md), so
          the input goes channels-last there (not under torch.func, whose vmap cannot change memory
          formats, nor under torch.compile, which picks its own layouts);
        * float64 images through a float32 backbone (or the reverse) run with the parameters cast for
          this call only: nothing is cached or converted in place, so the module stays as the user left
          it, and the cast is differentiable and works under torch.func and torch.compile.
        """
        if x.device.type == "cpu" and not torch.compiler.is_compiling() and not in_functorch_transform(x):
            x = x.contiguous(memory_format=torch.channels_last)
        params = dict(self.named_parameters())
        if all(p.dtype == x.dtype for p in params.values()):
            return self(x)
        return torch.func.functional_call(self, {k: p.to(x.dtype) for k, p in params.items()}, (x,))


BackboneWeights = str | os.PathLike | Mapping[str, torch.Tensor] | None


def backbone_state_dict(
    spec: BackboneSpec, override: BackboneWeights = None, weights_dir: str | os.PathLike | None = None
) -> dict[str, torch.Tensor]:
    """The torchvision state dict of a backbone's ImageNet weights, on the CPU.

    ``override`` (a state dict, or the path of a file holding one) wins; otherwise the file is
    resolved like every downloadable file (:func:`genloss.weights.resolve`: ``weights_dir``,
    ``$GENLOSS_WEIGHTS_DIR``, the cache, ``$GENLOSS_BACKBONE_DIR``, torchvision's cache, then a
    download). Raises :class:`genloss.weights.WeightsUnavailableError` naming the URL and the
    folders to put the file in when it is missing offline.
    """
    if override is not None:
        if isinstance(override, Mapping):
            return dict(override)
        path = Path(override).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"backbone_weights file {str(path)!r} does not exist")
        return _load_file(path)
    try:
        return _load_file(_weights.resolve(spec.file_name, weights_dir))
    except _weights.WeightsUnavailableError as e:
        raise _weights.WeightsUnavailableError(
            f"{e}\n(pretrained_backbone=False gives a random {spec.name} backbone, for tests only: not a "
            "meaningful metric; or pass backbone_weights='/path/to/" + spec.file_name + "'.)",
            e.name,
        ) from None


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    return dict(sd)


def build_backbone(spec: BackboneSpec, pretrained: bool = True, weights: BackboneWeights = None,
                   weights_dir: str | os.PathLike | None = None) -> FeatureSlices:
    """The frozen feature slices of ``spec``: ImageNet weights, or random ones for ``pretrained=False``.

    ``weights`` may be a torchvision state dict of the whole network (``features.*`` and
    ``classifier.*`` keys) or of its ``features`` only (with or without the ``features.`` prefix).
    """
    features = spec.build_features()
    if pretrained or weights is not None:
        sd = backbone_state_dict(spec, weights, weights_dir)
        feats = {k.removeprefix("features."): v for k, v in sd.items() if not k.startswith("classifier.")}
        try:
            features.load_state_dict(feats, strict=True)
        except RuntimeError as e:
            raise ValueError(
                f"the backbone weights do not fit torchvision's {spec.name}: {str(e).splitlines()[0]} "
                f"(expected a state dict of torchvision.models.{spec.name}, e.g. {spec.file_name})"
            ) from e
    net = FeatureSlices(features, spec.split_ends)
    net.requires_grad_(False)
    return net.eval()


# ------------------------------------------------------------------------------------------------
# the loss
# ------------------------------------------------------------------------------------------------
#: the paper's ``lin{k}.model.1.weight`` and the lpips package's ``lins.{k}.model.1.weight``
_ORIGINAL_KEY = re.compile(r"lins?\.?(\d+)\.model\.[01]\.weight")


class DeepLoss(ImageLoss):
    """LPIPS-style distance with per-layer linear weights on frozen ImageNet features (Deeploss).

    ``D(x, y) = sum_k mean_{h,w} sum_c w_k[c] (u_k(x) - u_k(y))[c, h, w] ** 2`` with ``u_k`` the
    unit-normalised features of layer ``k`` (see the module docstring). With ``pretrained=True`` the
    ``w_k`` are the Watson paper's weights tuned on BAPPS 2AFC (frozen); with ``pretrained=False``
    they start at 1 (LPIPS' untuned baseline) and are trainable. The backbone is always frozen.

    Args:
        backbone: ``'vgg'`` (VGG16) or ``'squeeze'`` (SqueezeNet 1.1).
        colorspace: ``'RGB'`` (3-channel input) or ``'LA'`` (1-channel input, or 3 channels
            converted with BT.601 luma), the grey channel is repeated for the backbone.
        pretrained: load the paper's tuned linear weights (``rgb_pnet_lin_<backbone>_trial0.pth`` /
            ``gray_...``) and freeze them; ``False``: weights 1, trainable.
        reduction: ``'sum'`` | ``'mean'`` over the batch, or ``'none'`` (shape [N]).
        normalize: ``'original'`` (default: [0, 1] images go straight into LPIPS' shift/scale, as
            the paper's code did when fitting the tuned weights) or ``'lpips'`` ([0, 1] -> [-1, 1]
            first, as LPIPS intends).
        pretrained_backbone: ``True`` loads torchvision's ImageNet weights (see
            :func:`backbone_state_dict` for where they are looked for). ``False`` keeps a random
            backbone: useful for tests and timing, **not meaningful as a metric**.
        backbone_weights: a torchvision state dict, or the path of a file holding one, used instead
            of the ImageNet download (implies a loaded backbone even with ``pretrained_backbone=False``).
        weights_dir: folder holding the tuned linear weights (see :mod:`genloss.weights`).
        value_range: (lo, hi) of the input images, mapped onto [0, 1].

    Shape:
        input, target: (N, C, H, W), C as above, H, W >= 16 (vgg) / 17 (squeeze) (the deepest
        layer needs one position), on the device of the loss.
        output: a scalar, or (N,) for ``reduction='none'``.

    Returns:
        a distance >= 0 (0 for identical images). Computed in the inputs' dtype, whatever the
        dtype of the module: float64 inputs give float64, float32 and 16-bit/autocast inputs float32
        (autocast is switched off inside).

    Raises:
        ValueError: unknown ``backbone`` / ``normalize``, backbone weights that do not fit; at the
            call: wrong channel count, images smaller than the minimum, NaN/Inf or values outside
            ``value_range``, input on another device than the loss.
        TypeError: non-floating inputs.
        FileNotFoundError: ``backbone_weights`` names a missing file.
        genloss.weights.WeightsUnavailableError: tuned linear weights or ImageNet backbone missing.

    References:
        R. Zhang, P. Isola, A. A. Efros, E. Shechtman, O. Wang, "The Unreasonable Effectiveness of
        Deep Features as a Perceptual Metric", CVPR 2018 (LPIPS).
        S. Czolbe, O. Krause, I. Cox, C. Igel, "A Loss Function for Generative Neural Networks Based
        on Watson's Perceptual Model", NeurIPS 2020 (the tuned Deeploss weights).

    Example:
        >>> import torch
        >>> from genloss import DeepLoss
        >>> loss = DeepLoss("squeeze", pretrained=False, pretrained_backbone=False)  # offline, untuned
        >>> x = torch.rand(2, 3, 32, 32)
        >>> loss(x, x.flip(-1)).shape, loss(x, x).detach()
        (torch.Size([]), tensor(0.))
    """

    def __init__(
        self,
        backbone: str = "vgg",
        *,
        colorspace: str = "RGB",
        pretrained: bool = True,
        reduction: str = "sum",
        normalize: str = "original",
        pretrained_backbone: bool = True,
        backbone_weights: BackboneWeights = None,
        weights_dir: str | os.PathLike | None = None,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__(colorspace=colorspace, reduction=reduction, value_range=value_range)
        colorspace = self.colorspace
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {tuple(BACKBONES)}, got {backbone!r}")
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
        spec = BACKBONES[backbone]
        self.backbone_name = backbone
        self.normalize = normalize
        self.pretrained = pretrained
        self.channels = grey_channels(colorspace)
        self.min_size = spec.min_size
        self.backbone = build_backbone(spec, pretrained_backbone, backbone_weights, weights_dir)
        # One vector per layer; ones = LPIPS' untuned baseline (sum over channels).
        self.layer_weights = nn.ParameterList(nn.Parameter(torch.ones(c)) for c in spec.channels)
        # Shift/scale and the optional [0, 1] -> [-1, 1] map folded into one affine x * gain + bias.
        shift = torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1)
        scale = torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1)
        if normalize == "lpips":
            gain, bias = 2.0 / scale, (-1.0 - shift) / scale
        else:
            gain, bias = 1.0 / scale, -shift / scale
        self.register_buffer("input_gain", gain, persistent=False)
        self.register_buffer("input_bias", bias, persistent=False)
        self.register_state_dict_post_hook(_drop_backbone_keys)
        self.register_load_state_dict_pre_hook(_accept_original_and_no_backbone)
        if pretrained:
            cs = "rgb" if colorspace == "RGB" else "gray"
            self.load_linear_weights(_weights.load_state_dict(f"{cs}_{_LINEAR_FILE_STEMS[backbone]}", weights_dir))
            self.freeze()
        self.eval()

    # -- weights -----------------------------------------------------------------------------------
    def load_linear_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load tuned linear weights: the paper's / LPIPS' file format (``lin{k}.model.1.weight``,
        shape [1, C_k, 1, 1]) or this class' ``state_dict()`` (``layer_weights.{k}``, shape [C_k]).

        The lpips package's ``lins.{k}.model.1.weight`` works too (pass only those keys). Every
        layer must be present with its channel count; any other key is an error.
        """
        n = len(self.layer_weights)
        converted = _convert_original_keys(dict(state_dict), "")
        want = {f"layer_weights.{k}" for k in range(n)}
        missing = sorted(k.replace("layer_weights.", "lin") for k in want - converted.keys())
        extra = sorted(converted.keys() - want)
        if missing or extra:
            raise ValueError(
                f"linear weights for Deeploss-{self.backbone_name} must have the {n} keys "
                f"lin0..lin{n - 1}.model.1.weight (or layer_weights.0..{n - 1}); "
                f"missing {', '.join(missing) or 'none'}; unexpected {', '.join(extra) or 'none'}"
            )
        for k in range(n):
            v, p = converted[f"layer_weights.{k}"], self.layer_weights[k]
            if v.numel() != p.numel():
                raise ValueError(
                    f"linear weights of layer {k} have {v.numel()} values, the {self.backbone_name} "
                    f"layer has {p.numel()} channels (wrong backbone's file?)"
                )
            with torch.no_grad():
                p.copy_(v.reshape(-1))

    def train(self, mode: bool = True) -> DeepLoss:
        super().train(mode)
        self.backbone.eval()  # a frozen ImageNet feature extractor: never in training mode
        return self

    # -- computation -------------------------------------------------------------------------------
    def _backbone_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.colorspace == "LA":
            x = as_grey(x)  # (N, 1, H, W); broadcasting against the 3-channel gain gives 3 channels
        return torch.addcmul(self.input_bias.to(x.dtype), x, self.input_gain.to(x.dtype))

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's slices on ``x`` (in ``x``'s dtype, see :meth:`FeatureSlices.run`)."""
        return self.backbone.run(x)

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.device != self.input_gain.device:
            raise ValueError(
                f"input is on {input.device} but the loss (its backbone) is on {self.input_gain.device}; "
                f"move the loss with loss.to({str(input.device)!r})"
            )
        # The base class casts the pair to its compute dtype (float64 stays float64, 16-bit becomes
        # float32); the whole distance is computed in it.
        dtype = input.dtype
        feats_in = self._features(self._backbone_input(input))
        # The target needs no graph: its features are constants for the gradient w.r.t. the input.
        with torch.set_grad_enabled(torch.is_grad_enabled() and target.requires_grad):
            units_tg = [unit_normalize(f) for f in self._features(self._backbone_input(target))]
        total = input.new_zeros(input.shape[0], dtype=dtype)
        for f_in, u_tg, w in zip(feats_in, units_tg, self.layer_weights, strict=True):
            # Multiplying by the (N, 1, H, W) inverse norm is cheaper than dividing the full feature
            # tensor, in forward and backward. (Not fused into one addcmul: an FMA would leave a
            # rounding residual, so identical images would not give exactly 0.)
            d = unit_normalize(f_in) - u_tg
            # sum_c w_c d_c^2 averaged over positions: a matrix-vector product instead of a 1x1 conv + means
            total = total + torch.einsum("nchw,c->n", d * d, w.to(dtype)) / (d.shape[2] * d.shape[3])
        return total

    def extra_repr(self) -> str:
        return (f"backbone={self.backbone_name!r}, colorspace={self.colorspace!r}, "
                f"normalize={self.normalize!r}, reduction={self.reduction!r}")


def inverse_norm(f: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``1 / (||f||_2 + eps)`` over dim 1 of (N, C, H, W), shape (N, 1, H, W).

    Same value as LPIPS' ``sqrt(sum(f ** 2))``, but the backward of ``vector_norm`` is 0 at zero
    vectors (dead ReLU positions) where that of ``sqrt`` is NaN. (In these backbones every slice
    ends in a ReLU whose backward masks those positions, so the paper's gradients are finite too.)
    """
    return 1.0 / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + eps)


def unit_normalize(f: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """LPIPS' feature normalisation ``f / (||f||_2 + eps)`` over dim 1 of (N, C, H, W)."""
    return f * inverse_norm(f, eps)


def _convert_original_keys(state_dict: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Rename ``{prefix}lin{k}.model.{0|1}.weight`` [1, C, 1, 1] to ``{prefix}layer_weights.{k}`` [C]."""
    out = {}
    for key, v in state_dict.items():
        m = _ORIGINAL_KEY.fullmatch(key[len(prefix):]) if key.startswith(prefix) else None
        if m is not None:
            out[f"{prefix}layer_weights.{m.group(1)}"] = v.reshape(-1)
        else:
            out[key] = v
    return out


def _drop_backbone_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    # The backbone is torchvision's fixed ImageNet network, restored from torchvision's files: the
    # loss' own state is its linear weights (a few KB instead of 3-58 MB in every checkpoint).
    for key in [k for k in state_dict if k.startswith(prefix + "backbone.")]:
        del state_dict[key]


def _accept_original_and_no_backbone(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any,
                                     strict: bool, missing_keys: list, unexpected_keys: list,
                                     error_msgs: list) -> None:
    # Called on the copy that load_state_dict makes: rename the paper's keys in place, and let
    # absent backbone keys keep the current backbone (present ones, e.g. of a fine-tuned backbone, load).
    converted = _convert_original_keys(dict(state_dict), prefix)
    if converted.keys() != state_dict.keys():
        state_dict.clear()
        state_dict.update(converted)
    for name, t in module.backbone.state_dict(prefix=prefix + "backbone.", keep_vars=True).items():
        state_dict.setdefault(name, t)


#: the paper's tuned linear weights per backbone (prefixed by ``rgb_`` / ``gray_``)
_LINEAR_FILE_STEMS = {"vgg": "pnet_lin_vgg_trial0.pth", "squeeze": "pnet_lin_squeeze_trial0.pth"}
