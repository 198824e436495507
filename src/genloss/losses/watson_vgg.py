"""Watson-VGG: Watson's perceptual model on deep VGG16 features (Czolbe et al., NeurIPS 2020).

The ninth metric of the Watson paper replaces the block DCT/DFT of Watson-DCT/-DFT by the
activations of a frozen ImageNet VGG16. For an image pair ``x`` (input) and ``y`` (target):

1. input scaling ``(x - shift) / scale`` with LPIPS' constants ``shift = (-.030, -.088, -.188)``,
   ``scale = (.458, .448, .450)``, applied to the [0, 1] images (as the paper's code does);
2. VGG16 features ``f_l`` at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (l = 0..4; 64, 128, 256,
   512, 512 channels), each unit-normalised over the channels:
   ``c = f / (||f||_2 + 1e-10)`` (``c0`` for the target, ``c1`` for the input);
3. per-channel sensitivities ``t_l = exp(t_tild_l)`` (a vector of C_l values per layer) and a
   contrast-masking exponent per layer ``w_l = sigmoid(w_tild_l)``;
4. contrast masking ``s_l = smoothmax(t_l, (|c0_l| + 1e-10) ** w_l * t_l ** (1 - w_l))`` with
   ``smoothmax(a, b) = (a e^a + b e^b) / (e^a + e^b)``;
5. Minkowski pooling with one exponent ``beta`` for all layers, each layer's sum divided by its
   number of positions H_l * W_l, the layers added with equal weight::

       D(x, y) = ( sum_l 1 / (H_l W_l) * sum_{c,h,w} [ (|(c0_l - c1_l) / s_l| + 1e-10) ** beta + 1e-10 ] ) ** (1 / beta)

The learned state is ``t_tild_l`` (C_l values per layer), ``w_tild_l`` (one per layer) and ``beta``
(one): 1477 numbers. The 1e-10 terms are the paper's (kept for fidelity: identical images give
the small constant ``(sum_l C_l (1e-10 ** beta + 1e-10)) ** (1 / beta)``, the minimum of ``D``).

Differences from the paper's code (``WatsonDistanceVgg`` and ``GreyscaleWrapper`` of
SteffenCzolbe/PerceptualSimilarity, ``src/loss/``):

* **Greyscale.** The paper's wrapper converts RGB to grey (0.3 R + 0.59 G + 0.11 B) only when the
  *batch size* is 3 (``if N == 3``; it meant the channel count) and otherwise passes RGB batches
  on unchanged to the greyscale-tuned model. Here ``LA`` takes 1-channel images (as the paper), or
  3-channel images converted with BT.601 luma (0.299, 0.587, 0.114) whatever the batch size, as
  every greyscale loss of this library does.
* **Dropout.** The paper's module has a dropout layer that is the identity unless it is built
  with ``trainable=True`` (training the metric); it is left out.
* **Reductions.** The paper offers ``'sum'`` and ``'none'``; ``'mean'`` is added.
* **State dict.** The paper's files hold the whole VGG16 (``vgg.slice{1..5}.*``), the fixed
  ``shift``/``scale`` and the Watson parameters. :meth:`WatsonVGG.load_original_state_dict` reads
  that layout (the backbone keys, when present, load into the backbone, so a tuned file needs no
  separate ImageNet download); ``state_dict()`` holds only the Watson parameters, as
  :class:`~genloss.DeepLoss` keeps its backbone out of its state (see :meth:`WatsonVGG.original_state_dict`
  for the full file).

No other change: the formulas, epsilons and the order of the operations are the paper's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .. import weights as _weights
from ..transforms.color import as_grey
from .base import ImageLoss, grey_channels

# the backbone is DeepLoss' (the same VGG16 slices), and like DeepLoss' it is kept out of the state dict
from .deep import (
    BACKBONES,
    LPIPS_SCALE,
    LPIPS_SHIFT,
    BackboneWeights,
    _drop_backbone_keys,
    build_backbone,
    unit_normalize,
)

#: the epsilon of the paper's code, kept for fidelity
EPS = 1e-10

#: the paper's initial contrast-masking exponent and pooling exponent
INIT_W = 0.2
INIT_BETA = 1.0

_SPEC = BACKBONES["vgg"]
#: number of feature layers (relu1_2 ... relu5_3)
N_LAYERS = len(_SPEC.split_ends)


def _original_backbone_key(own: str) -> str:
    """``slices.{k}.{i}.weight`` (our FeatureSlices) -> the paper's ``vgg.slice{k+1}.{i}.weight``."""
    _, k, rest = own.split(".", 2)
    return f"vgg.slice{int(k) + 1}.{rest}"


class WatsonVGG(ImageLoss):
    """Watson's perceptual distance on unit-normalised VGG16 features (the Watson paper's Watson-VGG).

    Args:
        colorspace: ``'RGB'`` (3-channel input) or ``'LA'`` (1-channel input, or 3 channels
            converted with BT.601 luma); the grey channel is repeated to 3 channels for VGG.
        pretrained: load the paper's tuned parameters ``rgb_watson_vgg_trial0.pth`` /
            ``gray_watson_vgg_trial0.pth`` (see :mod:`genloss.weights` for where they are looked
            for) and freeze them. ``False`` starts from the paper's initialisation (``t = 1``,
            ``w = 0.2``, ``beta = 1``), trainable.
        reduction: ``'sum'`` | ``'mean'`` over the batch, or ``'none'`` (shape [N]).
        pretrained_backbone: ``True`` loads torchvision's ImageNet VGG16 weights (see
            :func:`genloss.losses.deep.backbone_state_dict` for where they are looked for);
            ``False`` keeps a random backbone: useful for tests, **not a meaningful metric**. Not
            consulted when the backbone comes from ``backbone_weights`` or from the tuned file.
        backbone_weights: a torchvision VGG16 state dict, or the path of a file holding one, used
            instead of the ImageNet download (it takes precedence over the tuned file's backbone).
        weights_dir: a folder holding the tuned files and the VGG16 backbone file, searched first
            (before ``GENLOSS_WEIGHTS_DIR``), as for :class:`~genloss.DeepLoss`.
        value_range: the range of the input values, mapped onto [0, 1].

    Shape:
        input, target: (N, 3, H, W) for RGB, (N, 1, H, W) or (N, 3, H, W) for LA, with
        H, W >= 16 (the deepest layer, relu5_3, is four 2x2 poolings down), same device as the loss.
        Output: a scalar, or (N,) for ``reduction='none'``.

    Returns:
        A non-negative distance (about 3e-7 for identical images, the paper's epsilons), in the
        wider float dtype of input and target and at least float32 (float64 in, float64 out).

    Raises:
        ValueError: wrong shapes, channel counts, images smaller than 16 x 16, NaN/Inf or values
            outside ``value_range``; a tuned file with missing, unexpected or misshapen entries.
        genloss.weights.WeightsUnavailableError: the tuned file or the ImageNet backbone cannot be
            found offline (the message says which file to download and where to put it).

    References:
        S. Czolbe, O. Krause, I. Cox, C. Igel. "A Loss Function for Generative Neural Networks
        Based on Watson's Perceptual Model." NeurIPS 2020 (code: SteffenCzolbe/PerceptualSimilarity,
        ``src/loss/watson_vgg.py``).

    Example:
        >>> import torch
        >>> from genloss import WatsonVGG
        >>> loss = WatsonVGG(pretrained=False, pretrained_backbone=False, reduction="none")
        >>> x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
        >>> loss(x, y).shape
        torch.Size([2])
    """

    min_size = _SPEC.min_size

    def __init__(
        self,
        *,
        colorspace: str = "RGB",
        pretrained: bool = True,
        reduction: str = "sum",
        pretrained_backbone: bool = True,
        backbone_weights: BackboneWeights = None,
        weights_dir: str | os.PathLike | None = None,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__(colorspace=colorspace, reduction=reduction, value_range=value_range)
        self.channels = grey_channels(self.colorspace)
        self.pretrained = pretrained
        tuned: dict[str, torch.Tensor] | None = None
        if pretrained:
            cs = "rgb" if self.colorspace == "RGB" else "gray"
            tuned = dict(_weights.load_state_dict(f"{cs}_watson_vgg_trial0.pth", weights_dir))
        # The paper's files carry the VGG16 they were tuned with: then no ImageNet download is needed.
        from_file = tuned is not None and backbone_weights is None and any(k.startswith("vgg.") for k in tuned)
        self.backbone = build_backbone(_SPEC, pretrained_backbone and not from_file, backbone_weights, weights_dir)
        self.t_tild = nn.ParameterList(nn.Parameter(torch.zeros(c)) for c in _SPEC.channels)
        self.w_logit = nn.Parameter(torch.full((N_LAYERS,), math.log(INIT_W / (1 - INIT_W))))
        self.beta = nn.Parameter(torch.tensor(INIT_BETA))
        # (x - shift) / scale in the image's dtype, in the paper's order (a float32 reciprocal folded
        # into one affine map would put a 6e-8 relative error into float64 results)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.register_state_dict_post_hook(_drop_backbone_keys)
        self.register_load_state_dict_pre_hook(_accept_original_and_no_backbone)
        if tuned is not None:
            self.load_original_state_dict(tuned, backbone=from_file)
            self.freeze()
        self.eval()

    # -- parameters in their constrained form -------------------------------------------------------
    @property
    def t(self) -> list[torch.Tensor]:
        """Per-channel sensitivities ``exp(t_tild_l)``, one (C_l,) tensor per layer."""
        return [p.exp() for p in self.t_tild]

    @property
    def w(self) -> torch.Tensor:
        """Contrast-masking exponents in (0, 1), shape (5,) (one per layer)."""
        return torch.sigmoid(self.w_logit)

    def train(self, mode: bool = True) -> WatsonVGG:
        super().train(mode)
        self.backbone.eval()  # a frozen ImageNet feature extractor: never in training mode
        return self

    # -- computation ----------------------------------------------------------------------------------
    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised VGG16 features of [0, 1] images, in the dtype of ``x``."""
        if self.colorspace == "LA":
            x = as_grey(x)  # (N, 1, H, W); broadcasting against the 3-channel gain repeats it
        x = (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        return [unit_normalize(f, EPS) for f in self.backbone.run(x)]

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.device != self.shift.device:
            raise ValueError(
                f"input is on {input.device} but the loss (its backbone) is on {self.shift.device}; "
                f"move the loss with loss.to({str(input.device)!r})"
            )
        dtype = input.dtype
        c1 = self._features(input)
        # The target's features are constants for the gradient w.r.t. the input (frozen backbone):
        # no graph for them unless the target or the backbone needs one.
        target_grad = target.requires_grad or any(p.requires_grad for p in self.backbone.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and target_grad):
            c0 = self._features(target)
        # exp/sigmoid in the compute dtype: float32 ones cast to float64 would be off by ~1e-7
        w = torch.sigmoid(self.w_logit.to(dtype))
        beta = self.beta.to(dtype)
        total = input.new_zeros(input.shape[0])
        for layer, (a0, a1, t_tild) in enumerate(zip(c0, c1, self.t_tild, strict=True)):
            s = _masked_threshold(a0, t_tild.to(dtype).exp().view(1, -1, 1, 1), w[layer])
            d = ((a0 - a1) / s).abs().add(EPS).pow(beta).add(EPS)
            total = total + d.sum(dim=(1, 2, 3)) / (d.shape[2] * d.shape[3])
        return total.pow(1 / beta)

    # -- the paper's weight files ---------------------------------------------------------------------
    def load_original_state_dict(self, sd: Mapping[str, torch.Tensor], *, backbone: bool = True) -> None:
        """Load parameters in the key layout of the paper's ``WatsonDistanceVgg`` (its ``.pth`` files).

        Layout: ``t{l}_tild`` (C_l,) for l = 0..4, ``w{l}_tild`` (), ``beta`` (), ``shift`` and
        ``scale`` (1, 3, 1, 1; must hold LPIPS' constants) and ``vgg.slice{k}.{i}.weight|bias`` (the
        VGG16 convolutions; optional as a whole). The Watson entries are required.

        Args:
            sd: the state dict.
            backbone: load the ``vgg.*`` entries into the backbone when present (``False``: ignore them).

        Raises:
            ValueError: a missing Watson entry, an unexpected key, a wrong shape, a partial backbone
                or ``shift``/``scale`` other than LPIPS' constants.
        """
        own = self._original_to_own(sd)
        if not backbone:
            own = {k: v for k, v in own.items() if not k.startswith("backbone.")}
        with torch.no_grad():
            for name, p in self._own_tensors().items():
                if name in own:
                    p.copy_(own[name])

    def original_state_dict(self) -> dict[str, torch.Tensor]:
        """This loss' parameters and backbone in the key layout of the paper's files (on the CPU)."""
        sd: dict[str, torch.Tensor] = {}
        for k, p in self.backbone.named_parameters():
            sd[_original_backbone_key(k)] = p.detach().cpu().clone()
        sd["shift"] = torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1)
        sd["scale"] = torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1)
        for layer in range(N_LAYERS):
            sd[f"t{layer}_tild"] = self.t_tild[layer].detach().cpu().clone()
            sd[f"w{layer}_tild"] = self.w_logit[layer].detach().cpu().clone()
        sd["beta"] = self.beta.detach().cpu().clone()
        return sd

    def _own_tensors(self) -> dict[str, torch.Tensor]:
        """Every parameter the paper's layout can set, by our name (backbone ones prefixed ``backbone.``)."""
        out: dict[str, torch.Tensor] = {f"t_tild.{i}": p for i, p in enumerate(self.t_tild)}
        out.update({f"w_logit.{i}": self.w_logit[i] for i in range(N_LAYERS)})
        out["beta"] = self.beta
        out.update({f"backbone.{k}": p for k, p in self.backbone.named_parameters()})
        return out

    def _original_to_own(self, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Check a paper-layout state dict completely and rename it to ``_own_tensors`` names."""
        targets = self._own_tensors()
        wanted = {f"t{i}_tild": f"t_tild.{i}" for i in range(N_LAYERS)}
        wanted.update({f"w{i}_tild": f"w_logit.{i}" for i in range(N_LAYERS)})
        wanted["beta"] = "beta"
        vgg = {_original_backbone_key(k): f"backbone.{k}" for k, _ in self.backbone.named_parameters()}
        where = f"Watson-VGG weights ({self.colorspace})"
        missing = sorted(k for k in wanted if k not in sd)
        unexpected = sorted(k for k in sd if k not in wanted and k not in vgg and k not in ("shift", "scale"))
        have_vgg = [k for k in vgg if k in sd]
        if have_vgg and len(have_vgg) != len(vgg):
            missing += sorted(k for k in vgg if k not in sd)
        if missing or unexpected:
            raise ValueError(
                f"{where} do not have the paper's WatsonDistanceVgg layout (t0_tild..t4_tild, w0_tild..w4_tild, "
                f"beta, optional shift/scale and vgg.slice1..5.*): missing {', '.join(missing) or 'none'}; "
                f"unexpected {', '.join(unexpected) or 'none'}"
            )
        out: dict[str, torch.Tensor] = {}
        for key, name in [*wanted.items(), *((k, vgg[k]) for k in have_vgg)]:
            v, p = sd[key], targets[name]
            if not isinstance(v, torch.Tensor) or v.shape != p.shape:
                got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise ValueError(f"{where}: {key} has shape {got}, expected {tuple(p.shape)}")
            out[name] = v.to(p.dtype)
        for key, ref in (("shift", LPIPS_SHIFT), ("scale", LPIPS_SCALE)):
            if key in sd and not torch.allclose(sd[key].double().reshape(-1), torch.tensor(ref, dtype=torch.float64),
                                                atol=1e-6):
                raise ValueError(f"{where}: {key} is {sd[key].reshape(-1).tolist()}, the model uses LPIPS' {ref}")
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pretrained={self.pretrained}"


def _masked_threshold(c0: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``smoothmax(t, (|c0| + EPS) ** w * t ** (1 - w))`` of (N, C, H, W) features and (1, C, 1, 1) sensitivities."""
    masked = (c0.abs() + EPS).pow(w) * t.pow(1 - w)
    # softmax-weighted average of (t, masked) = masked + (t - masked) * sigmoid(t - masked)
    gap = t - masked
    return masked + gap * torch.sigmoid(gap)


def _accept_original_and_no_backbone(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any,
                                     strict: bool, missing_keys: list, unexpected_keys: list,
                                     error_msgs: list) -> None:
    # Called on the copy that load_state_dict makes. A state dict in the paper's layout is checked
    # and renamed in place; absent backbone keys keep the current backbone.
    local = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if "t0_tild" in local:
        for k in local:
            del state_dict[prefix + k]
        state_dict.update({prefix + k: v for k, v in module._original_to_own(local).items()})
        # our w_logit is one (5,) vector where the paper has five scalars
        w = [state_dict.pop(f"{prefix}w_logit.{i}") for i in range(N_LAYERS)]
        state_dict[prefix + "w_logit"] = torch.stack(w)
    for name, t in module.backbone.state_dict(prefix=prefix + "backbone.", keep_vars=True).items():
        state_dict.setdefault(name, t)


__all__ = ["WatsonVGG"]
