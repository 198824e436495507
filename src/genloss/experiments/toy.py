"""The CorrWise paper's toy experiment: one output for targets that differ by a car's position (Geng et al., 4.1).

A generator sees the same fixed noise for every sample and is trained to reproduce targets in which
a car sprite sits at a random horizontal offset (:class:`~genloss.data.sprites.CarSprites`). With a
pixel-wise loss the best single output is the per-pixel median (L1) or mean (L2) over positions:
a smeared car. With a correspondence-wise loss, ``CorrWise(L1)``, the output is aligned to each
target by optical flow before the comparison, and the best output is a sharp car.

Generators (``model.kind``): ``conv`` (default), a pix2pixHD-style global generator as the paper's
``train_toy.py`` uses (7x7 stem, stride-2 convolutions, residual blocks, nearest-neighbour
upsampling + convolution as the paper's ``--upsample nearest`` default, batch norm), or ``image``, a
directly learned image (the same optimum without a network; fast on a CPU).

``test(cfg)`` measures how sharp the output is (:func:`sharpness_metrics`: gradient energy and
variance of the Laplacian in the band the car moves through, relative to a target with a sharp
car; L1 distance to the nearest sharp target and to the pixel-wise median) and writes
``test/metrics.json`` and ``test/strip.png`` (output | nearest target | pixel-wise median | mean).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..data.sprites import CarSprites
from ..weights import WeightsUnavailableError
from .common import (
    apply_smoke,
    check_config,
    find_checkpoint,
    fit,
    load_module,
    output_dir,
    save_image_grid,
    section,
    seed_from_config,
    test_device,
    tested_settings,
)
from .config import ConfigError
from .generator import GeneratorModule, GlobalGenerator

DATA_KEYS = ("assets_dir", "width", "length", "x_center", "x_range", "y_center", "y_range", "seed", "batch_size",
             "num_workers")
MODEL_KEYS = ("kind", "ngf", "n_down", "n_blocks", "norm", "upsample")
OPTIM_KEYS = ("lr", "beta1")
TEST_KEYS = ("checkpoint", "device")


# ------------------------------------------------------------------------------------------------
# generators
# ------------------------------------------------------------------------------------------------
class ToyGenerator(GlobalGenerator):
    """pix2pixHD-style global generator, (N, 3, H, W) noise -> (N, 3, H, W) image in [0, 1].

    :class:`~genloss.experiments.networks.GlobalGenerator` with 3 input channels and the paper's
    toy defaults.

    Args:
        ngf: channels of the first layer (the paper: 64).
        n_down: stride-2 downsamplings (3); H and W must be multiples of ``2**n_down``.
        n_blocks: residual blocks at the bottleneck (6).
        norm: ``'batch'`` (the paper), ``'instance'`` or ``'none'``.
        upsample: ``'nearest'`` (the paper's default: nearest-neighbour upsampling + 3x3 conv) or
            ``'transpose'`` (transposed convolutions, pix2pixHD's original).
    """

    def __init__(self, ngf: int = 64, n_down: int = 3, n_blocks: int = 6, norm: str = "batch",
                 upsample: str = "nearest") -> None:
        super().__init__(in_channels=3, ngf=ngf, n_down=n_down, n_blocks=n_blocks, norm=norm, upsample=upsample)


class LearnedImage(nn.Module):
    """A directly optimised image: ignores its input and returns ``sigmoid(logits)`` (N copies of (3, H, W))."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(1, 3, height, width))  # mid-grey start

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        if noise.dim() != 4 or tuple(noise.shape[2:]) != tuple(self.logits.shape[2:]):
            raise ValueError(f"input must be (N, 3, {self.logits.shape[2]}, {self.logits.shape[3]}), "
                             f"got {tuple(noise.shape)}")
        return torch.sigmoid(self.logits).expand(noise.shape[0], -1, -1, -1)


def make_generator(model_cfg: dict[str, Any], height: int, width: int) -> nn.Module:
    """The generator of the ``model`` section (``kind: conv`` or ``image``)."""
    kind = model_cfg.get("kind", "conv")
    if kind == "image":  # the conv options stay valid keys (a config switches kind by one override)
        return LearnedImage(height, width)
    if kind == "conv":
        return ToyGenerator(**{k: v for k, v in model_cfg.items() if k != "kind"})
    raise ValueError(f"model.kind must be 'conv' or 'image', got {kind!r}")


# ------------------------------------------------------------------------------------------------
# sharpness
# ------------------------------------------------------------------------------------------------
def car_band(ds: CarSprites) -> tuple[slice, slice]:
    """(rows, columns) of the band that the car covers at some position: where the targets differ."""
    h, w = ds.sprite_rgb.shape[1:]
    top = int(ds.y_center * (ds.height - h))  # y_range is 0 in the paper; widen for y_range > 0
    top_min = int((ds.y_center - ds.y_range) * (ds.height - h))
    top_max = int((ds.y_center + ds.y_range) * (ds.height - h)) if ds.y_range else top
    left_min = int((ds.x_center - ds.x_range) * (ds.width - w))
    left_max = int((ds.x_center + ds.x_range) * (ds.width - w))
    return slice(top_min, top_max + h), slice(left_min, left_max + w)


def gradient_energy(img: torch.Tensor) -> torch.Tensor:
    """Mean squared forward difference (x and y, summed over channels) of (N, C, H, W) -> (N,)."""
    dx = img[..., :, 1:] - img[..., :, :-1]
    dy = img[..., 1:, :] - img[..., :-1, :]
    return dx.pow(2).sum(1).flatten(1).mean(1) + dy.pow(2).sum(1).flatten(1).mean(1)


def laplacian_variance(img: torch.Tensor) -> torch.Tensor:
    """Variance of the 4-neighbour Laplacian of the grey image (valid pixels only): (N, C, H, W) -> (N,)."""
    grey = img.mean(1, keepdim=True)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=img.dtype, device=img.device)
    lap = F.conv2d(grey, kernel.view(1, 1, 3, 3))
    return lap.flatten(1).var(1)


@torch.no_grad()
def sharpness_metrics(output: torch.Tensor, ds: CarSprites) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """How sharp a toy output (3, H, W) in [0, 1] is, and reference images for the picture.

    Every whole-pixel car position in the sampled range is rendered; in the band those positions
    cover (:func:`car_band`):

    * ``gradient_energy_ratio``: gradient energy of the output / that of a target (a sharp car at
      the centre of the range); ~1 = as sharp as the sprite, lower = smeared;
    * ``laplacian_variance_ratio``: the same with the variance of the Laplacian;
    * ``nearest_target_l1``: mean absolute difference to the closest target (``nearest_x`` is its
      position): small when the output *is* one of the targets (the CorrWise optimum);
    * ``median_l1``, ``mean_l1``: distance to the pixel-wise median / mean of all targets (the L1 /
      L2 optima): small for a smeared output.
    """
    _, w = ds.sprite_rgb.shape[1:]
    lo = int((ds.x_center - ds.x_range) * (ds.width - w))
    hi = int((ds.x_center + ds.x_range) * (ds.width - w))
    xs = [left / (ds.width - w) for left in range(lo, hi + 1)]
    # int(x * free) may round a position down by one pixel: nudge by a small fraction of a pixel
    targets = torch.stack([ds.composite(x + 0.25 / (ds.width - w)) for x in xs]).to(output)
    rows, cols = car_band(ds)
    out = output[None, :, rows, cols]
    band = targets[:, :, rows, cols]
    ref = ds.centered().to(output)[None, :, rows, cols]
    dist = (band - out).abs().flatten(1).mean(1)
    nearest = int(dist.argmin())
    median = band.median(dim=0).values[None]
    mean = band.mean(dim=0, keepdim=True)
    metrics = {
        "gradient_energy_ratio": float(gradient_energy(out) / gradient_energy(ref)),
        "laplacian_variance_ratio": float(laplacian_variance(out) / laplacian_variance(ref)),
        "nearest_target_l1": float(dist[nearest]),
        "nearest_x": xs[nearest],
        "median_l1": float((out - median).abs().mean()),
        "mean_l1": float((out - mean).abs().mean()),
    }
    full_median = targets.median(dim=0).values
    pictures = {"output": output, "nearest_target": targets[nearest], "median": full_median, "mean": targets.mean(0)}
    return metrics, pictures


# ------------------------------------------------------------------------------------------------
# Lightning module
# ------------------------------------------------------------------------------------------------
def _lightning():
    import lightning

    return lightning


class ToyModule(GeneratorModule):
    """Generator + (CorrWise) loss on the toy targets; logs ``train/loss``."""

    def __init__(self, model: dict[str, Any], loss: dict[str, Any], optim: dict[str, Any], height: int,
                 width: int, build_criterion: bool = True) -> None:
        # test() builds it without the loss: it needs no loss (nor the flow network's weights)
        super().__init__(make_generator(model, height, width), loss if build_criterion else None, optim)
        self.save_hyperparameters(ignore=["build_criterion"])


def _output_callback():
    L = _lightning()

    class SaveToyOutput(L.Callback):
        """The generator's output as PNG after every epoch and at the end of training."""

        def __init__(self, folder: Path, noise: torch.Tensor) -> None:
            self.folder, self.noise, self.last = folder, noise, None

        def _save(self, trainer, module: ToyModule) -> None:
            if trainer.is_global_zero:
                self.last = str(save_image_grid(_generate(module, self.noise),
                                                self.folder / f"output_step{trainer.global_step:07d}.png"))

        def on_train_epoch_end(self, trainer, module) -> None:
            self._save(trainer, module)

        def on_train_end(self, trainer, module) -> None:
            self._save(trainer, module)

    return SaveToyOutput


@torch.no_grad()
def _generate(module: ToyModule, noise: torch.Tensor) -> torch.Tensor:
    """One output (1, 3, H, W). The generator stays in train mode: every input is the same noise, so
    batch-norm statistics of the batch are the ones it trained with (running averages lag behind)."""
    was = module.generator.training
    module.generator.train()
    out = module.generator(noise[None].to(module.device).expand(2, -1, -1, -1))[:1]
    module.generator.train(was)
    return out


# ------------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------------
def validate_config(cfg: dict[str, Any]) -> None:
    """Raise a ``ValueError`` naming the first unknown section or key of a toy config."""
    check_config(cfg, "toy", {"data": DATA_KEYS, "model": MODEL_KEYS, "optim": OPTIM_KEYS, "test": TEST_KEYS})


def make_dataset(cfg: dict[str, Any]) -> CarSprites:
    """The toy data set from the ``data`` section (``assets_dir`` = folder with bg.png and car.png)."""
    data = {k: v for k, v in section(cfg, "data").items() if k not in ("assets_dir", "batch_size", "num_workers")}
    assets = section(cfg, "data").get("assets_dir")
    if assets is not None and not Path(assets).expanduser().is_dir():
        raise ConfigError(f"data.assets_dir={assets} is not a folder; it names the folder that holds bg.png and "
                          "car.png (null: GENLOSS_WEIGHTS_DIR, the cache or a download)")
    try:
        return CarSprites.from_files(assets, **data)
    except WeightsUnavailableError as e:
        # the resolver says where to put the file; the config key that points to a local folder is the toy's own
        raise WeightsUnavailableError(f"{e}\nOr set data.assets_dir (e.g. the override data.assets_dir=FOLDER) to "
                                      "a folder that holds bg.png and car.png.", e.name) from None


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    """Train the toy generator. Config sections: ``data``, ``model``, ``loss``, ``optim``, ``trainer``, ``output``.

    See ``configs/toy_l1.yaml``. Returns the :func:`~genloss.experiments.common.fit` summary plus
    ``output_image`` (PNG of the last output).
    """
    cfg = apply_smoke(cfg)
    validate_config(cfg)
    out = output_dir(cfg, "runs/toy")
    seed_from_config(cfg)
    ds = make_dataset(cfg)
    module = ToyModule(section(cfg, "model"), section(cfg, "loss"), section(cfg, "optim"), ds.height, ds.width)
    data = section(cfg, "data")
    workers = int(data.get("num_workers", 0))
    loader = DataLoader(ds, batch_size=int(data.get("batch_size", 4)), shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0)
    saver = _output_callback()(out / "images", ds.noise)
    summary = fit(module, cfg, out, loader, callbacks=[saver], max_epochs=20)
    summary["output_image"] = saver.last
    return summary


@torch.no_grad()
def test(cfg: dict[str, Any]) -> dict[str, Any]:
    """Measure the sharpness of a trained generator's output; write ``test/metrics.json`` and ``test/strip.png``.

    The strip stacks, top to bottom: the output, the nearest sharp target, the pixel-wise median of
    the targets (the L1 optimum) and their mean (the L2 optimum).
    """
    cfg = apply_smoke(cfg)
    validate_config(cfg)
    out = output_dir(cfg, "runs/toy")
    ckpt = find_checkpoint(cfg, out)
    module = load_module(ToyModule, ckpt, map_location=test_device(cfg), settings=tested_settings(cfg),
                         build_criterion=False)
    ds = make_dataset(cfg)
    output = _generate(module, ds.noise)[0].float().cpu()
    metrics, pictures = sharpness_metrics(output, ds)
    metrics["loss"] = module.hparams.loss["name"] + (" (CorrWise)" if module.hparams.loss.get("corrwise") else "")
    test_dir = out / "test"
    strip = save_image_grid(torch.stack(list(pictures.values())), test_dir / "strip.png", nrow=1)
    save_image_grid(output[None], test_dir / "output.png")
    (test_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    line = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    print(f"toy ({metrics['loss']}): {line}")
    return {"metrics": metrics, "strip": str(strip), "metrics_file": str(test_dir / "metrics.json"),
            "checkpoint": str(ckpt)}


test.__test__ = False  # not a pytest test
