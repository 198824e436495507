"""The adaptive robust loss of the Watson paper: Barron's NLL on a scaled-YUV, 2-D DCT representation.

The paper (Czolbe et al., NeurIPS 2020) compares its perceptual losses against Barron's adaptive
robust loss (CVPR 2019): the difference image is taken to a volume-preserving scaled YUV colour space,
then to an orthonormal 2-D DCT, and every coefficient ``k`` gets its own shape ``alpha_k`` and scale
``c_k``. The loss of an image is the sum over coefficients of Barron's negative log-likelihood
``rho(x_k, alpha_k, c_k) + log c_k + log Z(alpha_k)`` (see :mod:`genloss.losses.robust`).

Two layouts of that representation (``layout=``):

``'nchw'``
    what the paper describes: YUV mixes the three channels of each pixel, the 2-D DCT runs over
    (H, W) of each YUV channel. Coefficient ``[c, u, v]`` is frequency (u, v) of channel c.

``'original'``
    what the published code computes, bit for bit. Barron's ``AdaptiveImageLossFunction`` expects
    NHWC images, but the paper's wrapper passes NCHW tensors (``image_size`` = (C, H, W)). So
    the "RGB -> YUV" step mixes three *consecutive memory elements* (neighbouring pixels along the
    width of one channel, wrapping across rows and channels) as if they were R, G, B, and the
    "2-D DCT" runs over the (C, H) axes (a 3-point DCT over channels times an H-point DCT over rows)
    separately for every column ``w``. Coefficient ``[k, u, w]`` is channel-frequency k, row-frequency
    u, column w.

The authors' tuned per-coefficient parameters were fitted in the ``'original'`` layout, so they only
mean something there: ``layout=None`` (default) picks ``'original'`` for ``pretrained=True`` (this
reproduces the published numbers) and ``'nchw'`` otherwise.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from ..transforms.color import as_grey
from ..transforms.dct import dct_matrix
from ..weights import load_state_dict
from .base import ImageLoss, grey_channels
from .robust import LogPartitionSpline, affine_sigmoid, affine_softplus, general_loss, partition_spline

LAYOUTS = ("original", "nchw")
#: the only image size the authors' tuned parameters exist for
PRETRAINED_IMAGE_SIZE = (3, 64, 64)
WEIGHT_FILES = {"RGB": "rgb_adaptive_trial0.pth", "LA": "gray_adaptive_trial0.pth"}
#: parameter names in the authors' files (the paper's RobustLoss -> Barron's AdaptiveLossFunction)
_ORIGINAL_PREFIX = ".robust_loss.adaptive_lossfun."

#: RGB -> YUV (rows Y, U, V), the analog BT.601 YUV of ``tf.image.rgb_to_yuv`` that Barron uses
YUV_MATRIX = (
    (0.299, 0.587, 0.114),
    (-0.14714119, -0.28886916, 0.43601035),
    (0.61497538, -0.51496512, -0.10001026),
)


def syuv_matrix(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """The volume-preserving scaled YUV matrix (3, 3): ``YUV_MATRIX / |det YUV_MATRIX|^(1/3)``.

    Its determinant is 1, so the change of variables does not change likelihoods (the scale,
    1.5802278..., is Barron's constant).
    """
    m = torch.tensor(YUV_MATRIX, dtype=torch.float64)
    m = m / m.det().abs() ** (1.0 / 3.0)
    return m.to(dtype=dtype, device=device)


def adaptive_representation(diff: torch.Tensor, layout: str = "nchw") -> torch.Tensor:
    """Scaled YUV + orthonormal DCT coefficients of a difference image, per the module docstring.

    Args:
        diff: (N, 3, H, W) float tensor (a difference of RGB images), any device.
        layout: ``'nchw'`` (YUV over channels, DCT over (H, W)) or ``'original'`` (the published
            code's NHWC-on-NCHW reading: YUV over consecutive memory triples, DCT over (C, H)).

    Returns:
        (N, 3, H, W) coefficients, same dtype and device. Both transforms are orthogonal up to the
        determinant-1 colour matrix, so the map is volume preserving.
    """
    if diff.dim() != 4 or diff.shape[1] != 3:
        raise ValueError(f"adaptive_representation expects (N, 3, H, W), got shape {tuple(diff.shape)}")
    n, c, h, w = diff.shape
    m = syuv_matrix(diff.dtype, diff.device)
    dct_h = dct_matrix(h, diff.dtype, diff.device)
    if layout == "nchw":
        yuv = torch.einsum("oc,nchw->nohw", m, diff)
        return dct_h @ yuv @ dct_matrix(w, diff.dtype, diff.device).T
    if layout == "original":
        # Triples of consecutive elements in (C, H, W) order are treated as (R, G, B) pixels.
        yuv = (diff.reshape(n, -1, 3) @ m.T).reshape(n, c, h, w)
        # DCT over H (rows) for every (n, c, w), then a 3-point DCT over the channel axis.
        return torch.einsum("kc,nchw->nkhw", dct_matrix(c, diff.dtype, diff.device), dct_h @ yuv)
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def _parse_image_size(image_size: object, colorspace: str) -> tuple[int, int, int]:
    try:
        size = tuple(int(s) for s in image_size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"image_size must be a sequence (C, H, W) of ints, got {image_size!r}") from None
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"image_size must be (C, H, W) with positive entries, got {image_size!r}")
    allowed = (1, 3) if colorspace == "LA" else (3,)
    if size[0] not in allowed:
        raise ValueError(
            f"image_size has {size[0]} channels; the Adaptive loss works on 3 channels "
            f"({'greyscale is expanded to 3' if colorspace == 'LA' else 'RGB'}), got {image_size!r}"
        )
    return (3, size[1], size[2])


def convert_original_state_dict(state_dict: dict) -> dict[str, torch.Tensor]:
    """Map the authors' ``*_adaptive_trial0.pth`` files onto :class:`AdaptiveLoss` parameter names.

    The files hold ``.robust_loss.adaptive_lossfun.latent_alpha`` / ``latent_scale`` of shape
    [1, 12288], i.e. the (3, 64, 64) coefficient grid of the ``'original'`` layout, flattened.
    """
    out = {}
    for name in ("latent_alpha", "latent_scale"):
        key = _ORIGINAL_PREFIX + name
        if key not in state_dict:
            raise KeyError(f"{key!r} not in the state dict (keys: {sorted(state_dict)})")
        value = state_dict[key]
        if value.numel() != 3 * 64 * 64:
            raise ValueError(f"{key} has {value.numel()} entries, expected 3*64*64 = 12288")
        out[name] = value.reshape(PRETRAINED_IMAGE_SIZE).float()
    return out


class AdaptiveLoss(ImageLoss):
    """Barron's adaptive robust loss on a scaled-YUV DCT representation (the Watson paper's 'Adaptive').

    ``loss(input, target)`` transforms ``input - target`` with :func:`adaptive_representation` and
    sums ``rho(x_k, alpha_k, c_k) + log c_k + log Z(alpha_k)`` over the 3*H*W coefficients ``k`` of
    each image (so identical images give the constant floor ``sum_k log c_k + log Z(alpha_k)``,
    which can be negative or positive: it is a negative log-likelihood). The parameters are
    ``alpha = affine_sigmoid(latent_alpha, alpha_lo, alpha_hi)`` and
    ``c = affine_softplus(latent_scale, scale_lo, scale_init)``, one per coefficient, with Barron's
    and the paper's defaults; the latents are trainable unless the loss is pretrained.

    Args:
        colorspace: ``'RGB'`` (input (N, 3, H, W)) or ``'LA'`` (greyscale: (N, 1, H, W), or
            (N, 3, H, W) converted with BT.601 luma; then expanded to 3 equal channels, as the
            original does).
        image_size: optional (C, H, W) with C = 3 (1 also accepted for LA). Without it, the size
            (and the parameters, on the input's device) comes from the first call; later calls must
            have the same H x W. Pass it if you build an optimizer before the first call.
        layout: ``'nchw'``, ``'original'`` or ``None`` (``'original'`` if pretrained, else
            ``'nchw'``); see the module docstring for why they differ.
        pretrained: load the authors' parameters tuned on BAPPS 2AFC (``rgb_adaptive_trial0.pth`` /
            ``gray_adaptive_trial0.pth``, frozen); these exist for 3x64x64 only.
        weights_dir: folder holding the weight files (see :mod:`genloss.weights`).
        partition: the ``log Z(alpha)`` spline: ``'genloss'`` (own quadrature, default) or
            ``'barron'`` (his published ``partition_spline.npz``); they agree to ~3e-7.
        reduction: ``'sum'`` | ``'mean'`` | ``'none'`` over the batch.
        alpha_lo, alpha_hi, scale_lo, scale_init: ranges of the parameter maps (within [0, 2] for
            alpha).

    Shapes and devices: input/target (N, C, H, W) float in [0, 1] on the device of the parameters
    (any device if they are not created yet); output a scalar or [N] (``'none'``), float32 for
    16-bit inputs, else the input's dtype.
    """

    def __init__(
        self,
        *,
        colorspace: str = "RGB",
        image_size: Sequence[int] | None = None,
        layout: str | None = None,
        pretrained: bool = True,
        weights_dir: str | os.PathLike | None = None,
        partition: str = "genloss",
        reduction: str = "sum",
        alpha_lo: float = 0.001,
        alpha_hi: float = 1.999,
        scale_lo: float = 1e-5,
        scale_init: float = 1.0,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__(colorspace=colorspace, reduction=reduction, value_range=value_range)
        colorspace = self.colorspace
        if layout is None:
            layout = "original" if pretrained else "nchw"
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS} or None, got {layout!r}")
        if pretrained and layout != "original":
            warnings.warn(
                "the tuned Adaptive parameters were fitted in the 'original' layout; with "
                f"layout={layout!r} each parameter is applied to a different coefficient than it was "
                "tuned for",
                UserWarning,
                stacklevel=2,
            )
        if not 0.0 <= alpha_lo < alpha_hi <= 2.0:
            raise ValueError(f"need 0 <= alpha_lo < alpha_hi <= 2, got {alpha_lo}, {alpha_hi}")
        if not 0.0 < scale_lo < scale_init:
            raise ValueError(f"need 0 < scale_lo < scale_init, got {scale_lo}, {scale_init}")
        if partition not in ("genloss", "barron"):
            raise ValueError(f"partition must be 'genloss' or 'barron', got {partition!r}")
        self.channels = grey_channels(colorspace)
        self.layout = layout
        self.pretrained = pretrained
        self.partition = partition
        self.weights_dir = weights_dir
        self.alpha_lo, self.alpha_hi = alpha_lo, alpha_hi
        self.scale_lo, self.scale_init = scale_lo, scale_init
        self._spline: LogPartitionSpline | None = None

        self.image_size: tuple[int, int, int] | None = None
        self.register_parameter("latent_alpha", None)
        self.register_parameter("latent_scale", None)
        if image_size is not None:
            image_size = _parse_image_size(image_size, colorspace)
        if pretrained:
            if image_size is not None and image_size != PRETRAINED_IMAGE_SIZE:
                raise ValueError(self._pretrained_size_message(f"image_size={tuple(image_size)}"))
            self._materialize(PRETRAINED_IMAGE_SIZE, torch.device("cpu"))
            weights = convert_original_state_dict(load_state_dict(WEIGHT_FILES[colorspace], weights_dir))
            self.load_state_dict(weights)
            # Tuned losses are metrics: frozen (``requires_grad_(True)`` to fine-tune them).
            self.requires_grad_(False)
        elif image_size is not None:
            self._materialize(image_size, torch.device("cpu"))

    # ---------------------------------------------------------------------------------------------
    # parameters
    # ---------------------------------------------------------------------------------------------

    def _materialize(self, image_size: tuple[int, int, int], device: torch.device) -> None:
        # Latents 0 give Barron's initialisation: alpha at the middle of its range, scale = scale_init.
        self.image_size = image_size
        self.latent_alpha = nn.Parameter(torch.zeros(image_size, device=device))
        self.latent_scale = nn.Parameter(torch.zeros(image_size, device=device))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A loss whose parameters do not exist yet takes their shape from the state dict.
        key = prefix + "latent_alpha"
        if self.latent_alpha is None and key in state_dict:
            shape = tuple(state_dict[key].shape)
            if len(shape) != 3 or shape[0] != 3:
                error_msgs.append(f"{key} has shape {shape}, expected (3, H, W)")
                return
            self._materialize(shape, state_dict[key].device)  # type: ignore[arg-type]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _require_parameters(self) -> None:
        if self.latent_alpha is None:
            raise RuntimeError(
                "the Adaptive loss' parameters are created on the first call (or pass image_size=...)"
            )

    def alpha(self) -> torch.Tensor:
        """The per-coefficient shapes, (3, H, W), in (alpha_lo, alpha_hi)."""
        self._require_parameters()
        return affine_sigmoid(self.latent_alpha, self.alpha_lo, self.alpha_hi)

    def scale(self) -> torch.Tensor:
        """The per-coefficient scales, (3, H, W), > scale_lo."""
        self._require_parameters()
        return affine_softplus(self.latent_scale, self.scale_lo, self.scale_init)

    def log_partition_spline(self) -> LogPartitionSpline:
        if self._spline is None:
            # Computed (genloss) or loaded (barron) on first use, then shared by every loss.
            self._spline = partition_spline(self.partition, self.weights_dir)
        return self._spline

    # ---------------------------------------------------------------------------------------------
    # forward
    # ---------------------------------------------------------------------------------------------

    def _pretrained_size_message(self, got: str) -> str:
        return (
            f"the tuned Adaptive weights ({WEIGHT_FILES[self.colorspace]}) are for 3x64x64 images "
            f"(one alpha and scale per DCT coefficient), got {got}; resize the images to 64x64 or use "
            "pretrained=False and train the loss' parameters for your size"
        )

    def _as_three_channels(self, x: torch.Tensor) -> torch.Tensor:
        if self.colorspace == "LA":
            x = as_grey(x)
            return x.expand(x.shape[0], 3, x.shape[2], x.shape[3])
        return x

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = self._as_three_channels(input) - self._as_three_channels(target)
        size = (3, diff.shape[2], diff.shape[3])
        if self.image_size is None:
            with torch.no_grad():
                self._materialize(size, diff.device)
        elif size != self.image_size:
            got = f"input of size {size[1]}x{size[2]}"
            if self.pretrained:
                raise ValueError(self._pretrained_size_message(got))
            raise ValueError(
                f"this Adaptive loss was built for {self.image_size[1]}x{self.image_size[2]} images "
                f"(one parameter per coefficient), got {got}; use one loss per image size"
            )
        coefficients = adaptive_representation(diff, self.layout)
        alpha = self.alpha().to(diff.dtype)
        scale = self.scale().to(diff.dtype)
        # The log(scale) + log Z(alpha) part of the NLL does not depend on the image: add it once.
        floor = (torch.log(scale) + self.log_partition_spline()(alpha)).sum()
        return general_loss(coefficients, alpha, scale).flatten(1).sum(1) + floor

    def extra_repr(self) -> str:
        size = "x".join(map(str, self.image_size)) if self.image_size else "inferred"
        return (
            f"colorspace={self.colorspace!r}, layout={self.layout!r}, image_size={size}, "
            f"pretrained={self.pretrained}, partition={self.partition!r}, reduction={self.reduction!r}"
        )
