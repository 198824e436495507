"""Next-frame video prediction trained with any genloss loss, optionally CorrWise-wrapped (Geng et al., CVPR 2022).

A pix2pixHD-style encoder-decoder (:class:`FramePredictor`) maps T context frames to the next
frame. The CorrWise paper trains it on KITTI with L1 and with CorrWise(L1) and reports that the
aligned loss gives sharper predictions. ``train(cfg)`` trains it with the shared Lightning plumbing
of :mod:`genloss.experiments.common` (``trainer:`` section, checkpoints, resume, CSV and TensorBoard
logs, ``loss:`` section with an optional ``corrwise:`` wrapper, ``smoke:`` overrides);
``test(cfg)`` reports L1, MSE, SSIM, PSNR and a deep perceptual distance on the test split and
writes image strips (context | prediction | ground truth).

Data (``data.kind``): ``'frames'`` reads the folder-of-frames layout of
:class:`genloss.data.video.FrameFolderVideo` (KITTI after ``scripts/prepare_kitti.py``);
``'sprites'`` generates :class:`genloss.data.video.MovingSpritesVideo` clips on the fly.

Differences from the paper's generator: the context frames are stacked along the channel axis
and fused by the first 2-D convolution, instead of 3-D convolutions over time in the first layers
(same receptive field over the T = 3 frames, fewer parameters); images are in [0, 1] (the output
is ``(tanh + 1) / 2``) because the genloss losses expect [0, 1]; ``data.flip`` mirrors training
windows only (validation and test frames are never flipped).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

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
from .generator import GeneratorModule, GlobalGenerator

__all__ = ["FramePredictor", "VideoPredictionModule", "make_dataset", "perceptual_metric", "ssim_value", "strip_tiles",
           "test", "train", "validate_config"]

DATA_KEYS = ("kind", "root", "context_length", "frames_skip", "size", "flip", "max_samples", "num_sprites", "lengths",
             "seed", "batch_size", "num_workers")
MODEL_KEYS = ("ngf", "n_down", "n_blocks", "norm")
OPTIM_KEYS = ("lr", "beta1")
TEST_KEYS = ("checkpoint", "device", "how_many", "batch_size", "perceptual", "strips")
DEFAULT_OUTPUT = "runs/video"


# ------------------------------------------------------------------------------------------------
# generator
# ------------------------------------------------------------------------------------------------
class FramePredictor(GlobalGenerator):
    """pix2pixHD-style global generator from T context frames to the next frame.

    :class:`~genloss.experiments.networks.GlobalGenerator` on the ``3 * T`` channels of the
    stacked context frames, with transposed convolutions in the decoder (pix2pixHD's).

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
        super().__init__(in_channels=3 * context_length, ngf=ngf, n_down=n_down, n_blocks=n_blocks, norm=norm,
                         upsample="transpose")
        self.context_length = context_length

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        if context.dim() != 5 or context.shape[1] != 3 or context.shape[2] != self.context_length:
            raise ValueError(f"context must have shape (N, 3, {self.context_length}, H, W), got {tuple(context.shape)}")
        n, _, t, h, w = context.shape
        return super().forward(context.reshape(n, 3 * t, h, w))


# ------------------------------------------------------------------------------------------------
# data, metrics
# ------------------------------------------------------------------------------------------------
def make_dataset(data: dict[str, Any], split: str) -> Dataset:
    """The dataset of a split (``'train'``, ``'val'``, ``'test'``) from the ``data`` section of a config."""
    from ..data.video import FrameFolderVideo, MovingSpritesVideo

    kind = data.get("kind", "frames")
    t = int(data.get("context_length", 3))
    if kind == "sprites":
        lengths = {"train": 256, "val": 32, "test": 32, **(data.get("lengths") or {})}
        offsets = {"train": 0, "val": 1_000_000, "test": 2_000_000}  # disjoint seeds per split
        return MovingSpritesVideo(int(lengths[split]), size=int(data.get("size") or 32), context_length=t,
                                  num_sprites=int(data.get("num_sprites", 2)),
                                  seed=int(data.get("seed", 0)) + offsets[split])
    if kind == "frames":
        if not data.get("root"):
            raise ValueError("data.root must name the folder-of-frames dataset (ROOT/<split>/<sequence>/*.png)")
        return FrameFolderVideo(data["root"], split, t, int(data.get("frames_skip", 1)), data.get("size"),
                                flip=bool(data.get("flip", True)) and split == "train",
                                max_samples=(data.get("max_samples") or {}).get(split))
    raise ValueError(f"data.kind must be 'frames' or 'sprites', got {kind!r}")


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
    from ..registry import make_loss

    candidates = [names] if isinstance(names, str) else list(names or [])
    notes = []
    for name in candidates:
        try:
            metric = make_loss(name, {"reduction": "none", "deterministic": True}).to(device).eval()
        except Exception as e:  # noqa: BLE001 - any failure (no weights offline, unknown name) is reported
            notes.append(f"{name} unavailable ({type(e).__name__}: {str(e).splitlines()[0]})")
            continue
        return metric, name, "; ".join(notes)
    return None, None, "; ".join(notes) or "disabled (test.perceptual is empty)"


def strip_tiles(context: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Tiles of image strips, one strip per sample: T context frames | prediction | ground truth.

    ``context`` (N, 3, T, H, W), ``pred`` and ``target`` (N, 3, H, W) -> (N * (T + 2), 3, H, W), in
    row order for :func:`~genloss.experiments.common.save_image_grid` with ``nrow = T + 2``.
    """
    rows = [torch.cat([c.transpose(0, 1), p[None], g[None]]) for c, p, g in zip(context, pred, target, strict=True)]
    return torch.cat(rows)


# ------------------------------------------------------------------------------------------------
# Lightning module
# ------------------------------------------------------------------------------------------------
class VideoPredictionModule(GeneratorModule):
    """Frame predictor + training loss; logs ``train/loss`` and the validation ``val/l1``, ``val/mse``.

    The loss (and a CorrWise loss' flow network) is not trained and kept out of the checkpoints;
    ``build_criterion=False`` skips it for evaluation, which then needs no loss or flow weights.
    """

    input_key = "context"

    def __init__(self, model: dict[str, Any], loss: dict[str, Any], optim: dict[str, Any],
                 context_length: int = 3, build_criterion: bool = True) -> None:
        super().__init__(FramePredictor(context_length=context_length, **model), loss if build_criterion else None,
                         optim)
        self.save_hyperparameters(ignore=["build_criterion"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        pred = self.generator(batch["context"])
        n = pred.shape[0]
        self.log("val/l1", (pred - batch["target"]).abs().mean(), batch_size=n, prog_bar=True, sync_dist=True)
        self.log("val/mse", (pred - batch["target"]).pow(2).mean(), batch_size=n, sync_dist=True)


# ------------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------------
def validate_config(cfg: dict[str, Any]) -> None:
    """Raise a ``ValueError`` naming the first unknown section or key of a video config."""
    check_config(cfg, "video", {"data": DATA_KEYS, "model": MODEL_KEYS, "optim": OPTIM_KEYS, "test": TEST_KEYS})


def _loader(cfg: dict[str, Any], split: str) -> DataLoader:
    data = section(cfg, "data")
    train = split == "train"
    bs = int(data.get("batch_size", 5)) if split != "test" else int(section(cfg, "test").get("batch_size", 8))
    workers = int(data.get("num_workers", 0))
    return DataLoader(make_dataset(data, split), batch_size=bs, shuffle=train, drop_last=train,
                      num_workers=workers, persistent_workers=workers > 0 and split != "test")


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    """Train the frame predictor. Config sections: ``data``, ``model``, ``loss``, ``optim``, ``trainer``, ``output``.

    See ``configs/video_l1.yaml`` for every key; the ``trainer:`` section and the outputs
    (``checkpoints/last.ckpt``, resume, CSV and TensorBoard logs) are those of every experiment
    (:func:`~genloss.experiments.common.fit`), whose summary is returned.
    """
    cfg = apply_smoke(cfg)
    validate_config(cfg)
    out = output_dir(cfg, DEFAULT_OUTPUT)
    seed_from_config(cfg)
    module = VideoPredictionModule(section(cfg, "model"), section(cfg, "loss"), section(cfg, "optim"),
                                   context_length=int(section(cfg, "data").get("context_length", 3)))
    return fit(module, cfg, out, _loader(cfg, "train"), _loader(cfg, "val"), max_epochs=20)


@torch.no_grad()
def test(cfg: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a trained predictor on the test split: L1, MSE, SSIM, PSNR, perceptual distance, image strips.

    ``test.{checkpoint (default output.dir/checkpoints/last.ckpt), how_many (samples; the paper
    uses 100), batch_size, perceptual (registry names tried in order, e.g. [Deeploss-Squeeze,
    Watson-DFT]; unavailable ones are skipped with a note), strips (number of samples drawn),
    device}``. Writes ``output.dir/test/metrics.json`` and ``strips.png``.
    """
    cfg = apply_smoke(cfg)
    validate_config(cfg)
    tcfg = section(cfg, "test")
    out = output_dir(cfg, DEFAULT_OUTPUT)
    ckpt = find_checkpoint(cfg, out)
    device = test_device(cfg)
    module = load_module(VideoPredictionModule, ckpt, map_location=device, settings=tested_settings(cfg),
                         build_criterion=False).eval()
    metric, metric_name, note = perceptual_metric(tcfg.get("perceptual", ["Deeploss-Squeeze"]), device)
    how_many = int(tcfg.get("how_many", 100))
    n_strips = int(tcfg.get("strips", 4))
    sums = {"l1": 0.0, "mse": 0.0, "ssim": 0.0, "perceptual": 0.0}
    count = 0
    strips: list[torch.Tensor] = []
    for batch in _loader(cfg, "test"):
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
        k = min(n_strips - len(strips), take)
        if k > 0:  # one tile batch (T + 2, 3, H, W) per sample
            strips.extend(strip_tiles(context[:k], pred[:k], target[:k]).cpu().split(context.shape[2] + 2))
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
    strip_path = None
    if strips:
        strip_path = save_image_grid(torch.cat(strips), test_dir / "strips.png",
                                     nrow=module.generator.context_length + 2, border=False)
    (test_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    line = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    print(f"video prediction on {count} test samples: {line}")
    if note:
        print(f"perceptual distance: {note}; used: {metric_name}")
    return {"metrics": metrics, "strips": None if strip_path is None else str(strip_path),
            "metrics_file": str(test_dir / "metrics.json"), "checkpoint": str(ckpt)}


test.__test__ = False  # not a pytest test
