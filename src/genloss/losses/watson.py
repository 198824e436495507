"""Watson's perceptual model as a loss: Watson-DCT and Watson-DFT (Czolbe et al., NeurIPS 2020).

Per 8x8 block and frequency the model compares the coefficients ``c0`` (target) and ``c1``
(input) relative to a visibility threshold ``s``:

1. frequency sensitivity ``t = exp(t_tild)`` (a BxB table, learned; JPEG's table as the DCT init),
2. luminance masking ``t_l = t * (c0_dc / mean(c0_dc)) ** alpha``,
3. contrast masking ``s = smoothmax(t_l, |c0| ** w * t_l ** (1 - w))``, ``smoothmax(a, b) =
   (a e^a + b e^b) / (e^a + e^b)``,
4. Minkowski pooling ``D = (sum |(c0 - c1) / s| ** beta) ** (1 / beta)`` per image.

Watson-DFT applies 1-4 to the amplitudes of a block real DFT and adds a weighted angular
distance of the phases. RGB images are converted to YCbCr; each channel has its own parameters
and the three distances are mixed with learned softmax weights. ``LA`` is one grey channel.

Differences from the paper's code (``faithful=True`` restores the original behaviour):

* luminance masking normalises by the mean DC of **each image** (the original uses the mean over
  the whole batch, so one image's loss depended on the other images in its batch);
* the luminance ratio ``c0_dc / mean(c0_dc)`` is floored at ``luminance_floor`` (default 0.1):
  the original has no floor, so a pure black 8x8 block (DC = 0) gets a threshold of ~1e-6 and
  the distance explodes (1e5-6e7 instead of ~1-6 on a photograph with black borders).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .. import weights as _weights
from .._validation import hand_written_autograd_refused, in_functorch_transform
from ..transforms.blocks import block_dct_matrix, block_rdft_matrix, pad_to_multiple
from ..transforms.color import LUMA_WEIGHTS, YCBCR_MATRIX, YCBCR_OFFSET
from ._watson_kernels import (
    EPS,
    BlockDFT,
    BlockPlan,
    FrozenWatsonDCT,
    FrozenWatsonDFT,
    WatsonDFTInput,
    WatsonDFTStable,
    WatsonPoolDCT,
    amplitude,
    block_dft_fft,
    positive_pow,
    spectrum_reference,
)
from .base import ImageLoss, grey_channels

#: JPEG luminance quantisation table as Watson's DCT sensitivity init (Watson 1993)
WATSON_DCT_TABLE = (
    (1.40, 1.01, 1.16, 1.66, 2.40, 3.43, 4.79, 6.56),
    (1.01, 1.45, 1.32, 1.52, 2.00, 2.71, 3.67, 4.93),
    (1.16, 1.32, 2.24, 2.59, 2.98, 3.64, 4.60, 5.88),
    (1.66, 1.52, 2.59, 3.77, 4.55, 5.30, 6.28, 7.60),
    (2.40, 2.00, 2.98, 4.55, 6.15, 7.46, 8.71, 10.17),
    (3.43, 2.71, 3.64, 5.30, 7.46, 9.62, 11.58, 13.51),
    (4.79, 3.67, 4.60, 6.28, 8.71, 11.58, 14.50, 17.29),
    (6.56, 4.93, 5.88, 7.60, 10.17, 13.51, 17.29, 21.15),
)

_CHANNEL_PREFIXES = ("ly", "lcb", "lcr")


#: luminance masking floor of the default (non-faithful) mode
DEFAULT_LUMINANCE_FLOOR = 0.1


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _check_floor(luminance_floor: float | None, faithful: bool) -> float | None:
    """The floor to use: ``None`` in faithful mode (the original has none), 0.1 unless given."""
    if faithful:
        if luminance_floor is not None:
            # silently ignoring an explicit floor would give numbers the caller did not ask for
            raise ValueError("luminance_floor cannot be combined with faithful=True (the original has no floor)")
        return None
    if luminance_floor is None:
        return DEFAULT_LUMINANCE_FLOOR
    if not 0.0 <= luminance_floor < 1.0:
        raise ValueError(f"luminance_floor must be in [0, 1), got {luminance_floor}")
    return float(luminance_floor)


def _shift_index(shape: torch.Size, offset: torch.Tensor, pad: int, block: int) -> torch.Tensor:
    """Flat gather index for :func:`_block_rows`: shift by ``offset - pad`` px, replicate borders, blocks.

    For an (N, C, H, W) image, ``x.reshape(N, C*H*W)[:, index]`` equals
    ``F.pad(x, (pad,) * 4, mode='replicate')[..., oy:oy + H, ox:ox + W]`` padded to a multiple of
    the block size and split into (channel, block, pixel) rows. Computed on the device from the
    offset tensor (no host read of the offset, no data-dependent slicing, so ``torch.compile``
    traces it), once per call for both images.
    """
    _, c, h, w = shape
    # ceil division, not h + (-h) % block: see transforms.blocks.pad_to_multiple (dynamic shapes)
    hp, wp = -(-h // block) * block, -(-w // block) * block
    device = offset.device
    # source row/column of every output row/column: the block padding repeats the last row/column
    # of the shifted image, the shift's own padding repeats the image border
    rows = (torch.arange(hp, device=device).clamp_max(h - 1) + (offset[0] - pad)).clamp(0, h - 1)
    cols = (torch.arange(wp, device=device).clamp_max(w - 1) + (offset[1] - pad)).clamp(0, w - 1)
    # ordered (channel, block row, block column, row in block, column in block)
    chan = torch.arange(c, device=device) * (h * w)
    idx = (chan.view(c, 1, 1, 1, 1) + rows.view(1, hp // block, 1, block, 1) * w
           + cols.view(1, 1, wp // block, 1, block))
    return idx.reshape(-1)


def _block_rows(x: torch.Tensor, index: torch.Tensor | None, block: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, K, B*B): the pixels of each BxB block of each channel as one row.

    Without ``index``: sizes that are not multiples of B are replicate-padded at the bottom/right
    (one permute copy). With an ``index`` from :func:`_shift_index`: the shifted blocks, one gather.
    """
    n, c = x.shape[:2]
    if index is None:
        x = pad_to_multiple(x, block)
        hb, wb = x.shape[-2] // block, x.shape[-1] // block
        x = x.reshape(n, c, hb, block, wb, block).permute(0, 1, 2, 4, 3, 5)
        return x.reshape(n, c, hb * wb, block * block)
    return x.reshape(n, -1).index_select(-1, index).view(n, c, -1, block * block)


class _WatsonBase(ImageLoss):
    """Shared parameters, colour handling, shift and pooling of Watson-DCT and Watson-DFT."""

    block = 8
    _rebuilds_constants = True  # (the transforms from their CPU masters, the DFT's phase mask; see _apply)
    min_size = 8

    def __init__(
        self,
        *,
        colorspace: str = "RGB",
        pretrained: bool = True,
        reduction: str = "sum",
        deterministic: bool = False,
        faithful: bool = False,
        luminance_floor: float | None = None,
        max_shift: int = 8,
        weights_dir: str | os.PathLike | None = None,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__(colorspace=colorspace, reduction=reduction, value_range=value_range)
        self.luminance_floor = _check_floor(luminance_floor, faithful)
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
            raise ValueError(f"max_shift must be an int >= 0, got {max_shift!r}")
        self.channels = grey_channels(self.colorspace)
        self.n_channels = 3 if self.colorspace == "RGB" else 1
        self.deterministic = deterministic
        self.faithful = faithful
        self.max_shift = max_shift
        self.pretrained = pretrained
        #: hand-written backward for frozen metrics (faster, once differentiable); False: plain autograd
        self.fast_backward = True
        c = self.n_channels
        # softmax weights of the Y, Cb, Cr distances (RGB only)
        self.channel_logits = nn.Parameter(torch.zeros(3)) if self.colorspace == "RGB" else None
        self.alpha = nn.Parameter(torch.full((c,), self._init_alpha))
        self.w_logit = nn.Parameter(torch.full((c,), _logit(self._init_w)))
        self.beta = nn.Parameter(torch.full((c,), self._init_beta))
        self._init_frequency_parameters()
        self._register_transforms()
        if pretrained:
            prefix = "rgb" if self.colorspace == "RGB" else "gray"
            self.load_original_state_dict(_weights.load_state_dict(f"{prefix}_{self._file_stem}_trial0.pth",
                                                                   weights_dir))
            self.freeze()

    def _init_frequency_parameters(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def _basis_f64(self) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _pixel_basis(self) -> bool:
        """Whether the block "transform" is the identity (the pixels themselves; the faithful DFT)."""
        return False

    def _register_transforms(self) -> None:
        """Colour matrix, block transform and YCbCr offset as buffers.

        Built here, not on first use, and as buffers: they follow ``.to(device)``, so forward never
        copies a host tensor to the GPU (a blocking copy that synchronises the stream). Each in
        float32 and float64, kept so through dtype casts of the module (:meth:`_apply`): float64
        inputs use the float64 ones. Nothing is saved in the state dict.
        """
        # Everything is built explicitly on the CPU in float64 (also inside `with torch.device("meta")`):
        # these masters are the matrices' only source, see _apply.
        cpu = torch.device("cpu")
        basis = self._basis_f64()  # (B*B, F) on the CPU, applied to each channel's blocks
        transforms = {"block_basis": basis}
        if self.colorspace == "RGB":
            transforms["mix"] = torch.tensor(YCBCR_MATRIX, dtype=torch.float64, device=cpu)
            offset = torch.tensor(YCBCR_OFFSET, dtype=torch.float64, device=cpu)
            # The YCbCr offset is constant over a block, so for the DCT and DFT it moves only the DC
            # coefficient (column 0: every other basis column sums to zero); it is added to those
            # values after the product instead of to every pixel, which costs a full pass.
            # (The faithful DFT's identity "basis" keeps the offset on every pixel.)
            self._offset_dc_only = not self._pixel_basis()
            sums = basis.sum(0)
            transforms["offset"] = offset.view(3, 1) * (sums[:1] if self._offset_dc_only else sums)
        else:
            transforms["mix"] = torch.tensor(LUMA_WEIGHTS, dtype=torch.float64, device=cpu).view(1, 3)  # 3-ch. input
        if self._exact_transform:
            # The same colour product in difference form, mix = mix_diff @ DIFF with DIFF = (R, G - R,
            # B - R): a grey pixel gives exact zeros in DIFF's last two rows, so its chroma comes out
            # exactly 0 in any precision (the direct product leaves rounding noise).
            inverse = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64,
                                   device=cpu)
            mix_diff = transforms["mix"] @ inverse
            transforms["mix_diff"] = torch.where(mix_diff.abs() < 1e-12, 0.0, mix_diff)  # rows that sum to 0
            transforms["diff"] = torch.linalg.inv(inverse)
            # FrozenWatsonDFT's: the 1/B*B of the transform in the colour product (exact: a power of
            # 2), so its backward needs the unnormalised basis
            norm = 1.0 / self.block**2
            transforms["frozen_mix"] = transforms["mix"] * norm
            transforms["frozen_mix_diff"] = transforms["mix_diff"] * norm
            transforms["frozen_norm"] = torch.full((1, 1), norm, dtype=torch.float64, device=cpu)
            transforms["frozen_basis"] = basis * self.block**2
        self._transform_masters = {name: t.contiguous() for name, t in transforms.items()}  # CPU, float64
        # the buffers on the default device, as the parameters (meta inside `with torch.device("meta")`)
        device = torch.get_default_device()
        for name, t in self._transform_masters.items():
            self.register_buffer(f"_{name}_f32", t.to(device, torch.float32), persistent=False)
            self.register_buffer(f"_{name}_f64", t.to(device), persistent=False)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        # A dtype cast of the module (.float(), .half(), .to(torch.float32)) converts every floating
        # buffer, which would round the float64 matrices to float32 (and the float32 ones to 16 bit):
        # keep both precisions (float64-less backends such as MPS keep the converted copy).
        # The buffers are set anew from the CPU masters, on their new device.
        for name, master in self._transform_masters.items():
            for suffix, dtype in (("f32", torch.float32), ("f64", torch.float64)):
                buf = getattr(self, f"_{name}_{suffix}")
                if buf.device.type == "meta" or (buf.device.type == "mps" and dtype == torch.float64):
                    continue
                setattr(self, f"_{name}_{suffix}", master.to(buf.device, dtype))
        return self

    def _buffer(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """A transform buffer in the compute dtype (no copy in the usual float32 and float64 cases)."""
        return getattr(self, f"_{name}_f64" if dtype == torch.float64 else f"_{name}_f32").to(dtype)

    #: coefficients that vanish in exact arithmetic also vanish exactly (see WatsonDFT._exact_transform)
    _exact_transform = False

    def _transform(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """Colour conversion, (shift,) block split and block transform: (N, C_in, H, W) -> (N, C, K, F).

        A 3x3 (YCbCr) or 1x3 (luma) product over the channels, one gather or permute copy into
        per-channel block rows, and one (B*B, F) GEMM on all rows (plus the YCbCr offset on the DC
        column for RGB). Per channel the GEMM has a third of the multiply-adds of one
        (3 B*B, 3 F) product that folds colour and block transform together. With
        ``_exact_transform`` (Watson-DFT) the colour product is in difference form and the GEMM is
        a block FFT. Differentiable through autograd (also twice, and under torch.func).
        """
        n = x.shape[0]
        dtype = x.dtype
        exact = self._exact_transform
        if self._mixes(x):
            flat = x.flatten(2)
            if exact and flat.shape[1] == 3:
                flat = torch.matmul(self._buffer("mix_diff", dtype), torch.matmul(self._buffer("diff", dtype), flat))
            else:
                flat = torch.matmul(self._buffer("mix", dtype), flat)
            x = flat.view(n, self.n_channels, *x.shape[2:])
        rows = _block_rows(x, index, self.block)  # (N, C, K, B*B)
        if self._pixel_basis():
            z = rows
        elif exact:
            z = self._exact_block_transform(rows)
        else:
            z = rows @ self._buffer("block_basis", dtype)
        if self.colorspace == "RGB":
            # A constant does not change the gradient, so it is added in place outside autograd, on
            # a view made there too: a view made with gradients and then changed in place would get
            # a backward that zero-fills and scatters the whole gradient. (z is never the caller's
            # tensor: the colour product above made a new one.)
            with torch.no_grad():
                z[..., :1 if self._offset_dc_only else None] += self._buffer("offset", dtype).unsqueeze(1)
        return z

    def _exact_block_transform(self, rows: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _mixes(self, x: torch.Tensor) -> bool:
        """Whether the transform of ``x`` starts with a colour product (RGB, or LA of 3-channel input)."""
        return x.shape[1] != self.n_channels or self.colorspace == "RGB"

    # -- parameters in their constrained form ---------------------------------------------------
    @property
    def t(self) -> torch.Tensor:
        """Frequency sensitivity thresholds, shape (C, B, B') (C = 3 for RGB, 1 for LA)."""
        return self.t_tild.exp()

    @property
    def w(self) -> torch.Tensor:
        """Contrast masking exponents in (0, 1), shape (C,)."""
        return torch.sigmoid(self.w_logit)

    @property
    def channel_weights(self) -> torch.Tensor:
        """Weights of the Y, Cb, Cr distances (sum to 1), shape (3,); ``[1.]`` for LA."""
        if self.channel_logits is None:
            return torch.ones(1, device=self.alpha.device, dtype=self.alpha.dtype)
        return torch.softmax(self.channel_logits, 0)

    # -- pipeline --------------------------------------------------------------------------------
    def _draw_offset(self, device: torch.device) -> torch.Tensor | None:
        """The paper's training-time random shift: an offset (2,) in [0, max_shift), or None.

        Drawn on the input's device with torch's generator (seedable with ``torch.manual_seed``)
        and used only through index arithmetic, so the GPU never synchronises and
        ``torch.compile`` traces training mode without a graph break.
        """
        if not self.training or self.deterministic or self.max_shift < 2:
            return None
        return torch.randint(0, self.max_shift, (2,), device=device)

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # The random shift is the paper's training-time augmentation: never in eval mode.
        offset = self._draw_offset(input.device)
        # (the index addresses the colour-converted image: n_channels, not the input's channels)
        index = None if offset is None else _shift_index((input.shape[0], self.n_channels, *input.shape[2:]),
                                                         offset, self.max_shift // 2, self.block)
        # Everything that depends only on the target (its transform, the masked thresholds) needs
        # no graph when neither the target nor the parameters need gradients: the usual case of a
        # frozen metric used as a training loss. This halves the work autograd has to do. Under
        # torch.func transforms (grad, vmap) the hand-written autograd.Functions do not apply
        # (they have no vmap rule): those take the plain autograd path, which every transform supports.
        fast = (self.fast_backward and not target.requires_grad and not hand_written_autograd_refused(input, target)
                and not any(p.requires_grad for p in self.parameters()))
        # a frozen metric in eager code: the whole distance in one Function with few fresh buffers
        # (under torch.compile the form below, whose Functions cover the pooling only: the compiler
        # fuses and allocates the transforms by itself)
        dist = None
        if fast and not torch.compiler.is_compiling():
            dist = self._frozen_distances(input, target, index)
        if dist is None:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not fast):
                ref = self._reference(self._transform(target, index), fast)
            dist = self._compare(self._transform(input, index), ref)  # (N, C)
        if self.channel_logits is None:  # LA: one channel, weight 1
            return dist[:, 0]
        return (dist * torch.softmax(self.channel_logits.to(dist.dtype), 0)).sum(1)

    def _frozen_distances(self, input: torch.Tensor, target: torch.Tensor,
                          index: torch.Tensor | None) -> torch.Tensor | None:
        """(N, C) distances of a frozen metric computed in one autograd.Function (FrozenWatsonDCT,
        FrozenWatsonDFT), or None where there is none for this configuration."""
        return None

    def _gather_index(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor | None:
        """The shift's gather index, or the block padding's as a gather (sizes not multiples of B), or None."""
        h, w = x.shape[2:]
        if index is None and (h % self.block or w % self.block):
            index = _shift_index((x.shape[0], self.n_channels, h, w), torch.zeros(2, dtype=torch.long,
                                                                                   device=x.device), 0, self.block)
        return index

    def _block_plan(self, x: torch.Tensor, index: torch.Tensor | None) -> BlockPlan:
        """The colour product, block transform, offset and gather index of :meth:`_transform` for ``x``."""
        dtype = x.dtype
        rgb = self.colorspace == "RGB"
        return BlockPlan(mix=self._buffer("mix", dtype) if self._mixes(x) else None,
                         basis=self._buffer("block_basis", dtype),
                         offset=self._buffer("offset", dtype) if rgb else None, block=self.block,
                         index=self._gather_index(x, index))

    def _reference(self, z0: torch.Tensor, fast: bool) -> dict[str, torch.Tensor]:  # pragma: no cover
        """Target-side quantities from the target's transform z0 (N, C, K, F).

        ``fast``: for the hand-written backward (no graph): the thresholds' reciprocal ``inv_s``,
        computed in place; otherwise the thresholds ``s``, differentiable.
        """
        raise NotImplementedError

    def _compare(self, z1: torch.Tensor, ref: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        """Distances (N, C) of the input's transform z1 (N, C, K, F) to the target."""
        raise NotImplementedError

    def _thresholds(self, dc: torch.Tensor, amp0_eps: torch.Tensor, fast: bool) -> torch.Tensor:
        """Masked thresholds ``s`` (N, C, K, F) from target DC (N, C, K) and ``|c0| + EPS`` (N, C, K, F).

        ``fast`` (no graph): ``1 / s`` (a fresh tensor), computed in place, overwriting ``amp0_eps``. On the CPU a
        fresh full-size tensor costs several times the arithmetic on it (its pages are faulted in
        anew), so the in-place chain is about twice as fast as the out-of-place one autograd needs.
        """
        if self.faithful:
            # the paper's code: mean over the whole batch (per channel), no floor
            mean_dc = dc.mean(dim=(0, 2), keepdim=True)
            ratio = (dc + EPS) / (mean_dc + EPS)
        else:
            mean_dc = dc.mean(dim=2, keepdim=True)
            ratio = ((dc + EPS) / (mean_dc + EPS)).clamp_min(self.luminance_floor)
        # Parameters are cast before their exp/sigmoid: a float32 module on float64 images then
        # computes exactly as a float64 module (no silent float32 step).
        dtype = dc.dtype
        w = torch.sigmoid(self.w_logit.to(dtype)).view(1, -1, 1, 1)
        # luminance masking t_l = t * lum, lum = ratio**alpha (N, C, K, 1), t (C, 1, F): in logs
        # log t_l = t_tild + log lum, so that contrast masking
        # |c0|**w * t_l**(1 - w) = exp(w log|c0| + (1 - w) (t_tild + log lum))
        # needs no pow and no full-size log t_l (only small broadcast terms)
        log_t = self.t_tild.to(dtype).flatten(1).unsqueeze(1)
        log_lum = (ratio.log() * self.alpha.to(dtype).view(1, -1, 1)).unsqueeze(-1)
        t_l = log_t.exp() * log_lum.exp()
        # smooth maximum of (t_l, masked): masked + gap * sigmoid(gap) = masked + silu(gap), one
        # fused pass for the sigmoid and its product
        if fast:
            masked = amp0_eps.log_().mul_(w).add_(log_t * (1 - w)).add_(log_lum * (1 - w)).exp_()
            return F.silu(t_l.sub_(masked), inplace=True).add_(masked).reciprocal_()
        masked = torch.exp(torch.log(amp0_eps) * w + (log_t + log_lum) * (1 - w))
        return masked + F.silu(t_l - masked)

    def _pool(self, diff: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Minkowski pooling of |diff / s| over blocks and frequencies -> (N, C) (differentiable)."""
        beta = self.beta.to(diff.dtype).view(1, -1, 1, 1)
        d = positive_pow((diff / s).abs() + EPS, beta) + EPS
        return d.sum(dim=(2, 3)).pow(1 / beta.view(1, -1))

    # -- the paper's weight files ----------------------------------------------------------------
    def load_original_state_dict(self, sd: Mapping[str, torch.Tensor]) -> None:
        """Load a state dict in the format of the paper's repository (``*_watson_*_trial0.pth``)."""
        own = self._original_to_own(sd)
        missing = set(self.state_dict()) - set(own)
        if missing:
            raise ValueError(f"weight file lacks entries for {sorted(missing)}")
        self.load_state_dict(own)

    def _original_to_own(self, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        prefixes = _CHANNEL_PREFIXES if self.colorspace == "RGB" else ("",)
        keys = [p + "." if p else "" for p in prefixes]
        try:
            for k in keys:
                if int(sd[k + "blocksize"]) != self.block:
                    raise ValueError(f"weight file has blocksize {int(sd[k + 'blocksize'])}, expected {self.block}")
            out = {
                "alpha": torch.stack([sd[k + "alpha"].reshape(()) for k in keys]),
                "w_logit": torch.stack([sd[k + "w_tild"].reshape(()) for k in keys]),
                "beta": torch.stack([sd[k + "beta"].reshape(()) for k in keys]),
                "t_tild": torch.stack([sd[k + "t_tild"] for k in keys]),
            }
            if hasattr(self, "w_phase_tild"):
                out["w_phase_tild"] = torch.stack([sd[k + "w_phase_tild"] for k in keys])
            if self.colorspace == "RGB":
                out["channel_logits"] = sd["w_tild"].reshape(3)
        except KeyError as e:
            raise ValueError(
                f"weight file does not fit {type(self).__name__}(colorspace={self.colorspace!r}): missing {e}"
            ) from None
        return {k: v.float() for k, v in out.items()}

    def original_state_dict(self) -> dict[str, torch.Tensor]:
        """This loss' parameters in the format of the paper's weight files (for tuned weights)."""
        prefixes = _CHANNEL_PREFIXES if self.colorspace == "RGB" else ("",)
        sd: dict[str, torch.Tensor] = {}
        for i, p in enumerate(prefixes):
            k = p + "." if p else ""
            sd[k + "blocksize"] = torch.tensor(self.block)
            sd[k + "t_tild"] = self.t_tild[i].detach().cpu().clone()
            sd[k + "alpha"] = self.alpha[i].detach().cpu().clone()
            sd[k + "w_tild"] = self.w_logit[i].detach().cpu().clone()
            sd[k + "beta"] = self.beta[i].detach().cpu().clone()
            if hasattr(self, "w_phase_tild"):
                sd[k + "w_phase_tild"] = self.w_phase_tild[i].detach().cpu().clone()
        if self.colorspace == "RGB":
            sd["w_tild"] = self.channel_logits.detach().cpu().clone()
        return sd

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, pretrained={self.pretrained}, deterministic={self.deterministic}, "
            f"faithful={self.faithful}, luminance_floor={self.luminance_floor}, max_shift={self.max_shift}"
        )


class WatsonDCT(_WatsonBase):
    """Watson's perceptual distance on the 8x8 block DCT (Watson-DCT of Czolbe et al., 2020).

    Each image is converted to YCbCr (RGB) or grey (LA), split into 8x8 blocks and transformed
    with the orthonormal DCT-II. Per block and frequency the difference of the coefficients is
    divided by a visibility threshold (frequency sensitivity, luminance masking by the block's DC,
    contrast masking by the target's coefficient) and Minkowski-pooled into one distance per
    channel and image; RGB mixes the Y, Cb, Cr distances with learned softmax weights.

    Args:
        colorspace: ``'RGB'`` (compared in YCbCr) or ``'LA'`` (one grey channel: 1-channel input,
            or 3-channel input converted with the BT.601 luma weights).
        pretrained: load the authors' tuned parameters (``rgb_watson_dct_trial0.pth`` or
            ``gray_watson_dct_trial0.pth``) and freeze them; ``False``: the paper's initial
            values (JPEG table, alpha 0.649, w 0.7, beta 4), trainable.
        reduction: ``'sum'`` (the paper's) | ``'mean'`` | ``'none'`` over the batch.
        deterministic: ``False`` (the paper's training setting): in training mode both images are
            shifted by the same random offset in ``[-max_shift/2, max_shift/2)`` px (replicate
            borders) before the block split, so the block grid does not stay fixed. ``True``, or
            eval mode (``loss.eval()``), never shifts.
        faithful: reproduce the paper's code exactly: luminance masking normalised by the mean DC
            of the whole batch (so an image's value depends on its batch) and no luminance floor
            (a pure black block explodes the distance). Use it for the paper's published numbers.
        luminance_floor: lower bound of the luminance masking ratio ``dc / mean(dc)`` in [0, 1)
            (default ``None``: 0.1). Not allowed with ``faithful=True`` (the original has none).
        max_shift: range of the training-time random shift in px (the paper's 8); 0 or 1: none.
        weights_dir: folder with the tuned weight files (default: genloss' weight lookup).
        value_range: ``(lo, hi)`` of the input images, mapped exactly onto [0, 1].

    Shape:
        - input, target: (N, 3, H, W) for RGB, (N, 1, H, W) or (N, 3, H, W) for LA, with
          H, W >= 8. Sizes that are not multiples of 8 are replicate-padded at the bottom/right
          to the next multiple (the padded pixels repeat the border's error, so every pixel keeps
          a gradient).
        - output: scalar for ``'sum'``/``'mean'``, (N,) for ``'none'``.

    Returns:
        The distance, >= 0 (unbounded above; ~1-10 per 64x64 RGB image for visible distortions
        with the tuned weights). Float32, or float64 for float64 input (16-bit input is computed
        in float32). Identical images do not give exactly 0: the paper's epsilon terms
        (``|d|/s + 1e-10`` and ``+ 1e-10`` per coefficient in the pooling) leave
        ``(K F 1e-10) ** (1/beta)``, e.g. 0.0013 for the tuned RGB model on a 64x64 photograph
        (0.025 untrained) against ~4 for a 1-px shift of the same photograph.

    Raises:
        TypeError: non-tensor or non-float input; a module converted to 16 bit (``.half()``).
        ValueError: wrong rank, channel count or shapes, images smaller than 8x8, NaN/Inf, values
            outside ``value_range``; invalid options (also ``luminance_floor`` with ``faithful``).

    References:
        Czolbe, Krause, Cox, Igel, *A Loss Function for Generative Neural Networks Based on
        Watson's Perceptual Model*, NeurIPS 2020 (code: SteffenCzolbe/PerceptualSimilarity);
        Watson, *DCT quantization matrices visually optimized for individual images*, 1993.

    Example:
        >>> import torch
        >>> from genloss import WatsonDCT
        >>> loss = WatsonDCT(pretrained=False, reduction="none").eval()
        >>> x = torch.rand(2, 3, 20, 16)
        >>> d = loss(x.clamp(0.1, 0.9), x)
        >>> d.shape, bool((d > 0).all())
        (torch.Size([2]), True)
    """

    _init_alpha = 0.649
    _init_w = 0.7
    _init_beta = 4.0

    _file_stem = "watson_dct"

    def _frozen_distances(self, input: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None):
        # (the faithful luminance mean spans the batch: no pieces then)
        return FrozenWatsonDCT.apply(input, target, self.beta.detach().to(input.dtype), self._block_plan(input, index),
                                     functools.partial(self._thresholds, fast=True), not self.faithful)

    def _basis_f64(self) -> torch.Tensor:
        return block_dct_matrix(self.block, torch.float64, torch.device("cpu")).clone()

    def _init_frequency_parameters(self) -> None:
        table = torch.tensor(WATSON_DCT_TABLE).log()
        self.t_tild = nn.Parameter(table.expand(self.n_channels, 8, 8).clone())

    def _reference(self, c0: torch.Tensor, fast: bool) -> dict[str, torch.Tensor]:
        return {"c0": c0, "inv_s" if fast else "s": self._thresholds(c0[..., 0], c0.abs().add_(EPS), fast)}

    def _compare(self, c1: torch.Tensor, ref: dict[str, torch.Tensor]) -> torch.Tensor:
        if "inv_s" in ref:  # frozen metric: hand-written backward
            return WatsonPoolDCT.apply(c1, ref["c0"], ref["inv_s"], self.beta.detach().to(c1.dtype))
        return self._pool(ref["c0"] - c1, ref["s"])


class WatsonDFT(_WatsonBase):
    """Watson's perceptual distance on the 8x8 block real DFT (Watson-DFT of Czolbe et al., 2020).

    The amplitudes of each block's one-sided 2-D DFT (``rfft2 / 64``) go through Watson's masking
    and Minkowski pooling as in :class:`WatsonDCT`; the phases add ``sum w_phase * angle(c0, c1)``
    with learned weights (zero at the four real-valued frequencies, whose phase carries no
    information). By default the angle is computed from the chord of the unit phase vectors,
    which is the paper's ``acos(cos(d) (1 - 1e-7))`` without its float32 cancellation (accurate
    gradients for nearly aligned phases, see :func:`stable_phase_angle`); ``faithful=True`` uses
    the original formula and ``torch.fft``.

    Args:
        colorspace: ``'RGB'`` (compared in YCbCr) or ``'LA'`` (one grey channel: 1-channel input,
            or 3-channel input converted with the BT.601 luma weights).
        pretrained: load the authors' tuned parameters (``rgb_watson_fft_trial0.pth`` or
            ``gray_watson_fft_trial0.pth``) and freeze them; ``False``: the paper's initial
            values (all thresholds 1, alpha 0.1, w 0.2, beta 1, phase weights e^-2), trainable.
        reduction: ``'sum'`` (the paper's) | ``'mean'`` | ``'none'`` over the batch.
        deterministic: ``False`` (the paper's training setting): in training mode both images are
            shifted by the same random offset in ``[-max_shift/2, max_shift/2)`` px (replicate
            borders) before the block split. ``True``, or eval mode, never shifts.
        faithful: reproduce the paper's code exactly: batch-wide luminance normalisation, no
            luminance floor, ``torch.fft`` and the original phase formula.
        luminance_floor: lower bound of the luminance masking ratio in [0, 1) (default ``None``:
            0.1). Not allowed with ``faithful=True``.
        max_shift: range of the training-time random shift in px (the paper's 8); 0 or 1: none.
        weights_dir: folder with the tuned weight files (default: genloss' weight lookup).
        value_range: ``(lo, hi)`` of the input images, mapped exactly onto [0, 1].

    Shape:
        - input, target: (N, 3, H, W) for RGB, (N, 1, H, W) or (N, 3, H, W) for LA, with
          H, W >= 8; sizes that are not multiples of 8 are replicate-padded at the bottom/right.
        - output: scalar for ``'sum'``/``'mean'``, (N,) for ``'none'``.

    Returns:
        The distance, >= 0 (unbounded above; its scale is larger than Watson-DCT's, e.g. ~1700
        for a 1-px shift of a 64x64 RGB photograph with the tuned weights). Float32, or float64
        for float64 input. Identical images do not give exactly 0: the pooling's epsilons leave
        ``(K F 1e-10) ** (1/beta)`` and each phase adds ``acos(1 - 1e-7) = 4.5e-4`` times its
        weight, e.g. 0.011 for the tuned RGB model on a 64x64 photograph (0.14 untrained).
        The gradient of an exactly flat 8x8 input block against a textured target block is huge
        (the phases of its vanishing coefficients: up to ~1e7 per pixel with the tuned weights, as in
        the paper's code); see docs/losses.md, "Flat predictions".

    Raises:
        TypeError: non-tensor or non-float input; a module converted to 16 bit (``.half()``).
        ValueError: wrong rank, channel count or shapes, images smaller than 8x8, NaN/Inf, values
            outside ``value_range``; invalid options (also ``luminance_floor`` with ``faithful``).

    References:
        Czolbe, Krause, Cox, Igel, *A Loss Function for Generative Neural Networks Based on
        Watson's Perceptual Model*, NeurIPS 2020 (code: SteffenCzolbe/PerceptualSimilarity).

    Example:
        >>> import torch
        >>> from genloss import WatsonDFT
        >>> loss = WatsonDFT(pretrained=False, colorspace="LA").eval()
        >>> x = torch.rand(1, 1, 8, 8)
        >>> loss(x.flip(-1), x).shape
        torch.Size([])
    """

    _init_alpha = 0.1
    _init_w = 0.2
    _init_beta = 1.0

    _file_stem = "watson_fft"

    @property
    def _exact_transform(self) -> bool:
        # The phase term takes the angle of every coefficient, also of those that are zero in exact
        # arithmetic (the Cb/Cr channels of a grey picture, the replicated padding of sizes that are
        # not multiples of 8, flat blocks): there the paper's EPS = 1e-10 decides the angle, and the
        # gradient of the angle is ~1/EPS-singular. A colour product and a GEMM leave rounding noise
        # there (~1e-8 in float32, ~1e-16 in float64), whose random angle counted as a phase
        # difference: the float32 distance was 10x (untrained) or 12% (tuned) off the float64 one,
        # and in both precisions the gradient at a flat block was ~1e3 instead of ~3e-3. So the
        # chroma is computed in difference form (exact zeros for grey pixels) and the blocks are
        # transformed with an FFT, whose butterflies give exact zeros for blocks that are constant
        # along a row or a column, as the paper's torch.fft does.
        return not self.faithful

    def _frozen_distances(self, input: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None):
        if self.faithful:  # the original arithmetic: WatsonDFTInput after the plain transforms
            return None
        dtype = input.dtype
        if not self._mixes(input):  # one grey channel: the normalisation alone
            mix, differences = self._buffer("frozen_norm", dtype), None
        else:
            mix = self._buffer("frozen_mix", dtype)
            differences = self._buffer("frozen_mix_diff", dtype) if input.shape[1] == 3 else None
        plan = BlockPlan(mix=mix, basis=self._buffer("frozen_basis", dtype),
                         offset=self._buffer("offset", dtype) if self.colorspace == "RGB" else None,
                         block=self.block, index=self._gather_index(input, index), differences=differences)
        return FrozenWatsonDFT.apply(input, target, self.beta.detach().to(dtype), self._phase_weights(dtype).detach(),
                                     plan, functools.partial(self._thresholds, fast=True), PHASE_K)

    def _phase_weights(self, dtype: torch.dtype) -> torch.Tensor:
        """``w_phase`` as (C, B*(B//2+1)) in ``dtype`` (cast before the exp, see ``_thresholds``)."""
        return self.w_phase_tild.to(dtype).exp().flatten(1) * self._phase_mask.to(dtype)

    def _exact_block_transform(self, rows: torch.Tensor) -> torch.Tensor:
        """(N, C, K, B*B) block rows -> (N, C, K, 2F) ``[real | imag]`` of each block's rfft2 / B*B (an FFT)."""
        # Under torch.func an autograd.Function needs a vmap rule, and Dynamo cannot trace one with a
        # jvp: plain autograd through the FFT there (the compiler does the backward itself)
        if in_functorch_transform(rows) or torch.compiler.is_compiling():
            return block_dft_fft(rows, self.block)
        return BlockDFT.apply(rows, self._buffer("block_basis", rows.dtype), self.block)

    def _pixel_basis(self) -> bool:
        return self.faithful  # the pixels: torch.fft follows in _spectrum, as in the paper's code

    def _basis_f64(self) -> torch.Tensor:
        if self._pixel_basis():
            return torch.eye(self.block**2, dtype=torch.float64, device=torch.device("cpu"))
        # rfft2 of each block, divided by B*B (the paper's normalisation), as [real | imag] columns
        return block_rdft_matrix(self.block, torch.float64, torch.device("cpu")) / self.block**2

    def _init_frequency_parameters(self) -> None:
        k = self.block // 2 + 1
        self.t_tild = nn.Parameter(torch.zeros(self.n_channels, self.block, k))
        self.w_phase_tild = nn.Parameter(torch.full((self.n_channels, self.block, k), -2.0))
        self.register_buffer("_phase_mask", self._phase_mask_values().to(torch.get_default_device()), persistent=False)

    def _phase_mask_values(self) -> torch.Tensor:
        """(B * (B//2+1),) on the CPU: 1, and 0 at the four real-valued frequencies (no phase)."""
        mask = torch.ones(self.block, self.block // 2 + 1, device="cpu")
        half = self.block // 2
        for u, v in ((0, 0), (0, half), (half, 0), (half, half)):
            mask[u, v] = 0.0
        return mask.flatten()

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        # set anew, like the transforms from their masters: to_empty() (deferred initialisation) leaves
        # buffers uninitialised, and this one is not in the state dict to be loaded
        mask = self._phase_mask
        if mask.device.type != "meta":
            self._phase_mask = self._phase_mask_values().to(mask.device, mask.dtype)
        return self

    @property
    def w_phase(self) -> torch.Tensor:
        """Phase weights, shape (C, B, B//2+1), zero at the real-valued frequencies."""
        return self._phase_weights(self.w_phase_tild.dtype).view(self.n_channels, self.block, -1)

    def _spectrum(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary parts (N, C, K, B*(B//2+1)) of each block's rfft2, divided by B*B."""
        if self.faithful:
            # torch.fft on the colour-converted pixels, as the paper: the original phase term
            # acos(cos(d) * (1 - 1e-7)) amplifies float32 rounding near d = 0, so only the same
            # transform reproduces its gradients.
            n, c, k, _ = z.shape
            b = self.block
            spec = torch.view_as_real(torch.fft.rfft2(z.reshape(n, c, k, b, b))) / b**2
            spec = spec.reshape(n, c, k, -1, 2)
            return spec[..., 0], spec[..., 1]
        f = z.shape[-1] // 2  # z = [real | imag] from the one GEMM of _transform
        return z[..., :f], z[..., f:]

    def _reference(self, z0: torch.Tensor, fast: bool) -> dict[str, torch.Tensor]:
        re0, im0 = self._spectrum(z0)
        if fast and not self.faithful:  # no graph, in place: as FrozenWatsonDFT computes it
            amp0, inv_s, u0, v0 = spectrum_reference(re0, im0, functools.partial(self._thresholds, fast=True))
            return {"amp0": amp0, "inv_s": inv_s, "u0": u0, "v0": v0}
        x0 = re0 + EPS
        xx = x0 * x0  # for the amplitude and, in the default mode, the phase's radius
        # The paper adds EPS to real and imaginary part before taking the norm; kept for fidelity.
        amp0 = amplitude(x0, im0 + EPS, xx)
        ref = {"amp0": amp0, "inv_s" if fast else "s": self._thresholds(amp0[..., 0], amp0 + EPS, fast)}
        if self.faithful:
            ref["ph0"] = torch.atan2(im0, x0)
        else:
            ref["u0"], ref["v0"] = _unit(x0, im0, xx)
        return ref

    def _compare(self, z1: torch.Tensor, ref: dict[str, torch.Tensor]) -> torch.Tensor:
        re1, im1 = self._spectrum(z1)
        w_phase = self._phase_weights(re1.dtype)
        if self.faithful and "inv_s" in ref:  # frozen metric: hand-written backward, original ops
            return WatsonDFTInput.apply(re1, im1, ref["amp0"], ref["inv_s"], ref["ph0"],
                                        self.beta.detach().to(re1.dtype), w_phase.detach().to(re1.dtype),
                                        PHASE_K)
        if "inv_s" in ref:  # frozen metric, default mode: hand-written backward
            return WatsonDFTStable.apply(z1, ref["amp0"], ref["inv_s"], ref["u0"], ref["v0"],
                                         self.beta.detach().to(re1.dtype), w_phase.detach().to(re1.dtype), PHASE_K)
        amp1 = amplitude(re1 + EPS, im1 + EPS)
        dist = self._pool(ref["amp0"] - amp1, ref["s"])
        if self.faithful:
            ph1 = torch.atan2(im1, re1 + EPS)
            angle = torch.acos(torch.cos(ref["ph0"] - ph1) * PHASE_K)
        else:
            angle = stable_phase_angle(ref["u0"], ref["v0"], *_unit(re1 + EPS, im1))
        phase = (angle * w_phase.unsqueeze(1).unsqueeze(0)).sum(dim=(2, 3))
        return dist + phase


#: the paper's factor that keeps acos(k cos d) away from +-1
PHASE_K = 1 - EPS * 1e3


def _unit(x: torch.Tensor, y: torch.Tensor, xx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vector of (x, y) (the phase as a point on the unit circle), differentiable; ``xx``: ``x * x``
    if the caller has it (not changed). (:func:`_watson_kernels.spectrum_reference` is the in-place form.)"""
    # a zero coefficient has x = EPS and the unit vector (1, 0); the clamp only matters for x = 0 exactly
    r = amplitude(x, y, xx).clamp_min(1e-30)
    return x / r, y / r


def stable_phase_angle(u0, v0, u1, v1, k: float = PHASE_K) -> torch.Tensor:
    """``acos(k cos(d))`` for the angle ``d`` between unit vectors (u0, v0) and (u1, v1), computed stably.

    The paper evaluates ``acos(cos(phase0 - phase1) * k)`` with ``k = 1 - 1e-7``, a smoothed
    ``|d|``. In float32 ``cos(d)`` rounds to 1 for ``|d| < 3e-4`` and ``1 - (k cos d)**2`` loses all
    digits, so the gradient of every nearly-aligned phase jumps by up to 50% with the last bit of
    its input (the original's gradients differ by ~3e-3 from their float64 values). With
    ``1 - cos d = c**2 / 2`` for the chord ``c = |n0 - n1|`` the same function is
    ``2 asin(sqrt((1 - k)/2 + k c**2 / 4))`` (for d <= pi/2; the mirrored chord |n0 + n1| for
    larger angles), whose arguments stay in [0, 1/sqrt(2)], so values and gradients are accurate.
    No atan2/cos either, which makes it ~3x faster on CPU.
    """
    minus = (u0 - u1) ** 2 + (v0 - v1) ** 2  # 4 sin^2(d/2)
    plus = (u0 + u1) ** 2 + (v0 + v1) ** 2  # 4 cos^2(d/2)
    near = minus <= plus  # d <= pi/2
    chord = torch.where(near, minus, plus)
    half = torch.asin(torch.sqrt((1 - k) / 2 + (k / 4) * chord))
    return torch.where(near, 2 * half, math.pi - 2 * half)


__all__ = ["WatsonDCT", "WatsonDFT", "stable_phase_angle"]
