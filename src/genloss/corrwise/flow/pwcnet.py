"""PWC-Net optical flow (Sun, Yang, Liu & Kautz, CVPR 2018) in plain PyTorch, registered as ``'pwcnet'``.

The architecture is the one of the public PyTorch port sniklaus/pytorch-pwc (itself a conversion of
the authors' Caffe model), so its checkpoints (``network-default.pytorch``, ``network-chairs-things.pytorch``)
load through :func:`convert_sniklaus_state_dict`:

* a 6-level feature pyramid (3 convolutions per level, stride 2 first; 16 ... 196 channels);
* at levels 6 .. 2 a flow decoder: cost volume between the level's features of image 1 and the
  features of image 2 backward-warped by the upsampled flow of the coarser level, over a 9 x 9
  displacement window (d = 4), followed by five densely connected convolutions and a flow prediction;
* a context network of dilated convolutions refining the level-2 flow.

Flow inside the network is in units of 1/20 pixel at full resolution (the training convention), and
the last estimate is at 1/4 resolution; :class:`PWCNetFlow` resizes the images to multiples of 64,
upsamples the flow bilinearly to the input size and rescales it, as the port's own ``estimate``.

The cost volume here is pure PyTorch (a loop of 81 shifted products, batched over N, C, H, W), so no
CUDA extension is needed and it is differentiable; it equals the port's CUDA kernel: mean over
channels of ``f1(x) * f2(x + d)``, zero outside the image, channel ``(dy + 4) * 9 + (dx + 4)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ... import weights as W
from ..._validation import full_precision
from ...transforms.grid import flow_to_grid
from ._learned import (
    WeightSource,
    check_flow_pair,
    check_module_device,
    freeze,
    load_checkpoint_file,
    load_strict,
    module_dtype_device,
    strip_prefix,
    to_rgb,
    unwrap_state_dict,
)
from .base import FlowEstimator

__all__ = ["PWCNet", "PWCNetFlow", "backward_warp_masked", "convert_sniklaus_state_dict", "cost_volume"]

#: channels of pyramid levels 1 .. 6
PYRAMID_CHANNELS = (16, 32, 64, 96, 128, 196)
#: output channels of the five densely connected decoder convolutions
DENSE_CHANNELS = (128, 128, 96, 64, 32)
#: displacement radius of the cost volume, (2 d + 1)^2 = 81 channels
MAX_DISPLACEMENT = 4
#: the network's flow is flow_in_pixels / 20 (PWC-Net's training convention)
FLOW_SCALE = 20.0
#: the image sides must be multiples of this (6 stride-2 levels)
SIZE_MULTIPLE = 64

_SNIKLAUS_BASE = "http://content.sniklaus.com/github/pytorch-pwc/"


#: the PWC-Net checkpoints of sniklaus/pytorch-pwc (converted from the authors' Caffe models), described
#: in genloss.hub's table
PWC_WEIGHTS = {
    "default": W.WEIGHT_FILES["pwc-default.pytorch"],
    "chairs-things": W.WEIGHT_FILES["pwc-chairs-things.pytorch"],
}


# ----------------------------------------------------------------------------------------------------
# building blocks


def cost_volume(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int = MAX_DISPLACEMENT) -> torch.Tensor:
    """Local correlation of two (N, C, H, W) feature maps over a (2d+1)^2 window.

    Returns:
        (N, (2d+1)^2, H, W); channel ``(dy + d) * (2d+1) + (dx + d)`` holds
        ``mean_c f1[c, y, x] * f2[c, y + dy, x + dx]``, zero where ``(x + dx, y + dy)`` is outside.
    """
    d = max_displacement
    h, w = f1.shape[-2:]
    f2 = F.pad(f2, (d, d, d, d))
    # 81 shifted products: faster and far lighter on memory than unfold here (measured on CPU)
    out = [
        (f1 * f2[:, :, dy : dy + h, dx : dx + w]).mean(dim=1)
        for dy in range(2 * d + 1)
        for dx in range(2 * d + 1)
    ]
    return torch.stack(out, dim=1)


def backward_warp_masked(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` at ``p + flow[p]`` (bilinear, pixels) and zero the pixels that touch the outside.

    As the port: a pixel whose bilinear footprint is not entirely inside the image (warped all-ones
    channel below 0.999) is set to zero rather than blended with the zero padding.
    """
    # align_corners=False: a 1-pixel-wide level reads zeros half a pixel outside, as the port
    grid = flow_to_grid(flow, align_corners=False)
    ones = torch.ones_like(x[:, :1])
    warped = F.grid_sample(torch.cat([x, ones], 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = (warped[:, -1:] > 0.999).to(x.dtype)
    return warped[:, :-1] * mask


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=dilation, dilation=dilation)


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(negative_slope=0.1)


class FeaturePyramid(nn.Module):
    """Six levels of three 3x3 convolutions (the first with stride 2): (N, 3, H, W) -> 6 feature maps."""

    def __init__(self) -> None:
        super().__init__()
        levels = []
        cin = 3
        for cout in PYRAMID_CHANNELS:
            convs = [_conv(cin, cout, stride=2), _lrelu(), _conv(cout, cout), _lrelu(), _conv(cout, cout), _lrelu()]
            levels.append(nn.Sequential(*convs))
            cin = cout
        self.levels = nn.ModuleList(levels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for level in self.levels:
            x = level(x)
            out.append(x)
        return out


def _decoder_in_channels(level: int) -> int:
    cost = (2 * MAX_DISPLACEMENT + 1) ** 2
    return cost if level == 6 else cost + PYRAMID_CHANNELS[level - 1] + 2 + 2


class FlowDecoder(nn.Module):
    """The flow estimator of one pyramid level (2 .. 6).

    Input (levels < 6): [cost volume, features of image 1, upsampled flow, upsampled decoder features];
    five densely connected convolutions (each output is *prepended* to its input, the port's order,
    which the pretrained weights depend on), then a 3x3 convolution predicting the flow.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level
        cin = _decoder_in_channels(level)
        if level < 6:
            prev_out = _decoder_in_channels(level + 1) + sum(DENSE_CHANNELS)
            self.upsample_flow = nn.ConvTranspose2d(2, 2, kernel_size=4, stride=2, padding=1)
            self.upsample_features = nn.ConvTranspose2d(prev_out, 2, kernel_size=4, stride=2, padding=1)
        dense = []
        for cout in DENSE_CHANNELS:
            dense.append(nn.Sequential(_conv(cin, cout), _lrelu()))
            cin += cout
        self.dense = nn.ModuleList(dense)
        self.predict_flow = _conv(cin, 2)
        #: network flow units -> pixels at this level
        self.warp_scale = FLOW_SCALE / 2**level

    @property
    def out_channels(self) -> int:
        return _decoder_in_channels(self.level) + sum(DENSE_CHANNELS)

    def forward(
        self, f1: torch.Tensor, f2: torch.Tensor, previous: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if previous is None:
            x = F.leaky_relu(cost_volume(f1, f2), 0.1)
        else:
            flow = self.upsample_flow(previous[0])
            feat = self.upsample_features(previous[1])
            volume = F.leaky_relu(cost_volume(f1, backward_warp_masked(f2, flow * self.warp_scale)), 0.1)
            x = torch.cat([volume, f1, flow, feat], dim=1)
        for layer in self.dense:
            x = torch.cat([layer(x), x], dim=1)
        return self.predict_flow(x), x


class ContextNetwork(nn.Sequential):
    """Dilated convolutions (dilation 1, 2, 4, 8, 16, 1) refining the level-2 flow from decoder features."""

    def __init__(self) -> None:
        cin = _decoder_in_channels(2) + sum(DENSE_CHANNELS)
        spec = [(128, 1), (128, 2), (128, 4), (96, 8), (64, 16), (32, 1)]
        layers: list[nn.Module] = []
        for cout, dil in spec:
            layers += [_conv(cin, cout, dilation=dil), _lrelu()]
            cin = cout
        layers.append(_conv(cin, 2))
        super().__init__(*layers)


class PWCNet(nn.Module):
    """The network: (N, 3, H, W) BGR images in [0, 1], H, W multiples of 64 -> (N, 2, H/4, W/4) flow.

    The output flow is in pixels of the full-resolution input (already multiplied by 20), at a
    quarter of its resolution.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = FeaturePyramid()
        self.decoders = nn.ModuleDict({f"level{lv}": FlowDecoder(lv) for lv in (6, 5, 4, 3, 2)})
        self.context = ContextNetwork()

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        n = image1.shape[0]
        # one pass over both images: the same convolutions, twice the batch
        pyramid = self.features(torch.cat([image1, image2], dim=0))
        estimate = None
        for lv in (6, 5, 4, 3, 2):
            f1, f2 = pyramid[lv - 1][:n], pyramid[lv - 1][n:]
            estimate = self.decoders[f"level{lv}"](f1, f2, estimate)
        flow, feat = estimate
        return (flow + self.context(feat)) * FLOW_SCALE


# ----------------------------------------------------------------------------------------------------
# checkpoint layout of sniklaus/pytorch-pwc

_NUMBERS = {"One": 1, "Two": 2, "Thr": 3, "Fou": 4, "Fiv": 5, "Six": 6}


def _convert_sniklaus_key(key: str) -> str:
    # the port names modules 'module*' in its files and 'net*' in its code; accept both
    p = r"(?:module|net)"
    if m := re.fullmatch(rf"{p}Extractor\.{p}(\w{{3}})\.([024])\.(weight|bias)", key):
        return f"features.levels.{_NUMBERS[m[1]] - 1}.{m[2]}.{m[3]}"
    if m := re.fullmatch(rf"{p}(Two|Thr|Fou|Fiv|Six)\.{p}(\w+?)\.(?:0\.)?(weight|bias)", key):
        level, part, tensor = _NUMBERS[m[1]], m[2], m[3]
        if part == "Upflow":
            return f"decoders.level{level}.upsample_flow.{tensor}"
        if part == "Upfeat":
            return f"decoders.level{level}.upsample_features.{tensor}"
        if part in _NUMBERS and _NUMBERS[part] <= 5:
            return f"decoders.level{level}.dense.{_NUMBERS[part] - 1}.0.{tensor}"
        if part == "Six":
            return f"decoders.level{level}.predict_flow.{tensor}"
    if m := re.fullmatch(rf"{p}Refiner\.{p}Main\.(\d+)\.(weight|bias)", key):
        return f"context.{m[1]}.{m[2]}"
    raise KeyError(key)


def convert_sniklaus_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a sniklaus/pytorch-pwc checkpoint to :class:`PWCNet`'s layout.

    Args:
        state: keys like ``moduleExtractor.moduleOne.0.weight``, ``moduleSix.moduleOne.0.weight``,
            ``moduleFiv.moduleUpflow.weight``, ``moduleRefiner.moduleMain.12.bias`` (``net`` instead
            of ``module`` accepted too).

    Returns:
        The same tensors under :class:`PWCNet`'s names (``features.levels.0.0.weight``, ...).
    """
    out, unknown = {}, []
    for key, value in state.items():
        try:
            out[_convert_sniklaus_key(key)] = value
        except KeyError:
            unknown.append(key)
    if unknown:
        raise ValueError(f"not a sniklaus/pytorch-pwc PWC-Net checkpoint; unknown keys: {unknown[:8]}")
    return out


def _to_own_layout(state: dict, what: str) -> dict:
    state = strip_prefix(state, "module.") if all(k.startswith("module.") for k in state) else state
    if any(re.match(r"(module|net)Extractor\.", k) for k in state):
        return convert_sniklaus_state_dict(state)
    state = strip_prefix(state, "net.")
    if not any(k.startswith("features.") for k in state):
        raise ValueError(f"{what} is neither a sniklaus/pytorch-pwc nor a genloss PWC-Net checkpoint")
    return state


def _resolve_weights(weights, weights_dir) -> dict | None:
    if weights is None:
        return None
    if isinstance(weights, Mapping):
        return _to_own_layout(unwrap_state_dict(weights), "the given state dict")
    if isinstance(weights, str | os.PathLike):
        text = os.fspath(weights)
        if os.path.isfile(os.path.expanduser(text)):
            return _to_own_layout(load_checkpoint_file(text), text)
        tag = re.sub(r"^(network-|pwc-)|\.pytorch$", "", text)
        if tag in PWC_WEIGHTS:
            spec = PWC_WEIGHTS[tag]
            path = W.find_local(spec, weights_dir)
            if path is None:
                # sniklaus' run.py caches the same file in torch.hub's folder as 'pwc-<tag>'
                hub = Path(torch.hub.get_dir()) / "checkpoints" / f"pwc-{tag}"
                path = hub if hub.is_file() else W.resolve(spec, weights_dir)
            return _to_own_layout(load_checkpoint_file(path), str(path))
        raise ValueError(
            f"unknown PWC-Net weights {text!r}: not a file and not one of {sorted(PWC_WEIGHTS)} "
            "(or None for random weights)"
        )
    raise TypeError(f"weights must be a name, a path, a state dict or None, got {type(weights).__name__}")


# ----------------------------------------------------------------------------------------------------
# the estimator


class PWCNetFlow(FlowEstimator):
    """PWC-Net optical flow between two image batches, in pixels, at the input resolution.

    Args:
        weights: ``'default'`` or ``'chairs-things'`` (sniklaus/pytorch-pwc checkpoints, looked up in
            ``weights_dir``, ``$GENLOSS_WEIGHTS_DIR``, the genloss cache and torch.hub's cache, else
            downloaded), a checkpoint path, a state dict (sniklaus or genloss layout), or ``None`` for
            random initialisation.
        weights_dir: a folder searched first for weight files.
        check_range: reject images clearly outside [0, 1] (e.g. in [-1, 1] or [0, 255]).

    Shape:
        ``forward(image1, image2)``: images (N, C, H, W) in [0, 1], C in {1, 3} (RGB; reordered to the
        BGR the weights were trained on; greyscale repeated), any H, W >= 1. The images are resized
        bilinearly to the next multiples of 64; the flow is resized back and rescaled per axis.
        Returns (N, 2, H, W) flow in pixels, channel 0 = x: pixel ``p`` of ``image1`` matches
        ``p + flow[p]`` in ``image2``. Output dtype = input dtype; estimator and images on one device.

    The estimator is frozen (eval mode, no parameter gradients) but differentiable w.r.t. the images,
    except through the validity mask of the warping (a step function, as in the original).
    """

    learned = True

    def __init__(
        self,
        weights: WeightSource = "default",
        weights_dir: str | os.PathLike | None = None,
        check_range: bool = True,
    ) -> None:
        super().__init__()
        self.check_range = check_range
        self.net = PWCNet()
        state = _resolve_weights(weights, weights_dir)
        if state is not None:
            load_strict(self.net, state, "PWC-Net checkpoint")
        freeze(self.net)

    def train(self, mode: bool = True) -> PWCNetFlow:
        """Kept in eval mode whatever ``mode`` (a fixed estimator)."""
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        a, b = check_flow_pair(image1, image2, check_range=self.check_range)
        check_module_device(self.net, a, "PWC-Net")
        out_dtype = a.dtype
        dtype, _ = module_dtype_device(self.net)
        h, w = a.shape[-2:]
        hs, ws = (SIZE_MULTIPLE * -(-s // SIZE_MULTIPLE) for s in (h, w))
        with full_precision(a.device.type):
            # RGB -> BGR: the Caffe-trained weights take BGR in [0, 1]
            a = to_rgb(a).flip(1).to(dtype)
            b = to_rgb(b).flip(1).to(dtype)
            if (hs, ws) != (h, w):
                a = F.interpolate(a, size=(hs, ws), mode="bilinear", align_corners=False)
                b = F.interpolate(b, size=(hs, ws), mode="bilinear", align_corners=False)
            flow = self.net(a, b)
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            scale = torch.tensor([w / ws, h / hs], dtype=flow.dtype, device=flow.device).view(1, 2, 1, 1)
            flow = flow * scale
        return flow.to(out_dtype)
