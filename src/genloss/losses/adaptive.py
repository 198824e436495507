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

import math
import operator
import os
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .._validation import warn_caller
from ..transforms.color import as_grey, syuv_matrix
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


def _transform(
    diff: torch.Tensor, layout: str, m: torch.Tensor, dct_first: torch.Tensor, dct_last: torch.Tensor
) -> torch.Tensor:
    """The representation with given matrices: colour ``m`` (3, 3) and the two DCTs of ``layout``.

    'nchw': ``dct_first`` is over H and ``dct_last`` over W; 'original': over H and over the channels.
    """
    n, c, h, w = diff.shape
    if layout == "nchw":
        yuv = torch.einsum("oc,nchw->nohw", m, diff)
        return dct_first @ yuv @ dct_last.T
    if layout == "original":
        # Triples of consecutive elements in (C, H, W) order are treated as (R, G, B) pixels.
        yuv = (diff.reshape(n, -1, 3) @ m.T).reshape(n, c, h, w)
        # DCT over H (rows) for every (n, c, w), then a 3-point DCT over the channel axis.
        return torch.einsum("kc,nchw->nkhw", dct_last, dct_first @ yuv)
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def _transform_matrices(
    layout: str, h: int, w: int, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    last = dct_matrix(w if layout == "nchw" else 3, dtype, device)
    return syuv_matrix(dtype, device), dct_matrix(h, dtype, device), last


def adaptive_representation(diff: torch.Tensor, layout: str = "nchw") -> torch.Tensor:
    """Scaled YUV + orthonormal DCT coefficients of a difference image, per the module docstring.

    Args:
        diff: (N, 3, H, W) float tensor (a difference of RGB images), any device.
        layout: ``'nchw'`` (YUV over channels, DCT over (H, W)) or ``'original'`` (the published
            code's NHWC-on-NCHW reading: YUV over consecutive memory triples, DCT over (C, H)).

    Returns:
        (N, 3, H, W) coefficients, same dtype and device. Both transforms are orthogonal up to the
        determinant-1 colour matrix, so the map is volume preserving.

    Raises:
        ValueError: ``diff`` is not (N, 3, H, W), or an unknown ``layout``.
    """
    if diff.dim() != 4 or diff.shape[1] != 3:
        raise ValueError(f"adaptive_representation expects (N, 3, H, W), got shape {tuple(diff.shape)}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    matrices = _transform_matrices(layout, diff.shape[2], diff.shape[3], diff.dtype, diff.device)
    return _transform(diff, layout, *matrices)


def _parse_image_size(image_size: object, colorspace: str) -> tuple[int, int, int]:
    try:
        # operator.index, not int(): image_size=(3, 63.5, 64) must not silently become (3, 63, 64)
        size = tuple(operator.index(s) for s in image_size)  # type: ignore[union-attr]
    except TypeError:
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
        out[name] = value.reshape(PRETRAINED_IMAGE_SIZE)  # load_state_dict casts to the parameters
    return out


#: buffers that are constants of the computation: kept in float64 whatever ``.to(dtype)`` / ``.half()``
#: does to the module, and cast to the compute dtype in ``forward`` (float64 inputs get float64 knots)
_CONSTANT_BUFFERS = ("log_z_values", "log_z_tangents", "color_matrix", "dct_first", "dct_last")


class AdaptiveLoss(ImageLoss):
    """Barron's adaptive robust loss on a scaled-YUV DCT representation (the Watson paper's 'Adaptive').

    ``loss(input, target)`` transforms ``input - target`` with :func:`adaptive_representation` and
    sums ``rho(x_k, alpha_k, c_k) + log c_k + log Z(alpha_k)`` over the 3*H*W coefficients ``k`` of
    each image (so identical images give the constant floor ``sum_k log c_k + log Z(alpha_k)``,
    which can be negative or positive: it is a negative log-likelihood, and its minimum over the
    input is reached at ``input == target``). The parameters are
    ``alpha = affine_sigmoid(latent_alpha, alpha_lo, alpha_hi)`` and
    ``c = affine_softplus(latent_scale, scale_lo, scale_init)``, one per coefficient, with Barron's
    and the paper's defaults; the latents are trainable unless the loss is pretrained.

    The parameters exist from construction (never created on the first call), so an optimizer built
    right after the loss sees them; that is why a trainable loss needs ``image_size``.

    Args:
        colorspace: ``'RGB'`` (input (N, 3, H, W)) or ``'LA'`` (greyscale: (N, 1, H, W), or
            (N, 3, H, W) converted with BT.601 luma; then expanded to 3 equal channels, as the
            original does).
        image_size: (C, H, W) of the images, C = 3 (1 also accepted for LA): one alpha and one
            scale per coefficient. Required with ``pretrained=False``; with ``pretrained=True`` it
            defaults to, and must be, (3, 64, 64).
        layout: ``'nchw'``, ``'original'`` or ``None`` (``'original'`` if pretrained, else
            ``'nchw'``); see the module docstring for why they differ.
        pretrained: load the authors' parameters tuned on BAPPS 2AFC (``rgb_adaptive_trial0.pth`` /
            ``gray_adaptive_trial0.pth``, frozen); these exist for 3x64x64 only.
        weights_dir: folder holding the weight files (see :mod:`genloss.weights`).
        partition: the ``log Z(alpha)`` spline: ``'genloss'`` (own quadrature, default) or
            ``'barron'`` (his published ``partition_spline.npz``); they agree to ~3e-7. Built (or
            loaded) at construction.
        reduction: ``'sum'`` | ``'mean'`` | ``'none'`` over the batch.
        alpha_lo: lower end of the range of the shapes, ``0 <= alpha_lo < alpha_hi <= 2``.
        alpha_hi: upper end of the range of the shapes, ``0 <= alpha_lo < alpha_hi <= 2``.
        scale_lo: lower bound of the scales, ``0 < scale_lo < scale_init``.
        scale_init: initial value of the scales, ``0 < scale_lo < scale_init``.
        value_range: (lo, hi) of the input images, mapped onto [0, 1].

    Shape:
        input, target: (N, C, H, W) with C = 3 (RGB) or 1 or 3 (LA) and (H, W) of ``image_size``
        (any size >= 1x1; the tuned parameters: 64x64), on the device of the loss.
        output: a scalar, or (N,) for ``reduction='none'``.

    Returns:
        the summed negative log-likelihood, a real number (not bounded below by 0). Its dtype is
        float64 for float64 inputs and float32 otherwise (16-bit and autocast inputs too).

    Raises:
        TypeError: ``pretrained=False`` without ``image_size``; ``image_size`` not a sequence.
        ValueError: bad options (layout, partition, ranges, image_size other than 3x64x64 with the
            tuned parameters); at the call: input of another size than ``image_size``, wrong channel
            count, NaN/Inf or values outside ``value_range``.
        genloss.weights.WeightsUnavailableError: the tuned file (or Barron's spline) is missing.

    References:
        J. T. Barron, "A General and Adaptive Robust Loss Function", CVPR 2019.
        S. Czolbe, O. Krause, I. Cox, C. Igel, "A Loss Function for Generative Neural Networks Based
        on Watson's Perceptual Model", NeurIPS 2020.

    Example:
        >>> import torch
        >>> from genloss import AdaptiveLoss
        >>> loss = AdaptiveLoss(pretrained=False, image_size=(3, 16, 16))
        >>> optimizer = torch.optim.Adam(loss.parameters())  # sees alpha and scale already
        >>> x = torch.rand(2, 3, 16, 16)
        >>> loss(x, x.flip(-1)).shape, loss.alpha().shape
        (torch.Size([]), torch.Size([3, 16, 16]))
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
            warn_caller(
                "the tuned Adaptive parameters were fitted in the 'original' layout; with "
                f"layout={layout!r} each parameter is applied to a different coefficient than it was "
                "tuned for"
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

        size = self._resolve_image_size(image_size, pretrained)
        self.image_size: tuple[int, int, int] = size
        # Latents 0 give Barron's initialisation: alpha at the middle of its range, scale = scale_init.
        self.latent_alpha = nn.Parameter(torch.zeros(size))
        self.latent_scale = nn.Parameter(torch.zeros(size))
        self._register_constants(partition_spline(partition, weights_dir), layout, size)
        self._register_meaning()
        if pretrained:
            weights = convert_original_state_dict(load_state_dict(WEIGHT_FILES[colorspace], weights_dir))
            self.load_state_dict(weights)
            # Tuned losses are metrics: frozen (``requires_grad_(True)`` to fine-tune them).
            self.freeze()

    # ---------------------------------------------------------------------------------------------
    # construction
    # ---------------------------------------------------------------------------------------------

    def _resolve_image_size(self, image_size: Sequence[int] | None, pretrained: bool) -> tuple[int, int, int]:
        if image_size is None:
            if pretrained:
                return PRETRAINED_IMAGE_SIZE
            # Parameters created at the first call would be invisible to an optimizer (or DDP)
            # built before it: their alpha would get gradients but never move. So: no default.
            raise TypeError(
                "AdaptiveLoss(pretrained=False) needs image_size=(C, H, W), the size of the images it "
                "will see (e.g. image_size=(3, 64, 64)): it has one trainable alpha and scale per DCT "
                "coefficient, created at construction so that an optimizer built next includes them"
            )
        size = _parse_image_size(image_size, self.colorspace)
        if pretrained and size != PRETRAINED_IMAGE_SIZE:
            raise ValueError(self._pretrained_size_message(f"image_size={tuple(image_size)}"))
        return size

    def _register_constants(self, spline: LogPartitionSpline, layout: str, size: tuple[int, int, int]) -> None:
        # Everything forward needs is a tensor from here on: no numpy, no lazily built state, so the
        # forward traces under torch.compile(fullgraph=True) and runs under torch.func.
        self._spline = spline
        values, tangents = spline.knot_tensors(torch.float64)
        matrices = _transform_matrices(layout, size[1], size[2], torch.float64)
        # Non-persistent: derived from the options, not part of the loss' learnt state.
        for name, t in zip(_CONSTANT_BUFFERS, (values, tangents, *matrices), strict=True):
            self.register_buffer(name, t, persistent=False)
        self._constants = {name: getattr(self, name) for name in _CONSTANT_BUFFERS}

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> AdaptiveLoss:
        super()._apply(fn, recurse)
        # .half() / .to(float32) would round the spline knots and the transform matrices; keep them
        # float64 on their new device (float64-less backends such as MPS keep the converted copy).
        for name in _CONSTANT_BUFFERS:
            buf = getattr(self, name)
            if buf.dtype != torch.float64 and buf.device.type != "mps":
                setattr(self, name, self._constants[name].to(buf.device))
        meaning = getattr(self, "latent_meaning", None)  # (None while the constructor registers the constants)
        if meaning is not None and meaning.device.type not in ("meta", "mps"):
            self.latent_meaning = self._meaning().to(meaning.device)  # exact again after .half() or to_empty()
        return self

    # ---------------------------------------------------------------------------------------------
    # state dict: what the parameters mean
    # ---------------------------------------------------------------------------------------------

    def _meaning(self) -> torch.Tensor:
        # the options that decide what the latents stand for: the coefficient each one belongs to (layout)
        # and the maps of latents to alpha and scale (their ranges); float64, exact for these values
        return torch.tensor([float(LAYOUTS.index(self.layout)), self.alpha_lo, self.alpha_hi, self.scale_lo,
                             self.scale_init], dtype=torch.float64, device="cpu")

    def _register_meaning(self) -> None:
        # A tensor in the state dict (not extra state: code that detaches, averages or saves every value of a
        # state dict as a tensor keeps working), set anew from the options after every cast or move.
        self.register_buffer("latent_meaning", self._meaning())

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        key = prefix + "latent_meaning"
        if key in state_dict:
            self._check_meaning(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        # state dicts from before (and the converted weight files) carry no meaning: loaded as before, they
        # are not missing anything; the loaded value is this loss' own anyway (checked above)
        if key in missing_keys:
            missing_keys.remove(key)
        self.latent_meaning = self._meaning().to(self.latent_meaning.device)

    def _check_meaning(self, saved: torch.Tensor) -> None:
        """Refuse a state dict whose latents meant other things (another layout or other ranges).

        Raises:
            ValueError: the saving loss had other such options; the message names them and their
                values, to build this loss with.
        """
        names = ("layout", "alpha_lo", "alpha_hi", "scale_lo", "scale_init")
        values = saved.detach().to("cpu", torch.float64).flatten().tolist()
        # own values rounded as the saved ones were (a state dict saved in 16 bit rounds them too)
        own = self._meaning().to(saved.dtype if saved.is_floating_point() else torch.float64).double().tolist()
        if len(values) != len(own):
            raise ValueError(f"latent_meaning of this state dict has {len(values)} values, expected {len(own)}")
        differ = [(n, v, o) for n, v, o in zip(names, values, own, strict=True)
                  if not math.isclose(v, o, rel_tol=1e-6, abs_tol=0.0)]
        if differ:
            def shown(name: str, v: float) -> str:
                return repr(LAYOUTS[int(v)]) if name == "layout" and int(v) in range(len(LAYOUTS)) else f"{v:g}"
            saved_with = ", ".join(f"{n}={shown(n, v)}" for n, v, _ in differ)
            this = ", ".join(f"{n}={shown(n, o)}" for n, _, o in differ)
            raise ValueError(
                f"this AdaptiveLoss state dict was saved with {saved_with}, and this loss has {this}: its "
                "parameters would be applied to other coefficients or mapped to other values; build the "
                f"loss with {saved_with} to load it"
            )

    # ---------------------------------------------------------------------------------------------
    # parameters
    # ---------------------------------------------------------------------------------------------

    def alpha(self) -> torch.Tensor:
        """The per-coefficient shapes, (3, H, W), in (alpha_lo, alpha_hi), dtype of the parameters."""
        return affine_sigmoid(self.latent_alpha, self.alpha_lo, self.alpha_hi)

    def scale(self) -> torch.Tensor:
        """The per-coefficient scales, (3, H, W), > scale_lo, dtype of the parameters."""
        return affine_softplus(self.latent_scale, self.scale_lo, self.scale_init)

    def log_partition_spline(self) -> LogPartitionSpline:
        """The ``log Z(alpha)`` spline of ``partition`` (its knots are this module's buffers)."""
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
        if size != self.image_size:
            got = f"input of size {size[1]}x{size[2]}"
            if self.pretrained:
                raise ValueError(self._pretrained_size_message(got))
            raise ValueError(
                f"this Adaptive loss was built for {self.image_size[1]}x{self.image_size[2]} images "
                f"(one parameter per coefficient), got {got}; use one loss per image size"
            )
        dtype = diff.dtype
        # Computed in the images' dtype (float64 in -> float64 out), whatever the parameters' dtype.
        matrices = (self.color_matrix.to(dtype), self.dct_first.to(dtype), self.dct_last.to(dtype))
        coefficients = _transform(diff, self.layout, *matrices)
        alpha = affine_sigmoid(self.latent_alpha.to(dtype), self.alpha_lo, self.alpha_hi)
        scale = affine_softplus(self.latent_scale.to(dtype), self.scale_lo, self.scale_init)
        log_z = self._spline.evaluate(alpha, self.log_z_values.to(dtype), self.log_z_tangents.to(dtype))
        # The log(scale) + log Z(alpha) part of the NLL does not depend on the image: add it once.
        floor = (torch.log(scale) + log_z).sum()
        return general_loss(coefficients, alpha, scale).flatten(1).sum(1) + floor

    def extra_repr(self) -> str:
        size = "x".join(map(str, self.image_size))
        return (
            f"colorspace={self.colorspace!r}, layout={self.layout!r}, image_size={size}, "
            f"pretrained={self.pretrained}, partition={self.partition!r}, reduction={self.reduction!r}"
        )
