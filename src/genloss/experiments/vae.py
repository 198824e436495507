"""VAEs on MNIST and CelebA trained with any genloss loss (Czolbe et al., NeurIPS 2020, section 5).

The paper trains the same VAE with different reconstruction losses and compares reconstructions and
samples. Objective per batch (as the paper's ``train.py``)::

    loss = exp(log_weight) * reconstruction_loss(x_hat, x)  +  KL(q(z|x) || N(0, I))

with the reconstruction loss summed over the batch (``reduction: sum``) and the KL divergence
summed over the batch and latent dimensions. ``log_weight`` is the paper's ``lam`` (the loss'
weight is ``e^lam``); ``log_weight: paper`` takes the published value for the loss and data set
(:data:`PAPER_LOG_WEIGHTS`).

Networks (:class:`MnistVAE`, :class:`CelebAVAE`) follow the paper's: conv encoder with max-pooling,
a fully connected bottleneck (1024 / 2048 units), latent 2 (MNIST) / 256 (CelebA), bilinear
upsampling in the decoder and a sigmoid output in [0, 1].

**Difference from the paper's code.** The paper's CelebA network meant to put batch norm after the
decoder's two upsampling steps, but appended those layers to the encoder's list after the encoder
had been built, so they are not in the network. genloss adds them (``model.decoder_batchnorm:
true``, default); ``false`` gives the published network.

``train(cfg)`` writes checkpoints, CSV/TensorBoard logs and PNG grids of reconstructions and
samples during training; ``test(cfg)`` evaluates a checkpoint on the test split and writes
``metrics.json``, ``reconstructions.png``, ``samples.png`` and ``latent.png`` (a 16x16 sweep of the
latent space: the plane z in [-2, 2]^2 when it is 2-D, else the plane through three test codes).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .common import (
    FrozenLoss,
    apply_smoke,
    build_loss,
    check_config,
    find_checkpoint,
    fit,
    load_module,
    loss_value,
    output_dir,
    save_image_grid,
    section,
    seed_from_config,
    test_device,
    tested_settings,
)

#: the paper's ``lam`` per data set and loss (reconstruction weight = e^lam), from its training scripts
PAPER_LOG_WEIGHTS: dict[str, dict[str, float]] = {
    "mnist": {"Adaptive": 0, "SSIM": 9, "Watson-DFT": 0, "Deeploss-VGG": 9, "Deeploss-Squeeze": 9},
    "celeba": {"SSIM": 13, "Watson-DFT": 0, "Deeploss-VGG": 10, "Deeploss-Squeeze": 9, "Adaptive": 3},
}

DATA_KINDS = ("mnist", "celeba", "digits")
DATA_KEYS = ("kind", "root", "download", "size", "crop", "batch_size", "num_workers", "limit_train", "limit_test",
             "seed")
MODEL_KEYS = ("arch", "latent_dim", "hidden", "base_channels", "decoder_batchnorm")
OPTIM_KEYS = ("lr", "lr_half_life_epochs", "train_loss_params")
IMAGES_KEYS = ("every_n_epochs", "num_samples", "num_reconstructions")
TEST_KEYS = ("checkpoint", "device", "batch_size", "how_many", "seed")


# ------------------------------------------------------------------------------------------------
# networks
# ------------------------------------------------------------------------------------------------
class _GaussianVAE(nn.Module):
    """Shared code: ``encode`` -> (mu, logvar), reparameterise, ``decode``."""

    latent_dim: int

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x).flatten(1)
        h = F.relu(self.fc_in(h))
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc_out(F.relu(self.fc_z(z))))
        return self.decoder(h.view(-1, *self._bottleneck))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` (N, C, H, W) in [0, 1] -> (reconstruction in [0, 1], mu, logvar, z); z = mu + sigma * eps."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"expected images of shape (N, {', '.join(map(str, self.image_shape))}), "
                             f"got {tuple(x.shape)}")
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decode(z), mu, logvar, z

    def _bottleneck_layers(self, flat: int, hidden: int, latent_dim: int) -> None:
        self.fc_in = nn.Linear(flat, hidden)
        self.fc_mu = nn.Linear(hidden, latent_dim)
        self.fc_logvar = nn.Linear(hidden, latent_dim)
        self.fc_z = nn.Linear(latent_dim, hidden)
        self.fc_out = nn.Linear(hidden, flat)


class MnistVAE(_GaussianVAE):
    """The paper's MNIST VAE: 2 conv layers (one 2x max-pool), FC 1024, latent 2, bilinear upsampling decoder.

    Args:
        latent_dim: latent size (the paper: 2).
        image_size: (H, W), even (the paper: 32x32).
        channels: image channels (1).
        hidden: units of the fully connected layers (1024).
        base_channels: channels of the first conv layer (32; the second has twice as many).

    Input (N, C, H, W) in [0, 1]; output the same shape in [0, 1].
    """

    def __init__(self, latent_dim: int = 2, image_size: tuple[int, int] = (32, 32), channels: int = 1,
                 hidden: int = 1024, base_channels: int = 32) -> None:
        super().__init__()
        h, w = image_size
        if h % 2 or w % 2:
            raise ValueError(f"MnistVAE needs an even image size, got {h}x{w}")
        c1, c2 = base_channels, 2 * base_channels
        self.latent_dim, self.image_shape = latent_dim, (channels, h, w)
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, c1, 3, padding=1), nn.LeakyReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.LeakyReLU(),
        )
        self._bottleneck = (c2, h // 2, w // 2)
        self._bottleneck_layers(c2 * (h // 2) * (w // 2), hidden, latent_dim)
        self.decoder = nn.Sequential(
            nn.Conv2d(c2, c2, 3, padding=1), nn.LeakyReLU(),
            nn.Upsample(size=(h, w), mode="bilinear", align_corners=True),  # = the paper's UpsamplingBilinear2d
            nn.Conv2d(c2, c1, 3, padding=1), nn.LeakyReLU(),
            nn.Conv2d(c1, c1, 3, padding=1), nn.LeakyReLU(),
            nn.Conv2d(c1, channels, 3, padding=1), nn.Sigmoid(),
        )


class CelebAVAE(_GaussianVAE):
    """The paper's CelebA VAE: 3 conv layers (two 2x max-pools, batch norm), FC 2048, latent 256.

    Args:
        latent_dim: latent size (the paper: 256).
        image_size: (H, W), multiples of 4 (the paper: 64x64).
        channels: image channels (3).
        hidden: units of the fully connected layers (2048).
        base_channels: channels of the first conv layer (64; then 128, 128).
        decoder_batchnorm: batch norm after the decoder's upsampling steps, as the paper's code
            intended (default) — ``False`` is the network the paper actually trained (see the module doc).

    Input (N, C, H, W) in [0, 1]; output the same shape in [0, 1].
    """

    def __init__(self, latent_dim: int = 256, image_size: tuple[int, int] = (64, 64), channels: int = 3,
                 hidden: int = 2048, base_channels: int = 64, decoder_batchnorm: bool = True) -> None:
        super().__init__()
        h, w = image_size
        if h % 4 or w % 4:
            raise ValueError(f"CelebAVAE needs an image size divisible by 4, got {h}x{w}")
        c1, c2 = base_channels, 2 * base_channels
        self.latent_dim, self.image_shape = latent_dim, (channels, h, w)
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, c1, 3, padding=1), nn.LeakyReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(c1),
            nn.Conv2d(c1, c2, 3, padding=1), nn.LeakyReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(c2),
            nn.Conv2d(c2, c2, 3, padding=1), nn.LeakyReLU(),
        )
        self._bottleneck = (c2, h // 4, w // 4)
        self._bottleneck_layers(c2 * (h // 4) * (w // 4), hidden, latent_dim)

        def norm(ch: int) -> nn.Module:
            return nn.BatchNorm2d(ch) if decoder_batchnorm else nn.Identity()

        self.decoder = nn.Sequential(
            nn.Conv2d(c2, c2, 3, padding=1), nn.LeakyReLU(),
            nn.Upsample(size=(h // 2, w // 2), mode="bilinear", align_corners=True), norm(c2),
            nn.Conv2d(c2, c1, 3, padding=1), nn.LeakyReLU(),
            nn.Upsample(size=(h, w), mode="bilinear", align_corners=True), norm(c1),
            nn.Conv2d(c1, c1, 3, padding=1), nn.LeakyReLU(),
            nn.Conv2d(c1, c1, 3, padding=1), nn.LeakyReLU(),
            nn.Conv2d(c1, channels, 3, padding=1), nn.Sigmoid(),
        )


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, summed over latent dimensions: (N, D) -> (N,)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


# ------------------------------------------------------------------------------------------------
# config -> data, model, loss
# ------------------------------------------------------------------------------------------------
def _data_kind(cfg: dict[str, Any]) -> str:
    kind = section(cfg, "data").get("kind")
    if kind not in DATA_KINDS:
        raise ValueError(f"data.kind must be one of {DATA_KINDS}, got {kind!r}")
    return kind


def image_shape(cfg: dict[str, Any]) -> tuple[int, int, int]:
    """(C, H, W) of the data set: 1 x size x size for digits/MNIST (size 32), 3 x size x size for CelebA (64)."""
    kind = _data_kind(cfg)
    size = int(section(cfg, "data").get("size", 64 if kind == "celeba" else 32))
    return (3 if kind == "celeba" else 1, size, size)


def make_dataset(cfg: dict[str, Any], split: str) -> Dataset:
    """The ``train`` or ``test`` split from the ``data`` section (items: (image, label))."""
    data = section(cfg, "data")
    kind = _data_kind(cfg)
    _, size, _ = image_shape(cfg)
    if kind == "digits":
        from ..data.digits import DigitsDataset

        ds: Dataset = DigitsDataset(split, size=size, seed=int(data.get("seed", 0)))
    else:
        if not data.get("root"):
            raise ValueError(f"data.root must name the {kind} folder (or set data.download: true with a root)")
        if kind == "mnist":
            from ..data.mnist import mnist_dataset

            ds = mnist_dataset(data["root"], split, size=size, download=bool(data.get("download", False)))
        else:
            from ..data.celeba import celeba_dataset

            ds = celeba_dataset(data["root"], split, size=size, crop=data.get("crop", "auto"),
                                download=bool(data.get("download", False)), seed=int(data.get("seed", 0)))
    limit = data.get(f"limit_{split}")
    if limit is not None:
        ds = Subset(ds, range(min(int(limit), len(ds))))
    if len(ds) == 0:
        raise ValueError(f"the {split} split of data.kind={kind} is empty")
    return ds


def reconstruction_weight(loss_cfg: dict[str, Any], data_kind: str) -> float:
    """``exp(loss.log_weight)``; ``log_weight: paper`` (the default) looks up :data:`PAPER_LOG_WEIGHTS`."""
    from ..registry import loss_info

    lw = loss_cfg.get("log_weight", "paper")
    if lw == "paper":
        table = PAPER_LOG_WEIGHTS["celeba" if data_kind == "celeba" else "mnist"]
        name = loss_info(loss_cfg["name"]).name
        if name not in table:
            raise ValueError(f"the paper trained no {data_kind} VAE with {name}; set loss.log_weight "
                             f"(papers' values: {table})")
        lw = table[name]
    try:
        return math.exp(float(lw))
    except (TypeError, ValueError):
        raise ValueError(f"loss.log_weight must be a number or 'paper', got {lw!r}") from None


def make_vae(model_cfg: dict[str, Any], shape: tuple[int, int, int], data_kind: str) -> _GaussianVAE:
    """The network of the ``model`` section: ``arch`` mnist (default for digits/MNIST) or celeba."""
    arch = model_cfg.get("arch", "celeba" if data_kind == "celeba" else "mnist")
    c, h, w = shape
    common = {k: model_cfg[k] for k in ("latent_dim", "hidden", "base_channels") if k in model_cfg}
    if arch == "mnist":
        if "decoder_batchnorm" in model_cfg:
            raise ValueError("model.decoder_batchnorm applies to the celeba network only")
        return MnistVAE(image_size=(h, w), channels=c, **common)
    if arch == "celeba":
        bn = bool(model_cfg.get("decoder_batchnorm", True))
        return CelebAVAE(image_size=(h, w), channels=c, decoder_batchnorm=bn, **common)
    raise ValueError(f"model.arch must be 'mnist' or 'celeba', got {arch!r}")


def validate_config(cfg: dict[str, Any]) -> None:
    """Raise a ``ValueError`` naming the first unknown section or key of a VAE config."""
    check_config(cfg, "VAE", {"data": DATA_KEYS, "model": MODEL_KEYS, "optim": OPTIM_KEYS, "images": IMAGES_KEYS,
                              "test": TEST_KEYS})
    _data_kind(cfg)


# ------------------------------------------------------------------------------------------------
# Lightning module
# ------------------------------------------------------------------------------------------------
def _lightning():
    import lightning

    return lightning


class VAEModule(_lightning().LightningModule):
    """VAE + reconstruction loss. Logs per-image ``{train,val}/{loss,recon,kl}`` (the objective / batch size).

    The loss is part of the module (and its checkpoints) only when its parameters are trained
    (``optim.train_loss_params``); otherwise it is kept outside, so checkpoints hold the VAE alone
    and tuned perceptual metrics are not copied into every checkpoint.
    """

    def __init__(self, model: dict[str, Any], loss: dict[str, Any], optim: dict[str, Any],
                 image_shape: tuple[int, int, int], data_kind: str) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.vae = make_vae(model, tuple(image_shape), data_kind)
        self.recon_weight = reconstruction_weight(loss, data_kind)
        spec = {"reduction": "sum", "colorspace": "RGB" if image_shape[0] == 3 else "LA", **loss}
        criterion = build_loss(spec, image_size=tuple(image_shape), extra_keys=("log_weight",))
        self.train_loss_params = bool(optim.get("train_loss_params", False))
        if self.train_loss_params:
            self.criterion = criterion
        else:
            self._criterion = FrozenLoss(criterion)  # not registered: checkpoints hold the VAE alone

    @property
    def loss_fn(self) -> nn.Module:
        """The reconstruction loss, on the module's device."""
        if self.train_loss_params:
            return self.criterion
        return self._criterion.on(self.device)

    def forward(self, x: torch.Tensor):
        return self.vae(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x = batch[0]
        recon, mu, logvar, _ = self.vae(x)
        rec = loss_value(self.loss_fn(recon, x))
        kl = kl_divergence(mu, logvar).sum()
        loss = self.recon_weight * rec + kl
        n = x.shape[0]
        self.log(f"{stage}/loss", loss / n, prog_bar=True, batch_size=n, sync_dist=stage != "train")
        self.log(f"{stage}/recon", rec / n, batch_size=n, sync_dist=stage != "train")
        self.log(f"{stage}/kl", kl / n, batch_size=n, sync_dist=stage != "train")
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self):
        o = self.hparams.optim
        opt = torch.optim.Adam(self.parameters(), lr=float(o.get("lr", 1e-4)))
        half_life = o.get("lr_half_life_epochs")
        if not half_life:
            return opt
        # the paper: lr = lr0 * 0.5 ** (epoch / half_life), set at the start of every epoch
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5 ** (epoch / float(half_life)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


# ------------------------------------------------------------------------------------------------
# pictures
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def reconstruction_grid(vae: _GaussianVAE, images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """Rows of ``nrow`` originals followed by their reconstructions (decoded means), as a batch."""
    recon = vae.decode(vae.encode(images)[0])
    rows = []
    for i in range(0, images.shape[0], nrow):
        rows += [images[i:i + nrow], recon[i:i + nrow]]
    return torch.cat(rows)


@torch.no_grad()
def latent_sweep(vae: _GaussianVAE, anchors: torch.Tensor | None = None, steps: int = 16) -> torch.Tensor:
    """``steps`` x ``steps`` decoded codes: the square [-2, 2]^2 for a 2-D latent space, else the plane
    ``z0 + a (z1 - z0) + b (z2 - z0)``, a, b in [0, 1], through the codes of three ``anchors`` images."""
    device = next(vae.parameters()).device
    t = torch.linspace(0, 1, steps, device=device)
    b, a = torch.meshgrid(t, t, indexing="ij")
    if vae.latent_dim == 2:
        z = torch.stack([-2 + 4 * a, 2 - 4 * b], dim=-1).reshape(-1, 2)
    else:
        if anchors is None or anchors.shape[0] < 3:
            raise ValueError("a latent sweep in more than 2 dimensions needs 3 anchor images")
        z0, z1, z2 = vae.encode(anchors[:3].to(device))[0]
        z = z0 + a.reshape(-1, 1) * (z1 - z0) + b.reshape(-1, 1) * (z2 - z0)
    return vae.decode(z)


def _image_callback():
    L = _lightning()

    class SaveVAEImages(L.Callback):
        """PNG grids of reconstructions (fixed test images) and samples (fixed codes) while training."""

        def __init__(self, folder: Path, images: torch.Tensor, num_samples: int, every_n_epochs: int) -> None:
            self.folder, self.images, self.every = folder, images, max(1, int(every_n_epochs))
            self.codes = torch.randn(num_samples, 0)  # filled once the latent size is known
            self.num_samples = num_samples
            self.last: dict[str, str] = {}

        def _save(self, trainer, module: VAEModule) -> None:
            if not trainer.is_global_zero:
                return
            vae = module.vae
            was_training = vae.training
            vae.eval()
            device = next(vae.parameters()).device
            if self.codes.shape[1] != vae.latent_dim:
                self.codes = torch.randn(self.num_samples, vae.latent_dim, generator=torch.Generator().manual_seed(0))
            step = trainer.global_step
            self.last["reconstructions"] = str(save_image_grid(
                reconstruction_grid(vae, self.images.to(device)), self.folder / f"reconstructions_step{step:07d}.png"))
            with torch.no_grad():
                samples = vae.decode(self.codes.to(device))
            self.last["samples"] = str(save_image_grid(samples, self.folder / f"samples_step{step:07d}.png"))
            vae.train(was_training)

        def on_train_epoch_end(self, trainer, module) -> None:
            if (trainer.current_epoch + 1) % self.every == 0:
                self._save(trainer, module)

        def on_train_end(self, trainer, module) -> None:
            self._save(trainer, module)

    return SaveVAEImages


# ------------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------------
def _loader(cfg: dict[str, Any], ds: Dataset, shuffle: bool, batch_size: int | None = None) -> DataLoader:
    data = section(cfg, "data")
    bs = int(batch_size or data.get("batch_size", 64 if _data_kind(cfg) == "celeba" else 128))
    workers = int(data.get("num_workers", 0))
    return DataLoader(ds, batch_size=bs, shuffle=shuffle, drop_last=shuffle and len(ds) >= bs, num_workers=workers,
                      persistent_workers=workers > 0)


def _default_out(cfg: dict[str, Any]) -> str:
    return f"runs/vae_{_data_kind(cfg)}"


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    """Train a VAE. Config sections: ``data``, ``model``, ``loss``, ``optim``, ``trainer``, ``images``, ``output``.

    See ``configs/vae_mnist.yaml`` for every key. Returns the :func:`~genloss.experiments.common.fit`
    summary plus ``images`` (paths of the last reconstruction and sample grids).
    """
    cfg = apply_smoke(cfg)
    validate_config(cfg)
    out = output_dir(cfg, _default_out(cfg))
    seed_from_config(cfg)
    kind, shape = _data_kind(cfg), image_shape(cfg)
    module = VAEModule(section(cfg, "model"), section(cfg, "loss"), section(cfg, "optim"), shape, kind)
    train_ds, test_ds = make_dataset(cfg, "train"), make_dataset(cfg, "test")
    img_cfg = section(cfg, "images")
    n_rec = min(int(img_cfg.get("num_reconstructions", 16)), len(test_ds))
    fixed = torch.stack([test_ds[i][0] for i in range(n_rec)])
    images = _image_callback()(out / "images", fixed, int(img_cfg.get("num_samples", 64)),
                               int(img_cfg.get("every_n_epochs", 1)))
    summary = fit(module, cfg, out, _loader(cfg, train_ds, shuffle=True), _loader(cfg, test_ds, shuffle=False),
                  callbacks=[images])
    summary["images"] = dict(images.last)
    return summary


@torch.no_grad()
def test(cfg: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a trained VAE on the test split; write ``test/metrics.json`` and PNG grids.

    Metrics (means per test image): ``recon`` (the training loss, unweighted), ``kl``,
    ``loss`` (the weighted objective), and loss-independent ``mse``, ``l1``, ``psnr`` and ``ssim`` of
    the reconstructions from the posterior means. ``test.how_many`` limits the images,
    ``test.checkpoint`` picks another checkpoint.
    """
    cfg = apply_smoke(cfg)
    validate_config(cfg)
    tcfg = section(cfg, "test")
    out = output_dir(cfg, _default_out(cfg))
    ckpt = find_checkpoint(cfg, out)
    device = test_device(cfg)
    module = load_module(VAEModule, ckpt, map_location=device, settings=tested_settings(cfg)).eval()
    vae, loss_fn = module.vae, module.loss_fn
    from .. import get_loss

    ssim = get_loss("SSIM", colorspace="RGB" if vae.image_shape[0] == 3 else "LA", reduction="none").to(device)
    torch.manual_seed(int(tcfg.get("seed", 0)))
    ds = make_dataset(cfg, "test")
    how_many = int(tcfg.get("how_many", len(ds)))
    sums = dict.fromkeys(("recon", "kl", "loss", "mse", "l1", "ssim"), 0.0)
    count = 0
    for x, _ in _loader(cfg, ds, shuffle=False, batch_size=tcfg.get("batch_size")):
        if count >= how_many:
            break
        x = x[: how_many - count].to(device)
        recon, mu, logvar, _ = vae(x)
        rec, kl = float(loss_value(loss_fn(recon, x))), float(kl_divergence(mu, logvar).sum())
        sums["recon"] += rec
        sums["kl"] += kl
        sums["loss"] += module.recon_weight * rec + kl
        mean_recon = vae.decode(mu)
        sums["mse"] += float((mean_recon - x).pow(2).flatten(1).mean(1).sum())
        sums["l1"] += float((mean_recon - x).abs().flatten(1).mean(1).sum())
        sums["ssim"] += float((1 - ssim(mean_recon, x)).sum())
        count += x.shape[0]
    metrics: dict[str, Any] = {k: v / count for k, v in sums.items()}
    metrics["psnr"] = 10 * math.log10(1.0 / max(metrics["mse"], 1e-12))
    metrics["n"] = count
    metrics["loss_name"] = module.hparams.loss["name"]
    test_dir = out / "test"
    first = torch.stack([ds[i][0] for i in range(min(16, len(ds)))]).to(device)
    codes = torch.randn(64, vae.latent_dim, generator=torch.Generator().manual_seed(0)).to(device)
    paths = {
        "reconstructions": save_image_grid(reconstruction_grid(vae, first), test_dir / "reconstructions.png"),
        "samples": save_image_grid(vae.decode(codes), test_dir / "samples.png"),
    }
    if vae.latent_dim == 2 or len(ds) >= 3:
        paths["latent"] = save_image_grid(latent_sweep(vae, first), test_dir / "latent.png", nrow=16)
    (test_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    line = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    print(f"VAE ({metrics['loss_name']}) on {count} test images: {line}")
    return {"metrics": metrics, "checkpoint": str(ckpt), "metrics_file": str(test_dir / "metrics.json"),
            **{k: str(v) for k, v in paths.items()}}


test.__test__ = False  # not a pytest test
