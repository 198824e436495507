"""RAFT optical flow (Teed & Deng, ECCV 2020) on torchvision's network, usable at any image size.

Registered as ``'raft'`` (RAFT-large) and ``'raft-small'``. The network modules and weight layout are
torchvision's (``torchvision.models.optical_flow.raft_large`` / ``raft_small``), so its pretrained
weights load directly; the original ``princeton-vl/RAFT`` checkpoints (``raft-things.pth`` ...) load
through :func:`convert_original_raft_state_dict`.

Differences to calling torchvision's ``RAFT.forward``:

* small images: torchvision refuses inputs under 128 x 128 because its correlation lookup divides by
  ``size - 1`` (undefined for the 1 x 1 coarsest level of a 64 x 64 input; the original RAFT code
  produces NaN there with current PyTorch). Here the lookup is written in pixel coordinates with
  ``align_corners=False`` normalisation, which samples exactly the same values for levels larger
  than one pixel and is well defined for 1-pixel levels. So 64 x 64 images (8 x 8 feature maps) run
  at their own resolution (``small_inputs='native'``, the default); ``'upsample'`` and ``'pad'``
  reproduce the two usual work-arounds (see docs/flow.md for their cost);
* sizes that are not multiples of 8 are padded by edge replication (as the original ``InputPadder``)
  and the flow is cropped back;
* the convex upsampling of the flow runs once after the last iteration instead of after every one
  (the intermediate flows are discarded at inference anyway);
* the estimator is frozen: always in eval mode (BatchNorm statistics of the context encoder never
  change), parameters without gradients; gradients still flow to the input images.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.models import optical_flow as tv_flow

from ... import weights as W
from ..._validation import full_precision
from ...transforms.grid import pixel_grid
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

__all__ = [
    "RAFT_THINGS",
    "RAFTFlow",
    "convert_original_raft_state_dict",
    "correlation_pyramid",
    "lookup_correlation",
]

#: refinement iterations of the CorrWise paper (its ``flow_utils.RAFT(num_iters=5)``)
DEFAULT_ITERATIONS = 5

#: default torchvision weights: C_T_V1 are the original authors' FlyingChairs + FlyingThings weights
#: ported by torchvision, i.e. ``raft-things.pth``, the checkpoint of the CorrWise paper
DEFAULT_WEIGHTS = {"large": "C_T_V1", "small": "C_T_V1"}

SMALL_INPUT_MODES = ("native", "upsample", "pad")

_ENUMS = {"large": tv_flow.Raft_Large_Weights, "small": tv_flow.Raft_Small_Weights}

# torchvision file names end in the first 8 hex digits of the file's sha256 (torch.hub's convention)
_HASH_PREFIX = re.compile(r"-([a-f0-9]{8,})\.pth$")


def _torchvision_files() -> dict[str, W.WeightFile]:
    """A weight-file spec for every torchvision RAFT checkpoint: the table's entry for the defaults.

    Only the defaults are in genloss.hub's table (listing all eight would make "download every known
    file" fetch 160 MB nobody asked for); the others still resolve (weights_dir, $GENLOSS_WEIGHTS_DIR,
    caches, download) when requested by name.
    """
    files = {}
    for variant, enum in _ENUMS.items():
        for member in enum:
            name = os.path.basename(member.url)
            spec = W.WEIGHT_FILES.get(name) or W.WeightFile(
                name,
                member.url,
                # torchvision publishes only the sha256 prefix in the file name (checked on load)
                None,
                f"torchvision RAFT-{variant} weights {member.name}",
                torch_hub=True,
            )
            files[f"{variant}:{member.name}"] = spec
    return files


_TORCHVISION_FILES = _torchvision_files()

#: The authors' RAFT checkpoint trained on FlyingChairs + FlyingThings3D, used by the CorrWise paper.
#: princeton-vl distributes it only inside ``models.zip`` (``_ORIGINAL_ZIP``); its table URL is a direct
#: copy attached to the public sczhou/ProPainter v0.1.0 release (see genloss.hub). No sha256 is published we
#: could check from here, so none is recorded (files are not hash-verified): compare the converted
#: tensors with torchvision's ``C_T_V1`` weights, which are the same checkpoint ported.
RAFT_THINGS = W.WEIGHT_FILES["raft-things.pth"]
_ORIGINAL_ZIP = "https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip"
_ORIGINAL_NAMES = ("raft-things", "raft-kitti", "raft-sintel", "raft-chairs", "raft-small")


# ----------------------------------------------------------------------------------------------------
# correlation pyramid with a lookup that works for feature maps of any size >= 1


def correlation_pyramid(fmap1: torch.Tensor, fmap2: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """All-pairs correlation volume and its average-pooled pyramid.

    Args:
        fmap1, fmap2: (N, C, h, w) feature maps.
        num_levels: pyramid levels; level ``k`` has the last two dimensions pooled ``k`` times by 2.

    Returns:
        ``num_levels`` tensors of shape (N * h * w, 1, h_k, w_k): for each pixel of ``fmap1`` its dot
        products with every pixel of ``fmap2``, divided by ``sqrt(C)``.
    """
    n, c, h, w = fmap1.shape
    if min(h, w) < 2 ** (num_levels - 1):
        raise ValueError(
            f"feature maps of {h}x{w} are too small for {num_levels} correlation levels "
            f"(need at least {2 ** (num_levels - 1)} pixels per side, i.e. images of "
            f"{8 * 2 ** (num_levels - 1)} pixels)"
        )
    corr = torch.bmm(fmap1.flatten(2).transpose(1, 2), fmap2.flatten(2)) / math.sqrt(c)
    level = corr.reshape(n * h * w, 1, h, w)
    pyramid = [level]
    for _ in range(num_levels - 1):
        level = F.avg_pool2d(level, kernel_size=2, stride=2)
        pyramid.append(level)
    return pyramid


def lookup_correlation(pyramid: list[torch.Tensor], coords: torch.Tensor, radius: int) -> torch.Tensor:
    """Bilinear look-up of a (2r+1)^2 window around ``coords`` in every pyramid level.

    Args:
        pyramid: output of :func:`correlation_pyramid` for (N, C, h, w) feature maps.
        coords: (N, 2, h, w) positions in ``fmap2`` pixels (x, y) at the finest level.
        radius: window radius ``r``.

    Returns:
        (N, L * (2r+1)^2, h, w). Channel order follows torchvision/original RAFT (whose pretrained
        weights depend on it): within a level, channel ``i * (2r+1) + j`` samples x offset ``i - r``
        and y offset ``j - r``. Samples outside the volume are zero.
    """
    n, _, h, w = coords.shape
    side = 2 * radius + 1
    offsets = torch.arange(-radius, radius + 1, device=coords.device, dtype=coords.dtype)
    # delta[i, j] = (x offset i - r, y offset j - r), as in the original implementation
    delta = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1).view(1, side, side, 2)
    centres = coords.permute(0, 2, 3, 1).reshape(n * h * w, 1, 1, 2)
    out = []
    for k, volume in enumerate(pyramid):
        size = torch.tensor([volume.shape[-1], volume.shape[-2]], device=coords.device, dtype=coords.dtype)
        points = centres / 2**k + delta
        # pixel -> [-1, 1] with align_corners=False: exact for any size, including 1-pixel levels
        grid = (2 * points + 1) / size - 1
        sampled = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out.append(sampled.view(n, h, w, side * side))
    return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous()


def _convex_upsample(flow: torch.Tensor, mask: torch.Tensor | None, factor: int = 8) -> torch.Tensor:
    """(N, 2, h, w) flow at 1/8 -> (N, 2, 8h, 8w) in full-resolution pixels (RAFT's upsampling)."""
    n, c, h, w = flow.shape
    if mask is None:  # RAFT-small: bilinear with align_corners=True, as the original ``upflow8``
        return factor * F.interpolate(flow, size=(factor * h, factor * w), mode="bilinear", align_corners=True)
    weights = torch.softmax(mask.view(n, 1, 9, factor, factor, h, w), dim=2)
    neighbours = F.unfold(factor * flow, kernel_size=3, padding=1).view(n, c, 9, 1, 1, h, w)
    up = (weights * neighbours).sum(dim=2)  # (n, c, factor, factor, h, w)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(n, c, factor * h, factor * w)


# ----------------------------------------------------------------------------------------------------
# original princeton-vl checkpoints -> torchvision layout

_ENCODERS = {"fnet": "feature_encoder", "cnet": "context_encoder"}


def _convert_encoder_key(rest: str, small: bool) -> str:
    if m := re.fullmatch(r"conv1\.(weight|bias)", rest):
        return f"convnormrelu.0.{m[1]}"
    if m := re.fullmatch(r"norm1\.(\w+)", rest):
        return f"convnormrelu.1.{m[1]}"
    if m := re.fullmatch(r"conv2\.(weight|bias)", rest):
        return f"conv.{m[1]}"
    if m := re.fullmatch(r"(layer\d\.\d)\.conv(\d)\.(weight|bias)", rest):
        return f"{m[1]}.convnormrelu{m[2]}.0.{m[3]}"
    if m := re.fullmatch(r"(layer\d\.\d)\.norm(\d)\.(\w+)", rest):
        # the downsampling branch's norm is registered twice in the original blocks (as normN and
        # as downsample.1): norm3 in the residual blocks of RAFT-large, norm4 in RAFT-small's bottlenecks
        if int(m[2]) == (4 if small else 3):
            return f"{m[1]}.downsample.1.{m[3]}"
        return f"{m[1]}.convnormrelu{m[2]}.1.{m[3]}"
    if m := re.fullmatch(r"(layer\d\.\d)\.downsample\.([01])\.(\w+)", rest):
        return f"{m[1]}.downsample.{m[2]}.{m[3]}"
    raise KeyError(rest)


def _convert_update_key(rest: str) -> str:
    rules = [
        (r"encoder\.convc(\d)\.(weight|bias)", r"update_block.motion_encoder.convcorr\1.0.\2"),
        (r"encoder\.convf(\d)\.(weight|bias)", r"update_block.motion_encoder.convflow\1.0.\2"),
        (r"encoder\.conv\.(weight|bias)", r"update_block.motion_encoder.conv.0.\1"),
        (r"gru\.conv([zrq])([12])\.(weight|bias)", r"update_block.recurrent_block.convgru\2.conv\1.\3"),
        (r"gru\.conv([zrq])\.(weight|bias)", r"update_block.recurrent_block.convgru1.conv\1.\2"),
        (r"flow_head\.conv([12])\.(weight|bias)", r"update_block.flow_head.conv\1.\2"),
        (r"mask\.0\.(weight|bias)", r"mask_predictor.convrelu.0.\1"),
        (r"mask\.2\.(weight|bias)", r"mask_predictor.conv.\1"),
    ]
    for pattern, repl in rules:
        if re.fullmatch(pattern, rest):
            return re.sub(pattern, repl, rest)
    raise KeyError(rest)


def _is_original_small(state: Mapping[str, torch.Tensor]) -> bool:
    # only RAFT-large has the learned upsampling mask in its update block
    return not any(k.startswith("update_block.mask.") for k in state)


def convert_original_raft_state_dict(
    state: Mapping[str, torch.Tensor], small: bool | None = None
) -> dict[str, torch.Tensor]:
    """Rename a princeton-vl RAFT checkpoint (``raft-things.pth`` ...) to torchvision's RAFT layout.

    Args:
        state: the original state dict, with or without DataParallel's ``module.`` prefix
            (keys like ``module.fnet.conv1.weight``, ``module.update_block.encoder.convc1.weight``).
        small: whether it is a RAFT-small checkpoint; inferred from the keys when ``None``.

    Returns:
        A state dict for ``torchvision.models.optical_flow.raft_large()`` (or ``raft_small()``);
        tensors are shared, not copied. Duplicate entries of the original (the downsampling norms
        registered twice) are merged after checking they are equal.

    Raises:
        ValueError: for keys that belong to no RAFT layer, or inconsistent duplicates.
    """
    state = strip_prefix(state, "module.")
    if small is None:
        small = _is_original_small(state)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        head, _, rest = key.partition(".")
        try:
            if head in _ENCODERS:
                new = f"{_ENCODERS[head]}.{_convert_encoder_key(rest, small)}"
            elif head == "update_block":
                new = _convert_update_key(rest)
            else:
                raise KeyError(key)
        except KeyError:
            unknown.append(key)
            continue
        if new in out:
            if not torch.equal(out[new], value):
                raise ValueError(f"checkpoint entries for {new} disagree ({key} differs from its duplicate)")
            continue
        out[new] = value
    if unknown:
        raise ValueError(f"not a RAFT checkpoint in the original layout; unknown keys: {unknown[:8]}")
    return out


# ----------------------------------------------------------------------------------------------------
# weight resolution


def _check_hash_prefix(path: Path, url: str) -> None:
    m = _HASH_PREFIX.search(os.path.basename(url))
    if m is None:
        return
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if not h.hexdigest().startswith(m[1]):
        raise W.ChecksumError(
            f"{path} does not match the sha256 prefix {m[1]} of {url}; delete it and download it again"
        )


def _torchvision_state(variant: str, member_name: str, weights_dir, progress: bool) -> dict:
    spec = _TORCHVISION_FILES[f"{variant}:{member_name}"]
    path = W.find_local(spec, weights_dir)
    if path is None:
        # torchvision's own download cache, so weights fetched by torchvision are reused
        hub = Path(torch.hub.get_dir()) / "checkpoints" / spec.name
        path = hub if hub.is_file() else None
    if path is None:
        path = W.resolve(spec, weights_dir, progress=progress)  # downloads, or WeightsUnavailableError
    _check_hash_prefix(path, spec.url)
    return load_checkpoint_file(path)


def _original_state(name: str, weights_dir) -> dict:
    fname = name if name.endswith(".pth") else name + ".pth"
    if fname == RAFT_THINGS.name:
        return load_checkpoint_file(W.resolve(RAFT_THINGS, weights_dir))
    spec = W.WeightFile(fname, _ORIGINAL_ZIP, None, "original RAFT checkpoint (princeton-vl)")
    path = W.find_local(spec, weights_dir)
    if path is None:
        raise W.WeightsUnavailableError(
            f"RAFT checkpoint {fname!r} was not found. princeton-vl distributes it inside\n    {_ORIGINAL_ZIP}\n"
            f"(unzip it and put {fname} into {W.cache_dir()}, a folder passed as weights_dir=..., "
            f"or one named in {W.ENV_WEIGHTS_DIR}).",
            fname,
        )
    return load_checkpoint_file(path)


def _enum_member(variant: str, name: str):
    enum = _ENUMS[variant]
    key = name.split(".")[-1].upper()
    try:
        return enum[key]
    except KeyError:
        return None


def _resolve_weights(variant: str, weights, weights_dir, progress: bool) -> dict | None:
    """State dict in torchvision layout for ``weights`` (see :class:`RAFTFlow`), or ``None``."""
    if weights is None:
        return None
    if isinstance(weights, str) and weights == "default":
        weights = DEFAULT_WEIGHTS[variant]
    if isinstance(weights, tv_flow.Raft_Large_Weights | tv_flow.Raft_Small_Weights):
        if not isinstance(weights, _ENUMS[variant]):
            raise ValueError(f"{weights} are weights of another RAFT variant than {variant!r}")
        return _torchvision_state(variant, weights.name, weights_dir, progress)
    if isinstance(weights, Mapping):
        return _to_torchvision_layout(unwrap_state_dict(weights), variant, "the given state dict")
    if isinstance(weights, str | os.PathLike):
        text = os.fspath(weights)
        if os.path.isfile(os.path.expanduser(text)):
            return _to_torchvision_layout(load_checkpoint_file(text), variant, text)
        stem = text[:-4] if text.endswith(".pth") else text
        if stem in _ORIGINAL_NAMES:
            return _to_torchvision_layout(_original_state(stem, weights_dir), variant, stem)
        member = _enum_member(variant, text)
        if member is not None:
            return _torchvision_state(variant, member.name, weights_dir, progress)
        options = [m.name for m in _ENUMS[variant]] + list(_ORIGINAL_NAMES)
        raise ValueError(
            f"unknown RAFT-{variant} weights {text!r}: not a file, and not one of {options} "
            "(or 'default', or None for random weights)"
        )
    raise TypeError(f"weights must be a name, a path, a state dict or None, got {type(weights).__name__}")


def _to_torchvision_layout(state: dict, variant: str, what: str) -> dict:
    state = strip_prefix(state, "module.")
    if any(k.startswith("fnet.") for k in state):
        if _is_original_small(state) != (variant == "small"):
            kind = "RAFT-small" if _is_original_small(state) else "RAFT-large"
            raise ValueError(f"{what} is a {kind} checkpoint, but this estimator is RAFT-{variant}")
        return convert_original_raft_state_dict(state, small=variant == "small")
    # a state dict of this estimator itself (keys under 'net.') or of torchvision's RAFT
    return strip_prefix(state, "net.")


# ----------------------------------------------------------------------------------------------------
# the estimator


class RAFTFlow(FlowEstimator):
    """RAFT optical flow between two image batches, in pixels, at the input resolution.

    Args:
        variant: ``'large'`` (RAFT, 5.3 M parameters) or ``'small'`` (RAFT-small, 1 M).
        weights: which weights to load:

            * ``'default'``: torchvision's ``C_T_V1`` (the authors' FlyingChairs + FlyingThings3D
              weights, i.e. the ``raft-things.pth`` used by the CorrWise paper, as ported by torchvision);
            * a torchvision weights enum or its name (``'C_T_SKHT_V2'``, ``Raft_Large_Weights.C_T_V2``,
              ...): looked up in ``weights_dir``, ``$GENLOSS_WEIGHTS_DIR``, the genloss cache and
              torch.hub's cache, else downloaded into the genloss cache;
            * an original princeton-vl checkpoint name (``'raft-things'``, ``'raft-kitti'``, ...),
              converted with :func:`convert_original_raft_state_dict`;
            * a path to a checkpoint file, or a state dict (original or torchvision layout);
            * ``None``: random initialisation (tests, timing).
        iterations: refinement iterations (CorrWise paper: 5; RAFT paper evaluation: 12 to 32).
        small_inputs: how images under the network's minimum are handled: ``'native'`` (default)
            runs 64 x 64 and larger at their own size (smaller ones are upsampled to 64); ``'upsample'``
            bilinearly upsamples images under 128 pixels per side and rescales the flow; ``'pad'``
            pads them to 128 by edge replication.
        weights_dir: a folder searched first for weight files.
        check_range: reject images clearly outside [0, 1] (e.g. in [-1, 1] or [0, 255]).
        progress: show a progress bar when downloading.

    Shape:
        ``forward(image1, image2)``: images (N, C, H, W) in [0, 1], C in {1, 3} (greyscale is
        repeated to RGB), any H, W >= 1; returns (N, 2, H, W) flow in pixels, channel 0 = x, such that
        pixel ``p`` of ``image1`` matches ``p + flow[p]`` in ``image2``. Output dtype = input dtype
        (computed in the weights' dtype, float32 by default); images and estimator must share a device.
    """

    learned = True

    def __init__(
        self,
        variant: str = "large",
        weights: WeightSource | tv_flow.Raft_Large_Weights | tv_flow.Raft_Small_Weights = "default",
        iterations: int = DEFAULT_ITERATIONS,
        small_inputs: str = "native",
        weights_dir: str | os.PathLike | None = None,
        check_range: bool = True,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if variant not in _ENUMS:
            raise ValueError(f"variant must be 'large' or 'small', got {variant!r}")
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
        if small_inputs not in SMALL_INPUT_MODES:
            raise ValueError(f"small_inputs must be one of {SMALL_INPUT_MODES}, got {small_inputs!r}")
        self.variant = variant
        self.iterations = iterations
        self.small_inputs = small_inputs
        self.check_range = check_range
        builder = tv_flow.raft_large if variant == "large" else tv_flow.raft_small
        self.net = builder(weights=None, progress=False)
        state = _resolve_weights(variant, weights, weights_dir, progress)
        if state is not None:
            load_strict(self.net, state, f"RAFT-{variant} checkpoint")
        freeze(self.net)

    @property
    def min_size(self) -> int:
        """Smallest side the network runs at: 64 with the native look-up, 128 as torchvision."""
        return 64 if self.small_inputs == "native" else 128

    def train(self, mode: bool = True) -> RAFTFlow:
        """Kept in eval mode whatever ``mode`` (a fixed estimator; BatchNorm statistics must not move)."""
        super().train(mode)
        self.net.eval()
        return self

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, iterations={self.iterations}, small_inputs={self.small_inputs!r}"

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        a, b = check_flow_pair(image1, image2, check_range=self.check_range)
        check_module_device(self.net, a, "RAFT")
        out_dtype = a.dtype
        dtype, _ = module_dtype_device(self.net)
        with full_precision(a.device.type):
            # RAFT expects RGB in [-1, 1]
            a = to_rgb(a).to(dtype) * 2 - 1
            b = to_rgb(b).to(dtype) * 2 - 1
            flow = self._any_size(a, b)
        return flow.to(out_dtype)

    def _any_size(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Flow at any size: resize or pad to what the network accepts, then undo it on the flow."""
        h, w = a.shape[-2:]
        m = self.min_size
        if min(h, w) < m and self.small_inputs in ("native", "upsample"):
            s = m / min(h, w)
            hs, ws = 8 * math.ceil(h * s / 8), 8 * math.ceil(w * s / 8)
            a = F.interpolate(a, size=(hs, ws), mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=(hs, ws), mode="bilinear", align_corners=False)
            flow = self._network_flow(a, b)
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            scale = torch.tensor([w / ws, h / hs], dtype=flow.dtype, device=flow.device).view(1, 2, 1, 1)
            return flow * scale
        hp, wp = max(8 * math.ceil(h / 8), m), max(8 * math.ceil(w / 8), m)
        if (hp, wp) == (h, w):
            return self._network_flow(a, b)
        top, left = (hp - h) // 2, (wp - w) // 2
        pad = (left, wp - w - left, top, hp - h - top)
        flow = self._network_flow(F.pad(a, pad, mode="replicate"), F.pad(b, pad, mode="replicate"))
        return flow[..., top : top + h, left : left + w]

    def _network_flow(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        """RAFT on (N, 3, H, W) images in [-1, 1], H and W multiples of 8 -> (N, 2, H, W) flow."""
        net = self.net
        n, _, h, w = image1.shape
        fmaps = net.feature_encoder(torch.cat([image1, image2], dim=0))
        fmap1, fmap2 = fmaps.chunk(2, dim=0)
        pyramid = correlation_pyramid(fmap1, fmap2, net.corr_block.num_levels)

        context = net.context_encoder(image1)
        hidden_size = net.update_block.hidden_state_size
        hidden, context = context.split([hidden_size, context.shape[1] - hidden_size], dim=1)
        hidden, context = torch.tanh(hidden), torch.relu(context)

        coords0 = pixel_grid(h // 8, w // 8, device=image1.device, dtype=image1.dtype).expand(n, -1, -1, -1)
        coords1 = coords0.clone()
        for _ in range(self.iterations):
            coords1 = coords1.detach()  # as RAFT: no gradient through the look-up positions
            corr = lookup_correlation(pyramid, coords1, net.corr_block.radius)
            hidden, delta = net.update_block(hidden, context, corr, coords1 - coords0)
            coords1 = coords1 + delta
        mask = None if net.mask_predictor is None else net.mask_predictor(hidden)
        return _convex_upsample(coords1 - coords0, mask)
