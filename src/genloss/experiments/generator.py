"""The pix2pixHD-style generator of the CorrWise paper's experiments (toy and video) and its training module.

Both experiments of the paper use the same encoder / residual bottleneck / decoder network and differ
only in what goes in (noise for the toy, stacked context frames for video prediction) and in how
the decoder upsamples. :class:`GlobalGenerator` is that network; ``toy.ToyGenerator`` and
``video.FramePredictor`` are thin front-ends that check and shape their inputs.
:class:`GeneratorModule` trains a generator with a frozen (optionally CorrWise-wrapped) loss.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from .common import FrozenLoss, build_loss, loss_value

NORMS = ("batch", "instance", "none")
UPSAMPLES = ("nearest", "transpose")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """``'batch'`` -> BatchNorm2d, ``'instance'`` -> affine InstanceNorm2d, ``'none'`` -> Identity."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"model.norm must be one of {', '.join(map(repr, NORMS))}, got {kind!r}")


class ResidualBlock(nn.Module):
    """``x + (pad, conv 3x3, norm, ReLU, pad, conv 3x3, norm)(x)`` with reflection padding; (N, C, H, W) -> same."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), norm_layer(norm, channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), norm_layer(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GlobalGenerator(nn.Module):
    """pix2pixHD's global generator, (N, in_channels, H, W) -> (N, 3, H, W) in [0, 1].

    7x7 stem -> ``n_down`` stride-2 convolutions (channels doubling) -> ``n_blocks`` residual
    blocks -> ``n_down`` upsampling steps -> 7x7 head -> ``(tanh + 1) / 2`` (the genloss losses
    expect images in [0, 1]). Output on the input's device and dtype.

    Args:
        in_channels: input channels (3 for noise images, ``3 * T`` for T stacked frames).
        ngf: channels of the first layer.
        n_down: downsampling steps; H and W must be multiples of ``2**n_down``.
        n_blocks: residual blocks at the bottleneck.
        norm: ``'batch'``, ``'instance'`` or ``'none'``.
        upsample: ``'transpose'`` (transposed 3x3 convolutions, pix2pixHD's) or ``'nearest'``
            (nearest-neighbour upsampling + 3x3 convolution, no checkerboard artefacts).
    """

    def __init__(self, in_channels: int = 3, ngf: int = 64, n_down: int = 3, n_blocks: int = 6,
                 norm: str = "batch", upsample: str = "transpose") -> None:
        super().__init__()
        if upsample not in UPSAMPLES:
            raise ValueError(f"model.upsample must be one of {', '.join(map(repr, UPSAMPLES))}, got {upsample!r}")
        self.in_channels = in_channels
        self.n_down = n_down
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7), norm_layer(norm, ngf),
                                   nn.ReLU(True)]
        ch = ngf
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1), norm_layer(norm, 2 * ch), nn.ReLU(True)]
            ch *= 2
        layers += [ResidualBlock(ch, norm) for _ in range(n_blocks)]
        for _ in range(n_down):
            if upsample == "nearest":
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch // 2, 3, padding=1)]
            else:
                layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1)]
            layers += [norm_layer(norm, ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, 3, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = 2**self.n_down
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] % m or x.shape[3] % m:
            raise ValueError(f"input must be (N, {self.in_channels}, H, W) with H and W multiples of {m} "
                             f"(2**n_down), got {tuple(x.shape)}")
        return (self.net(x) + 1) / 2


class GeneratorModule(L.LightningModule):
    """A generator trained with a frozen loss from a ``loss:`` section, by Adam; logs ``train/loss``.

    Batches are dicts holding the generator's input under :attr:`input_key` and the ``'target'``
    image. The loss (and a CorrWise loss' flow network) is not trained and is kept out of the
    checkpoints (:class:`~genloss.experiments.common.FrozenLoss`); ``loss=None`` builds the module
    without it, for evaluation (which then needs no loss or flow weights). Subclasses build the
    generator, call this ``__init__`` and then ``save_hyperparameters``.

    Args:
        generator: the network to train.
        loss: the config's ``loss`` section (reduction defaults to ``'mean'``), or ``None``.
        optim: ``{lr (default 1e-4), beta1 (default 0.9)}`` of Adam (beta2 = 0.999).
    """

    #: the batch key of the generator's input
    input_key = "input"

    def __init__(self, generator: nn.Module, loss: dict[str, Any] | None, optim: dict[str, Any]) -> None:
        super().__init__()
        self.generator = generator
        self._criterion = None if loss is None else FrozenLoss(build_loss({"reduction": "mean", **loss}))
        self._optim = dict(optim)

    @property
    def loss_fn(self) -> nn.Module:
        """The training loss, on the module's device."""
        if self._criterion is None:
            raise RuntimeError(f"this {type(self).__name__} was built without its loss (build_criterion=False)")
        return self._criterion.on(self.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        pred = self.generator(batch[self.input_key])
        loss = loss_value(self.loss_fn(pred, batch["target"]))
        self.log("train/loss", loss, prog_bar=True, batch_size=pred.shape[0])
        return loss

    def configure_optimizers(self):
        o = self._optim
        return torch.optim.Adam(self.generator.parameters(), lr=float(o.get("lr", 1e-4)),
                                betas=(float(o.get("beta1", 0.9)), 0.999))
