"""Next-frame video prediction trained with any genloss loss, optionally CorrWise-wrapped (Geng et al., CVPR 2022).

A pix2pixHD-style encoder-decoder (:class:`FramePredictor`) maps T context frames to the next
frame. The CorrWise paper trains it on KITTI with L1 and with CorrWise(L1) and reports that the
aligned loss gives sharper predictions. ``train(cfg)`` trains it with Lightning (checkpoints,
CSV and TensorBoard logs); ``test(cfg)`` reports L1, MSE, SSIM and a deep perceptual distance on
the test split and writes image strips (context | prediction | ground truth).

Data (``data.kind``): ``'frames'`` reads the folder-of-frames layout of
:class:`genloss.data.video.FrameFolderVideo` (KITTI after ``scripts/prepare_kitti.py``);
``'sprites'`` generates :class:`genloss.data.video.MovingSpritesVideo` clips on the fly.

Differences from the paper's generator: the context frames are stacked along the channel axis
and fused by the first 2-D convolution, instead of 3-D convolutions over time in the first layers
(same receptive field over the T = 3 frames, fewer parameters); images are in [0, 1] (the output
is ``(tanh + 1) / 2``) because the genloss losses expect [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

# ------------------------------------------------------------------------------------------------
# generator
# ------------------------------------------------------------------------------------------------


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'instance' or 'none', got {kind!r}")


class _ResBlock(nn.Module):
    def __init__(self, ch: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(norm, ch), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(norm, ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FramePredictor(nn.Module):
    """pix2pixHD-style global generator from T context frames to the next frame.

    7x7 stem -> ``n_down`` stride-2 convolutions -> ``n_blocks`` residual blocks -> ``n_down``
    transposed convolutions -> 7x7 head -> ``(tanh + 1) / 2``.

    Args:
        context_length: T.
        ngf: channels of the first layer (the paper: 32 on KITTI).
        n_down: downsampling steps (the paper: 3); H and W must be multiples of ``2**n_down``.
        n_blocks: residual blocks at the bottleneck (the paper: 6).
        norm: ``'batch'`` (paper), ``'instance'`` or ``'none'``.

    Input: (N, 3, T, H, W) in [0, 1]. Output: (N, 3, H, W) in [0, 1], same device and dtype.
    """

    def __init__(self, context_length: int = 3, ngf: int = 32, n_down: int = 3, n_blocks: int = 6,
                 norm: str = "batch") -> None:
        super().__init__()
        self.context_length = context_length
        self.n_down = n_down
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3 * context_length, ngf, 7), _norm(norm, ngf),
                                   nn.ReLU(True)]
        ch = ngf
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1), _norm(norm, 2 * ch), nn.ReLU(True)]
            ch *= 2
        layers += [_ResBlock(ch, norm) for _ in range(n_blocks)]
        for _ in range(n_down):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1),
                       _norm(norm, ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, 3, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        if context.dim() != 5 or context.shape[1] != 3 or context.shape[2] != self.context_length:
            raise ValueError(f"context must have shape (N, 3, {self.context_length}, H, W), got {tuple(context.shape)}")
        n, _, t, h, w = context.shape
        m = 2**self.n_down
        if h % m or w % m:
            raise ValueError(f"frame size {h}x{w} must be a multiple of {m} (2**n_down)")
        return (self.net(context.reshape(n, 3 * t, h, w)) + 1) / 2


# ------------------------------------------------------------------------------------------------
# data, loss, metrics
# ------------------------------------------------------------------------------------------------
def make_dataset(data: dict[str, Any], split: str) -> Dataset:
    """The dataset of a split from the ``data`` section of a config."""
    from ..data.video import FrameFolderVideo, MovingSpritesVideo

    kind = data.get("kind", "frames")
    t = int(data.get("context_length", 3))
    if kind == "sprites":
        lengths = {"train": 256, "val": 32, "test": 32, **data.get("lengths", {})}
        offsets = {"train": 0, "val": 1_000_000, "test": 2_000_000}  # disjoint seeds per split
        return MovingSpritesVideo(int(lengths[split]), size=int(data.get("size", 32)), context_length=t,
                                  num_sprites=int(data.get("num_sprites", 2)),
                                  seed=int(data.get("seed", 0)) + offsets[split])
    if kind == "frames":
        if "root" not in data:
            raise ValueError("data.root must name the folder-of-frames dataset (ROOT/<split>/<sequence>/*.png)")
        return FrameFolderVideo(data["root"], split, t, int(data.get("frames_skip", 1)), data.get("size"),
                                flip=bool(data.get("flip", split == "train")),
                                max_samples=data.get("max_samples", {}).get(split))
    raise ValueError(f"data.kind must be 'frames' or 'sprites', got {kind!r}")


def build_loss(spec: dict[str, Any]) -> nn.Module:
    """A training loss from the ``loss`` section: a registry loss, optionally wrapped in CorrWise.

    ``{name: L1, colorspace: RGB, reduction: mean, pretrained: true, kwargs: {...},
    corrwise: {flow: raft, scale_clip: 0.1, ...} | null}``.
    """
    from .. import get_loss

    base = get_loss(spec.get("name", "L1"), colorspace=spec.get("colorspace", "RGB"),
                    pretrained=bool(spec.get("pretrained", True)), reduction=spec.get("reduction", "mean"),
                    deterministic=bool(spec.get("deterministic", False)), **spec.get("kwargs", {}))
    cw = spec.get("corrwise")
    if not cw:
        return base
    from .. import CorrWise

    return CorrWise(base, **cw)


def ssim_value(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM [N] (11x11 Gaussian window), from genloss' ``1 - SSIM`` loss."""
    from .. import get_loss

    return 1 - get_loss("SSIM", reduction="none").to(pred.device)(pred, target)


def perceptual_metric(names: str | list[str] | None, device: torch.device) -> tuple[Callable | None, str | None, str]:
    """The first buildable deep distance of ``names`` for ``test``: ``(metric, name, notes)``.

    The Deeploss metrics need ImageNet backbones that may not be available offline; every name
    that cannot be built is named in ``notes`` with the reason, and the next one is tried (e.g.
    ``[Deeploss-Squeeze, Watson-DFT]``). ``(None, None, notes)`` when none works.
    """
    from .. import get_loss

    candidates = [names] if isinstance(names, str) else list(names or [])
    notes = []
    for name in candidates:
        try:
            metric = get_loss(name, reduction="none", deterministic=True).to(device).eval()
        except Exception as e:  # noqa: BLE001 - any failure (no weights offline, unknown name) is reported
            notes.append(f"{name} unavailable ({type(e).__name__}: {str(e).splitlines()[0]})")
            continue
        return metric, name, "; ".join(notes)
    return None, None, "; ".join(notes) or "disabled (test.perceptual is empty)"


# ------------------------------------------------------------------------------------------------
# Lightning module
# ------------------------------------------------------------------------------------------------
def _lightning():
    import lightning

    return lightning


class VideoPredictionModule(_lightning().LightningModule):
    """Generator + training loss; logs ``train/loss`` and the validation L1/MSE."""

    def __init__(self, model: dict[str, Any], loss: dict[str, Any], optim: dict[str, Any],
                 context_length: int = 3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.generator = FramePredictor(context_length=context_length, **model)
        self.criterion = build_loss(loss)
        # the loss' own parameters (tuned metrics, flow networks) are not trained here
        self.criterion.requires_grad_(False)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.generator(context)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        pred = self.generator(batch["context"])
        out = self.criterion(pred, batch["target"])
        loss = out[0] if isinstance(out, tuple) else out  # CorrWise(return_warped=True) returns a pair
        self.log("train/loss", loss, prog_bar=True, batch_size=pred.shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        pred = self.generator(batch["context"])
        n = pred.shape[0]
        self.log("val/l1", (pred - batch["target"]).abs().mean(), batch_size=n, prog_bar=True)
        self.log("val/mse", (pred - batch["target"]).pow(2).mean(), batch_size=n)

    def configure_optimizers(self):
        o = self.hparams.optim
        return torch.optim.Adam(self.generator.parameters(), lr=float(o.get("lr", 1e-4)),
                                betas=(float(o.get("beta1", 0.9)), 0.999))


# ------------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------------
def _out_dir(cfg: dict[str, Any]) -> Path:
    return Path(cfg.get("output", {}).get("dir", "runs/video"))


def _loader(cfg: dict[str, Any], split: str, shuffle: bool) -> DataLoader:
    data = cfg.get("data", {})
    section, default = ("train", 5) if split == "train" else ("test", 8)
    bs = int(cfg.get(section, {}).get("batch_size", default))
    return DataLoader(make_dataset(data, split), batch_size=bs, shuffle=shuffle,
                      num_workers=int(data.get("num_workers", 0)), drop_last=split == "train")


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    """Train the frame predictor. Config sections: ``data``, ``model``, ``loss``, ``optim``, ``train``, ``output``.

    ``train.{max_epochs, max_steps, batch_size, accelerator, devices, precision, seed,
    val_check_interval, limit_val_batches, resume}``; checkpoints go to ``output.dir/checkpoints``
    (``last.ckpt`` is kept; ``train.resume: true`` continues from it), logs to ``output.dir/logs``.
    """
    L = _lightning()
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    t = cfg.get("train", {})
    L.seed_everything(int(t.get("seed", 0)), workers=True)
    out = _out_dir(cfg)
    data = cfg.get("data", {})
    module = VideoPredictionModule(cfg.get("model", {}), cfg.get("loss", {"name": "L1"}), cfg.get("optim", {}),
                                   context_length=int(data.get("context_length", 3)))
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, save_top_k=0 if not t.get("keep_best") else 1,
                           monitor="val/l1" if t.get("keep_best") else None)
    trainer = L.Trainer(
        max_epochs=int(t.get("max_epochs", 20)),
        max_steps=int(t.get("max_steps", -1)),
        accelerator=t.get("accelerator", "auto"),
        devices=t.get("devices", "auto"),
        precision=t.get("precision", "32-true"),
        default_root_dir=str(out),
        logger=[CSVLogger(str(out / "logs"), name="csv"), TensorBoardLogger(str(out / "logs"), name="tensorboard")],
        callbacks=[ckpt],
        limit_val_batches=t.get("limit_val_batches", 1.0),
        val_check_interval=t.get("val_check_interval", 1.0),
        log_every_n_steps=int(t.get("log_every_n_steps", 10)),
        enable_progress_bar=bool(t.get("progress", True)),
        enable_model_summary=False,
    )
    resume = out / "checkpoints" / "last.ckpt"
    ckpt_path = str(resume) if t.get("resume") and resume.is_file() else None
    trainer.fit(module, _loader(cfg, "train", shuffle=True), _loader(cfg, "val", shuffle=False), ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {"checkpoint": str(resume), "metrics": metrics, "global_step": trainer.global_step}


def _strip(context: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, gap: int = 2) -> torch.Tensor:
    """One row per sample: context frames | prediction | ground truth, white gaps; (3, H', W')."""
    rows = []
    for c, p, g in zip(context, pred, target, strict=True):
        tiles = [*c.unbind(1), p, g]
        white = torch.ones(3, p.shape[1], gap, dtype=p.dtype)
        row = torch.cat([x for tile in tiles for x in (tile, white)][:-1], dim=2)
        rows += [row, torch.ones(3, gap, row.shape[2], dtype=p.dtype)]
    return torch.cat(rows[:-1], dim=1)


def _save_png(img: torch.Tensor, path: Path) -> None:
    from PIL import Image

    arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    Image.fromarray(arr).save(path)


@torch.no_grad()
def test(cfg: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a trained predictor on the test split: L1, MSE, SSIM, perceptual distance, image strips.

    ``test.{checkpoint (default output.dir/checkpoints/last.ckpt), how_many (samples; the paper
    uses 100), batch_size, perceptual (registry names tried in order, e.g. [Deeploss-Squeeze,
    Watson-DFT]; unavailable ones are skipped with a note), strips (number of samples drawn),
    device}``. Writes ``output.dir/test/metrics.json`` and ``strips.png``.
    """
    import json

    tcfg = cfg.get("test", {})
    out = _out_dir(cfg)
    ckpt = Path(tcfg.get("checkpoint") or out / "checkpoints" / "last.ckpt")
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist; train first or set test.checkpoint")
    dev = tcfg.get("device", "auto")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if dev == "auto" else dev)
    module = VideoPredictionModule.load_from_checkpoint(str(ckpt), map_location=device).eval()
    metric, metric_name, note = perceptual_metric(tcfg.get("perceptual", ["Deeploss-Squeeze"]), device)
    how_many = int(tcfg.get("how_many", 100))
    n_strips = int(tcfg.get("strips", 4))
    sums = {"l1": 0.0, "mse": 0.0, "ssim": 0.0, "perceptual": 0.0}
    count = 0
    strips = []
    for batch in _loader(cfg, "test", shuffle=False):
        if count >= how_many:
            break
        take = min(how_many - count, batch["target"].shape[0])
        context = batch["context"][:take].to(device)
        target = batch["target"][:take].to(device)
        pred = module(context).clamp(0, 1)
        sums["l1"] += float((pred - target).abs().flatten(1).mean(1).sum())
        sums["mse"] += float((pred - target).pow(2).flatten(1).mean(1).sum())
        sums["ssim"] += float(ssim_value(pred, target).sum())
        if metric is not None:
            sums["perceptual"] += float(metric(pred, target).sum())
        if len(strips) < n_strips:
            k = n_strips - len(strips)
            strips.extend(zip(context[:k].cpu(), pred[:k].cpu(), target[:k].cpu(), strict=True))
        count += take
    if count == 0:
        raise ValueError("the test split is empty")
    metrics: dict[str, Any] = {k: v / count for k, v in sums.items()}
    metrics["psnr"] = 10 * math.log10(1.0 / max(metrics["mse"], 1e-12))
    metrics["n"] = count
    metrics["perceptual_name"] = metric_name
    if metric is None:
        metrics["perceptual"] = None
    if note:
        metrics["perceptual_note"] = note
    test_dir = out / "test"
    test_dir.mkdir(parents=True, exist_ok=True)
    if strips:
        c, p, g = (torch.stack(x) for x in zip(*strips, strict=True))
        _save_png(_strip(c, p, g), test_dir / "strips.png")
    (test_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    from rich.console import Console

    line = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    Console().print(f"video prediction on {count} test samples: {line}")
    if note:
        Console().print(f"[yellow]perceptual distance[/yellow]: {note}; used: {metric_name}")
    return {"metrics": metrics, "strips": str(test_dir / "strips.png"), "checkpoint": str(ckpt)}


test.__test__ = False  # not a pytest test
