"""The BAPPS 2AFC experiment of the Watson paper: evaluate every loss on human judgments, tune metrics.

A 2AFC triplet is a reference ``ref``, two distortions ``p0``/``p1`` and the fraction ``judge`` of
human raters who found ``p1`` closer to ``ref``. A distance ``d`` agrees with the raters by

    score = (1 - judge) if d(p0, ref) < d(p1, ref) else judge        (0.5 on ties)

and the 2AFC score of a category is the mean over its triplets. Humans agree with each other by
``judge**2 + (1 - judge)**2`` on average (the "Human" row of the tables).

A config either evaluates losses (an ``eval:`` section; ``test`` only) or tunes one (a ``tune:``
section; ``train``, then ``test`` evaluates the tuned weights); the two commands write different files.

``test(cfg)`` of an evaluation config evaluates the configured losses per category, prints a table
next to the paper's numbers (:data:`PAPER_2AFC`) and writes ``scores.csv`` / ``scores.json``; of a
tuning config it evaluates the weights ``train`` tuned with it, into the same file names.

``train(cfg)`` tunes the parameters of one loss on the judgments as the paper did (writing the
before/after scores to ``tune_scores.csv`` / ``tune_scores.json``): the distances
``d0, d1`` are mapped to a probability that the raters prefer p1 by a ranking head, trained with
binary cross-entropy against ``judge``:

* ``'weighted-sigmoid'`` (the paper's choice for the Watson and Adaptive losses):
  ``sigmoid(exp(w) * (d0 - d1) / (d0 + d1))`` with one learned ``w``;
* ``'bce-rank'`` (LPIPS' ranking loss): a small MLP on ``(d0, d1, d0 - d1, d0/(d1+eps), d1/(d0+eps))``.

The tuned parameters are written in the format of the authors' weight files (same file names)
together with a ``SHA256SUMS`` manifest, so ``get_loss(name, weights_dir=OUT)`` loads them.

Differences from the paper's code:

* The original Watson wrapper maps its input by ``(x + 1) / 2`` as if images were in [-1, 1],
  but its BAPPS loader yields [0, 1]; the published Watson scores (and tuned weights) therefore
  saw images in [0.5, 1]. Here images are in [0, 1]; ``eval.original_input_range: true`` applies
  the original mapping to the Watson losses to compare with the published numbers.
* The original batches the ranking loss in fixed blocks of 50 (``view(50)``), which fails on a
  last smaller batch; any batch size works here.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data.bapps import BAPPS_CATEGORIES, TwoAFCDataset, download_bapps, make_synthetic_bapps
from .common import build_loss, output_dir, resolve_device

#: the paper's 2AFC scores on the BAPPS validation set (tuned metrics), from the result file its
#: repository ships; keys are the paper's metric names, " [LA]" marks greyscale.
PAPER_2AFC: dict[str, dict[str, float]] = {
    name: dict(zip(("traditional", "cnn", "superres", "deblur", "frameinterp", "color", "mean"), row, strict=True))
    for name, row in {
        "Human": (0.808, 0.843, 0.736, 0.661, 0.686, 0.688, 0.737),
        "Deeploss-squeeze": (0.760, 0.835, 0.709, 0.609, 0.629, 0.651, 0.699),
        "Deeploss-vgg": (0.763, 0.830, 0.703, 0.600, 0.633, 0.634, 0.694),
        "Watson-vgg": (0.760, 0.830, 0.706, 0.600, 0.630, 0.623, 0.691),
        "Deeploss-squeeze [LA]": (0.726, 0.780, 0.701, 0.605, 0.623, 0.537, 0.662),
        "Watson-fft": (0.687, 0.815, 0.667, 0.578, 0.605, 0.604, 0.659),
        "Deeploss-vgg [LA]": (0.730, 0.772, 0.695, 0.600, 0.627, 0.531, 0.659),
        "Watson-vgg [LA]": (0.725, 0.774, 0.699, 0.601, 0.624, 0.532, 0.659),
        "Watson-fft [LA]": (0.639, 0.780, 0.676, 0.592, 0.600, 0.532, 0.636),
        "L1": (0.573, 0.788, 0.648, 0.583, 0.576, 0.627, 0.633),
        "Adaptive": (0.588, 0.796, 0.639, 0.585, 0.541, 0.633, 0.630),
        "L2": (0.554, 0.795, 0.654, 0.590, 0.552, 0.628, 0.629),
        "Watson-dct": (0.627, 0.808, 0.617, 0.561, 0.530, 0.612, 0.626),
        "SSIM": (0.592, 0.788, 0.645, 0.588, 0.567, 0.567, 0.625),
        "SSIM [LA]": (0.571, 0.766, 0.645, 0.589, 0.564, 0.514, 0.608),
        "L1 [LA]": (0.552, 0.761, 0.649, 0.583, 0.572, 0.534, 0.608),
        "Watson-dct [LA]": (0.577, 0.768, 0.629, 0.580, 0.545, 0.534, 0.605),
        "L2 [LA]": (0.532, 0.767, 0.653, 0.590, 0.549, 0.540, 0.605),
        "Adaptive [LA]": (0.532, 0.771, 0.651, 0.590, 0.542, 0.537, 0.604),
    }.items()
}

#: registry name (lower case) -> the paper's metric name
_PAPER_NAMES = {
    "watson-dct": "Watson-dct",
    "watson-dft": "Watson-fft",
    "watson-vgg": "Watson-vgg",
    "deeploss-vgg": "Deeploss-vgg",
    "deeploss-squeeze": "Deeploss-squeeze",
    "l1": "L1",
    "l2": "L2",
    "ssim": "SSIM",
    "adaptive": "Adaptive",
}


def paper_name(loss: str, colorspace: str = "RGB") -> str | None:
    """The paper's name of a registry loss in a colour space (``'Watson-fft [LA]'``), or ``None``."""
    base = _PAPER_NAMES.get(loss.lower())
    if base is None:
        return None
    return base if colorspace == "RGB" else f"{base} [LA]"


# ------------------------------------------------------------------------------------------------
# scores
# ------------------------------------------------------------------------------------------------
def two_afc_scores(d0: torch.Tensor, d1: torch.Tensor, judge: torch.Tensor) -> torch.Tensor:
    """Per-triplet agreement with the raters, shape [N], values in [0, 1].

    Args:
        d0, d1: distances of p0 and p1 to the reference, shape [N].
        judge: fraction of raters preferring p1, shape [N], in [0, 1].
    """
    if not (d0.shape == d1.shape == judge.shape) or d0.dim() != 1:
        raise ValueError(f"d0, d1, judge must have the same shape [N], got {tuple(d0.shape)}, "
                         f"{tuple(d1.shape)}, {tuple(judge.shape)}")
    judge = judge.to(torch.float64)
    return (d0 < d1) * (1 - judge) + (d1 < d0) * judge + (d0 == d1) * 0.5


def human_scores(judge: torch.Tensor) -> torch.Tensor:
    """Expected agreement of one rater with another, ``j**2 + (1 - j)**2``, shape [N]."""
    judge = judge.to(torch.float64)
    return judge**2 + (1 - judge) ** 2


def _progress(iterable, total: int | None, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def _to_original_range(x: torch.Tensor) -> torch.Tensor:
    # What the paper's Watson wrapper does to BAPPS patches: it assumes [-1, 1] but gets [0, 1].
    return (x + 1) / 2


def _triplet(batch: dict[str, Any], device: torch.device | str,
             input_map: Callable[[torch.Tensor], torch.Tensor] | None) -> tuple[torch.Tensor, ...]:
    """``ref, p0, p1`` of a batch on ``device``, each mapped by ``input_map`` when given."""
    images = tuple(batch[k].to(device) for k in ("ref", "p0", "p1"))
    return images if input_map is None else tuple(input_map(x) for x in images)


@torch.no_grad()
def compute_distances(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    loader: DataLoader,
    device: torch.device | str = "cpu",
    input_map: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
    desc: str = "2AFC",
) -> dict[str, Any]:
    """Distances ``d0 = loss(p0, ref)``, ``d1 = loss(p1, ref)`` of every triplet of ``loader``.

    ``loss`` must return one value per image (``reduction='none'``). Returns a dict with ``d0``,
    ``d1``, ``judge`` (float64 CPU tensors [N]) and ``category`` (list of N str).
    """
    d0s, d1s, judges, cats = [], [], [], []
    for batch in _progress(loader, len(loader), desc, progress):
        ref, p0, p1 = _triplet(batch, device, input_map)
        d0 = loss(p0, ref)
        d1 = loss(p1, ref)
        if d0.shape != (ref.shape[0],):
            raise ValueError(f"the loss must return one value per image (reduction='none'), got shape "
                             f"{tuple(d0.shape)} for a batch of {ref.shape[0]}")
        d0s.append(d0.detach().double().cpu())
        d1s.append(d1.detach().double().cpu())
        judges.append(batch["judge"].double().reshape(-1))
        cats.extend(batch["category"])
    return {"d0": torch.cat(d0s), "d1": torch.cat(d1s), "judge": torch.cat(judges), "category": cats}


def scores_by_category(dist: dict[str, Any], human: bool = False) -> dict[str, dict[str, float]]:
    """``{category: {"score", "std", "n"}}`` plus ``"mean"`` (unweighted mean over categories, as the paper)."""
    per = human_scores(dist["judge"]) if human else two_afc_scores(dist["d0"], dist["d1"], dist["judge"])
    out: dict[str, dict[str, float]] = {}
    for cat in dict.fromkeys(dist["category"]):
        mask = torch.tensor([c == cat for c in dist["category"]])
        s = per[mask]
        out[cat.rpartition("/")[2]] = {"score": float(s.mean()), "std": float(s.std(unbiased=False)),
                                       "n": int(s.numel())}
    out["mean"] = {"score": float(sum(v["score"] for v in out.values()) / len(out)), "std": math.nan,
                   "n": int(per.numel())}
    return out


# ------------------------------------------------------------------------------------------------
# ranking heads for tuning
# ------------------------------------------------------------------------------------------------
class WeightedSigmoidRank(nn.Module):
    """``P(raters prefer p1) = sigmoid(exp(w) * (d0 - d1) / (d0 + d1))`` (the paper's Watson tuning).

    The normalised difference makes the head independent of the distance's scale; ``d0 + d1 = 0``
    gives 1/2. Input d0, d1: [N] non-negative distances; output probabilities [N].
    """

    def __init__(self, w_init: float = 1.0) -> None:
        super().__init__()
        self.w_tild = nn.Parameter(torch.tensor(float(w_init)))

    def forward(self, d0: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
        total = d0 + d1
        safe = torch.where(total > 0, total, torch.ones_like(total))
        norm = torch.where(total > 0, (d0 - d1) / safe, torch.zeros_like(total))
        return torch.sigmoid(self.w_tild.exp() * norm)


class BCERankHead(nn.Module):
    """LPIPS' ranking head: an MLP on ``(d0, d1, d0-d1, d0/(d1+eps), d1/(d0+eps))`` -> probability [N]."""

    def __init__(self, hidden: int = 32, eps: float = 0.1) -> None:
        super().__init__()
        self.eps = eps
        self.net = nn.Sequential(
            nn.Linear(5, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1)
        )

    def forward(self, d0: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
        feats = torch.stack([d0, d1, d0 - d1, d0 / (d1 + self.eps), d1 / (d0 + self.eps)], dim=-1)
        return torch.sigmoid(self.net(feats).squeeze(-1))


RANK_HEADS: dict[str, type[nn.Module]] = {"weighted-sigmoid": WeightedSigmoidRank, "bce-rank": BCERankHead}


def make_rank_head(name: str) -> nn.Module:
    """A ranking head by name: ``'weighted-sigmoid'`` or ``'bce-rank'``."""
    try:
        return RANK_HEADS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown ranking head {name!r}; expected one of {sorted(RANK_HEADS)}") from None


#: the tuning checkpoint, under ``output.dir``: written after every epoch, resumed from by ``train``
TUNE_CHECKPOINT = Path("checkpoints") / "tune_last.ckpt"


def lr_factor(epoch: int, epochs: int, epochs_decay: int) -> float:
    """The learning rate of 0-based ``epoch`` as a fraction of ``lr``: 1 for ``epochs`` epochs, then a
    linear decay over ``epochs_decay`` more (the paper's ``update_learning_rate``; never 0 in the run)."""
    return 1.0 if epoch < epochs else 1.0 - (epoch - epochs + 1) / max(1, epochs_decay + 1)


def tune_loss(
    loss: nn.Module,
    dataset: TwoAFCDataset,
    *,
    head: str | nn.Module = "weighted-sigmoid",
    epochs: int = 10,
    epochs_decay: int = 10,
    lr: float = 2e-4,
    beta1: float = 0.5,
    batch_size: int = 50,
    device: torch.device | str = "cpu",
    input_map: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[dict], None] | None = None,
    checkpoint: str | Path | None = None,
    settings: dict[str, Any] | None = None,
    setting_prefix: str = "",
) -> dict[str, Any]:
    """Fit the parameters of ``loss`` (``reduction='none'``) to the judgments of ``dataset``.

    Schedule of the paper: Adam (``beta1`` = 0.5) at ``lr`` for ``epochs`` epochs, then a linear
    decay to 0 over ``epochs_decay`` more epochs (:func:`lr_factor`; the learning rate of each epoch
    is set from it, so a resumed run has the learning rates of an uninterrupted one). Every
    parameter of ``loss`` is unfrozen.

    ``checkpoint``: a file written atomically after every epoch (loss, head, optimizer, data order,
    history, settings); when it exists the tuning continues from it, so a killed run loses at most
    one epoch and then equals an uninterrupted run. A checkpoint that this call cannot continue raises
    a ``CheckpointError`` naming the difference and is left unchanged: another loss or head, other
    ``settings`` (default: ``lr``, ``beta1``, ``batch_size``, ``seed``, ``head``; each named with both
    values), or a schedule under which its finished epochs would have had other learning rates.
    ``epochs`` can be raised while the checkpoint's epochs all ran at the full rate (epochs added
    before the decay); ``setting_prefix`` (e.g. ``'tune.'``) is how the messages name the schedule's
    settings.

    Returns:
        ``{"head": module, "history": [{"epoch", "loss", "accuracy", "lr"}, ...], "resumed_from": path or None}``.
    """
    head_mod = make_rank_head(head) if isinstance(head, str) else head
    if settings is None:
        settings = {"lr": float(lr), "beta1": float(beta1), "batch_size": int(batch_size), "seed": int(seed),
                    "head": head.lower() if isinstance(head, str) else type(head).__name__}
    schedule = {"lr": float(lr), "epochs": int(epochs), "epochs_decay": int(epochs_decay)}
    loss.to(device).train()
    head_mod.to(device).train()
    params = [p for p in loss.parameters()]
    if not params:
        raise ValueError(f"{type(loss).__name__} has no parameters to tune")
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params + list(head_mod.parameters()), lr=lr, betas=(beta1, 0.999))
    total_epochs = epochs + epochs_decay
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    history: list[dict[str, Any]] = []
    start, resumed_from = 0, None
    if checkpoint is not None and Path(checkpoint).is_file():
        state = _read_tune_checkpoint(checkpoint, loss, head_mod, settings, schedule, setting_prefix)
        loss.load_state_dict(state["state_dict"])
        head_mod.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        history, start, resumed_from = list(state["history"]), int(state["epoch"]), str(checkpoint)
        for record in history:
            if log is not None:
                log(record)
    bce = nn.BCELoss()
    for epoch in range(start, total_epochs):
        # Set from the schedule, not carried over from the last epoch: a checkpoint's optimizer holds
        # the rate its own schedule gave the next epoch (0 after its last decay epoch), which a resumed
        # run with more epochs must not inherit.
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(epoch, epochs, epochs_decay)
        total, agree, n = 0.0, 0.0, 0
        for batch in _progress(loader, len(loader), f"tune epoch {epoch + 1}/{total_epochs}", progress):
            ref, p0, p1 = _triplet(batch, device, input_map)
            judge = batch["judge"].to(device=device, dtype=ref.dtype)
            d0, d1 = loss(p0, ref), loss(p1, ref)
            prob = head_mod(d0, d1).clamp(1e-7, 1 - 1e-7)
            value = bce(prob, judge)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            total += value.item() * len(judge)
            agree += float(two_afc_scores(d0.detach().cpu(), d1.detach().cpu(), judge.cpu()).sum())
            n += len(judge)
        record = {"epoch": epoch + 1, "loss": total / n, "accuracy": agree / n, "lr": optimizer.param_groups[0]["lr"]}
        history.append(record)
        if checkpoint is not None:
            from .common import atomic_torch_save

            atomic_torch_save({"state_dict": loss.state_dict(), "head": head_mod.state_dict(),
                               "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                               "epoch": epoch + 1, "history": history, "settings": settings,
                               "schedule": schedule}, checkpoint)
        if log is not None:
            log(record)
    loss.eval()
    head_mod.eval()
    for p in params:
        p.requires_grad_(False)
    return {"head": head_mod, "history": history, "resumed_from": resumed_from}


def _read_tune_checkpoint(path: str | Path, loss: nn.Module, head: nn.Module, settings: dict[str, Any] | None = None,
                         schedule: dict[str, Any] | None = None, setting_prefix: str = "") -> dict[str, Any]:
    """A tuning checkpoint, loaded with ``weights_only=True`` and checked against what would continue it.

    Raises a ``CheckpointError`` (the file is not changed) when it is not a tuning checkpoint, when
    its saved ``settings`` differ from ``settings`` (each difference named with both values; a
    checkpoint of an earlier version has none saved), when ``schedule`` (``lr``, ``epochs``,
    ``epochs_decay``) would have given one of its finished epochs another learning rate or has fewer
    epochs than it finished, or when ``loss`` or ``head`` cannot load its state.
    """
    from .common import CheckpointError, _refuse_other_settings, check_state_dict, read_checkpoint

    state = read_checkpoint(path)
    missing = [k for k in ("head", "optimizer", "generator", "epoch", "history") if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a 2AFC tuning checkpoint (no {', '.join(missing)}); "
                              "delete it or use another output.dir")
    where = (f"use another output.dir, or set {setting_prefix}resume=false to start over in this one (its "
             "checkpoint is then overwritten)") if setting_prefix else "use another checkpoint, or delete this one"
    if settings is not None and isinstance(state.get("settings"), dict):
        _refuse_other_settings(path, state["settings"], settings, f"resuming would continue that run with other "
                               f"settings; {where}")
    if schedule is not None:
        _check_schedule(path, state, schedule, setting_prefix, where)
    check_state_dict(path, state["state_dict"], loss)
    check_state_dict(path, state["head"], head)
    return state


def _check_schedule(path: str | Path, state: dict[str, Any], schedule: dict[str, Any], prefix: str,
                    where: str) -> None:
    """Refuse a schedule that disagrees with the learning rates a checkpoint's finished epochs ran at."""
    from .common import CheckpointError

    lr, epochs, decay = float(schedule["lr"]), int(schedule["epochs"]), int(schedule["epochs_decay"])
    saved = state.get("schedule") if isinstance(state.get("schedule"), dict) else {}
    changed = "; ".join(f"{prefix}{k}: {saved[k]!r} in the checkpoint, {v!r} now"
                        for k, v in schedule.items() if k in saved and saved[k] != v)
    changed = f" ({changed})" if changed else ""
    done = int(state["epoch"])
    if done > epochs + decay:
        raise CheckpointError(f"checkpoint {path} has finished {done} epochs, more than {prefix}epochs + "
                              f"{prefix}epochs_decay = {epochs + decay} now{changed}; {where}")
    for record in state["history"]:
        epoch = int(record["epoch"])
        want = lr * lr_factor(epoch - 1, epochs, decay)
        if not math.isclose(float(record["lr"]), want, rel_tol=1e-9, abs_tol=1e-15):
            raise CheckpointError(
                f"checkpoint {path} ran its epoch {epoch} at lr {float(record['lr']):g}, which this schedule "
                f"would run at lr {want:g}{changed}: resuming would not give the run this schedule describes (a "
                f"resumed run may only add {prefix}epochs before its decay has begun); {where}")


# ------------------------------------------------------------------------------------------------
# tuned weight files
# ------------------------------------------------------------------------------------------------
def tuned_weight_file_name(loss_name: str, colorspace: str) -> str:
    """File name under which a tuned loss is saved: the authors' name where one exists."""
    from ..registry import loss_info

    info = loss_info(loss_name)
    files = info.weight_files.get(colorspace)
    if files:
        return files[0]
    cs = "rgb" if colorspace == "RGB" else "gray"
    return f"{cs}_{info.name.lower()}_tuned.pth"


def tuned_state_dict(loss: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters of a tuned loss in the format its weight files use (the authors' where it exists)."""
    if hasattr(loss, "original_state_dict"):  # Watson-DCT / -DFT
        return loss.original_state_dict()
    from ..losses.adaptive import _ORIGINAL_PREFIX, PRETRAINED_IMAGE_SIZE, AdaptiveLoss

    if isinstance(loss, AdaptiveLoss):
        if loss.layout != "original" or loss.image_size != PRETRAINED_IMAGE_SIZE:
            raise ValueError(
                "the Adaptive loss' weight file format holds 3x64x64 parameters of the 'original' layout; "
                f"this loss has layout={loss.layout!r}, image_size={loss.image_size}"
            )
        return {_ORIGINAL_PREFIX + k: getattr(loss, k).detach().cpu().reshape(1, -1).clone()
                for k in ("latent_alpha", "latent_scale")}
    return {k: v.detach().cpu().clone() for k, v in loss.state_dict().items()}


def save_tuned_weights(loss: nn.Module, loss_name: str, colorspace: str, out_dir: str | Path) -> Path:
    """Save a tuned loss for ``get_loss(loss_name, colorspace=..., weights_dir=out_dir)``.

    Writes the weight file and (re)writes ``out_dir/SHA256SUMS`` with its hash: the manifest is how
    :mod:`genloss.weights` accepts a file that differs from the authors' published one.
    """
    from ..weights import sha256sum

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from .common import atomic_torch_save

    path = out_dir / tuned_weight_file_name(loss_name, colorspace)
    atomic_torch_save(tuned_state_dict(loss), path)
    manifest = out_dir / "SHA256SUMS"
    entries: dict[str, str] = {}
    if manifest.is_file():
        for line in manifest.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                entries[parts[1]] = parts[0]
    entries[path.name] = sha256sum(path)
    tmp = manifest.with_name(f".{manifest.name}.tmp")  # renamed: a reader never sees half a manifest
    tmp.write_text("".join(f"{h}  {n}\n" for n, h in sorted(entries.items())))
    os.replace(tmp, manifest)
    return path


# ------------------------------------------------------------------------------------------------
# config plumbing
# ------------------------------------------------------------------------------------------------
def _data_root(data: dict[str, Any], categories: Sequence[str]) -> Path:
    """The 2afc folder: downloaded, generated (``data.synthetic``) or given (``data.root``)."""
    root = Path(data.get("root", "data/bapps/2afc"))
    synthetic = data.get("synthetic")
    if synthetic:
        if not (root / categories[0]).is_dir():
            per = int(synthetic.get("per_category", 16))
            mixed = [c for c in categories if c.rpartition("/")[2] in set(synthetic.get("mixed", []))]
            make_synthetic_bapps(root, {c: per for c in categories}, size=int(synthetic.get("size", 32)),
                                 mixed=mixed, seed=int(synthetic.get("seed", 0)))
    elif data.get("download", False):
        splits = sorted({c.split("/")[0] for c in categories})
        root = download_bapps(root.parent if root.name == "2afc" else root, splits)
    return root


def _categories(names: Sequence[str] | None, split: str) -> list[str]:
    names = list(names) if names else list(BAPPS_CATEGORIES[split])
    return [n if "/" in n else f"{split}/{n}" for n in names]


def _loader(root: Path, categories: Sequence[str], cfg: dict[str, Any], shuffle: bool = False) -> DataLoader:
    data = cfg.get("data", {})
    ds = TwoAFCDataset(root, categories, load_size=data.get("load_size", 64))
    return DataLoader(ds, batch_size=int(cfg.get("batch_size", 50)), shuffle=shuffle,
                      num_workers=int(data.get("num_workers", 0)))


def _build_loss(name: str, colorspace: str, opts: dict[str, Any], pretrained: bool) -> nn.Module:
    """One distance per image (``reduction='none'``), deterministic, with ``loss_kwargs[name]`` options."""
    kwargs = dict(opts.get("loss_kwargs", {}).get(name, {}))
    if opts.get("faithful") and name.lower().startswith("watson"):
        kwargs.setdefault("faithful", True)
    # an untrained Adaptive loss is created for the patch size (native BAPPS patches are 64 px)
    size = int((opts.get("data") or {}).get("load_size") or 64)
    return build_loss({"name": name, "colorspace": colorspace, "pretrained": pretrained, "deterministic": True,
                       "reduction": "none", "weights_dir": opts.get("weights_dir"), "kwargs": kwargs},
                      image_size=(3, size, size))


def _input_map(name: str, opts: dict[str, Any]):
    from ..registry import loss_info

    if opts.get("original_input_range") and loss_info(name).family == "watson":
        return _to_original_range
    return None


def evaluate_losses(
    root: Path,
    categories: Sequence[str],
    losses: Sequence[str],
    colorspaces: Sequence[str],
    opts: dict[str, Any],
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate every (loss, colour space) pair; unusable ones are reported under ``"skipped"``."""
    from ..registry import normalize_colorspace

    device = resolve_device(opts.get("device"))
    loader = _loader(root, categories, opts)
    results: dict[str, Any] = {"scores": {}, "skipped": {}, "seconds": {}}
    human = None
    for name in losses:
        for cs in (normalize_colorspace(c) for c in colorspaces):
            key = name if cs == "RGB" else f"{name} [LA]"
            try:
                loss = _build_loss(name, cs, opts, pretrained=bool(opts.get("pretrained", True))).to(device).eval()
                start = time.perf_counter()
                dist = compute_distances(loss, loader, device, _input_map(name, opts), progress, desc=key)
            except (RuntimeError, ValueError, KeyError, NotImplementedError) as e:
                # e.g. weights that are not available offline, or a size the tuned weights do not cover
                results["skipped"][key] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
                continue
            results["seconds"][key] = time.perf_counter() - start
            results["scores"][key] = scores_by_category(dist)
            if human is None:
                human = scores_by_category(dist, human=True)
    if human is not None:
        results["scores"] = {"Human": human, **results["scores"]}
    return results


def _paper_lookup(key: str) -> dict[str, float] | None:
    if key == "Human":
        return PAPER_2AFC["Human"]
    name, _, rest = key.partition(" [")
    return PAPER_2AFC.get(paper_name(name, "LA" if rest else "RGB") or "")


#: what each command writes its scores as, under ``output.dir``: ``test`` (of an evaluation or of a
#: tuning config) ``scores.csv``/``.json``, ``train`` ``tune_scores.csv``/``.json``
RESULT_STEMS = {"test": "scores", "train": "tune_scores"}

#: the kinds of results (``"kind"`` in their JSON file) and what wrote them
RESULT_KINDS = {
    "losses": "an evaluation of losses (genloss test with an eval: config)",
    "tuned": "an evaluation of tuned weights (genloss test with a tune: config)",
    "tuning": "the before/after scores of a tuning run (genloss train)",
}


def _results_kind(json_path: Path) -> str | None:
    """The kind of the results in ``json_path`` (inferred for files without one), ``None`` if unreadable."""
    try:
        saved = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict):
        return None
    if saved.get("kind") in RESULT_KINDS:
        return saved["kind"]
    # written before results had a kind: train wrote "<loss> (before)" / "(tuned)" rows to scores.json
    keys = saved.get("scores") if isinstance(saved.get("scores"), dict) else {}
    return "tuning" if any(str(k).endswith(" (before)") for k in keys) else "losses"


def _refuse_other_results(out_dir: Path, stem: str, kind: str) -> None:
    """Raise a ``ValueError`` when ``out_dir/<stem>.json`` holds results of another kind than ``kind``."""
    json_path = Path(out_dir) / f"{stem}.json"
    if not json_path.is_file():
        return
    old = _results_kind(json_path)
    if old is not None and old != kind:
        raise ValueError(f"{json_path} holds {RESULT_KINDS[old]}; writing {RESULT_KINDS[kind]} there would replace "
                         f"them. Use another output.dir, or move {stem}.json and {stem}.csv away")


def write_results(results: dict[str, Any], out_dir: Path, stem: str = "scores",
                  kind: str | None = None) -> dict[str, Path]:
    """``<stem>.csv`` (one row per loss and category, with the paper's value) and ``<stem>.json``.

    ``kind`` (one of :data:`RESULT_KINDS`) is written into the JSON file; results of another kind
    already there are not replaced (a ``ValueError`` names them).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind is not None:
        if kind not in RESULT_KINDS:
            raise ValueError(f"kind must be one of {sorted(RESULT_KINDS)}, got {kind!r}")
        _refuse_other_results(out_dir, stem, kind)
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["loss", "category", "score", "std", "n", "paper"])
        for key, cats in results["scores"].items():
            paper = _paper_lookup(key) or {}
            for cat, v in cats.items():
                w.writerow([key, cat, f"{v['score']:.6f}", "" if math.isnan(v["std"]) else f"{v['std']:.6f}",
                            v["n"], "" if cat not in paper else f"{paper[cat]:.3f}"])
    payload = {**({"kind": kind} if kind is not None else {}), **results,
               "paper": {k: _paper_lookup(k) for k in results["scores"]}}
    json_path.write_text(json.dumps(payload, indent=2, allow_nan=True))
    return {"csv": csv_path, "json": json_path}


def print_table(results: dict[str, Any], title: str = "2AFC score per category") -> None:
    """A rich table: our score per category, the mean, and the paper's mean next to it."""
    from rich.console import Console
    from rich.table import Table

    scores = results["scores"]
    cats = [c for c in next(iter(scores.values())) if c != "mean"] if scores else []
    table = Table(title=title)
    table.add_column("metric")
    for c in cats:
        table.add_column(c, justify="right")
    table.add_column("mean", justify="right")
    table.add_column("paper mean", justify="right")
    table.add_column("diff", justify="right")
    for key, v in scores.items():
        paper = _paper_lookup(key)
        ours = v["mean"]["score"]
        pm = "" if paper is None else f"{paper['mean']:.3f}"
        diff = "" if paper is None else f"{ours - paper['mean']:+.3f}"
        table.add_row(key, *(f"{v[c]['score']:.3f}" for c in cats), f"{ours:.3f}", pm, diff)
    # Off a terminal (logs, CI) rich assumes 80 columns and would truncate the metric names.
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    for key, why in results.get("skipped", {}).items():
        console.print(f"[yellow]skipped[/yellow] {key}: {why}")


# ------------------------------------------------------------------------------------------------
# experiment entry points
# ------------------------------------------------------------------------------------------------
def _config_kind(cfg: dict[str, Any], command: str) -> str:
    """``'eval'`` or ``'tune'``: what a 2AFC config describes; a config ``command`` cannot run raises."""
    has_eval, has_tune = "eval" in cfg, "tune" in cfg
    if has_eval and has_tune:
        raise ValueError("this 2AFC config has both an eval: and a tune: section; a 2AFC config either evaluates "
                         "losses (eval:, run with genloss test) or tunes one (tune:, run with genloss train, then "
                         "genloss test evaluates the tuned weights): remove one of the two sections")
    if command == "train" and not has_tune:
        raise ValueError("this 2AFC config has no tune: section: it evaluates losses and has nothing to train. "
                         "Evaluate with genloss test --config <this config>; to tune a loss, use a config with a "
                         "tune: section (configs/2afc_tune.yaml)")
    return "tune" if has_tune else "eval"


def test(cfg: dict[str, Any]) -> dict[str, Any]:
    """Evaluate on the 2AFC validation categories; prints a table, writes ``scores.csv`` + ``scores.json``.

    With an evaluation config (an ``eval:`` section) the configured losses are evaluated. With a
    tuning config (a ``tune:`` section) the weights that :func:`train` tuned with the same config are
    evaluated (``output.dir/weights``; refused while the tuning is unfinished, when the weights are
    not the ones its checkpoint ends with, or when its checkpoint was tuned with other settings).
    Results of another kind already in ``output.dir/scores.json`` are not replaced.

    Config keys: ``data.{root, download, synthetic, split, categories, load_size}``,
    ``eval.{losses ('all' or list), colorspaces, batch_size, device, weights_dir, pretrained,
    faithful, original_input_range, progress}``, ``output.dir``.
    """
    if _config_kind(cfg, "test") == "tune":
        return _test_tuned(cfg)
    from ..registry import list_losses

    data = cfg.get("data", {})
    opts = dict(cfg.get("eval") or {})
    opts.setdefault("data", data)
    out = output_dir(cfg, "runs/2afc_eval")
    _refuse_other_results(out, RESULT_STEMS["test"], "losses")  # before the work, not after it
    categories = _categories(data.get("categories"), data.get("split", "val"))
    root = _data_root(data, categories)
    losses = opts.get("losses", "all")
    from ..registry import loss_info

    # unknown names are a mistake in the config: fail before any work, not as a skipped row
    losses = list_losses() if losses in (None, "all") else [loss_info(n).name for n in losses]
    results = evaluate_losses(root, categories, losses, opts.get("colorspaces", ["RGB", "LA"]), opts,
                              progress=bool(opts.get("progress", True)))
    print_table(results)
    files = write_results(results, out, RESULT_STEMS["test"], "losses")
    return {**results, "files": {k: str(v) for k, v in files.items()}}


test.__test__ = False  # not a pytest test


def _tune_setup(cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str, str, list[str], list[str]]:
    """``data``, ``tune`` options (with ``data``), loss name, colour space, training and validation categories."""
    from ..registry import normalize_colorspace

    data = cfg.get("data", {})
    opts = dict(cfg.get("tune") or {})
    opts.setdefault("data", data)
    name = opts.get("loss", "Watson-DFT")
    cs = normalize_colorspace(opts.get("colorspace", "RGB"))
    train_cats = _categories(data.get("train_categories", ["train/traditional", "train/cnn", "train/mix"]), "train")
    val_cats = _categories(data.get("categories"), data.get("split", "val"))
    return data, opts, name, cs, train_cats, val_cats


#: the tuning settings that change what the tuned loss measures (``test`` of a tuning config checks them)
_MEASURED_SETTINGS = {"tune": ("loss", "colorspace", "loss_kwargs", "faithful", "original_input_range"),
                      "data": ("load_size",)}


def _tune_settings(name: str, cs: str, opts: dict[str, Any], data: dict[str, Any], train_cats: Sequence[str],
                   train_triplets: int | None = None) -> dict[str, Any]:
    """The settings a tuning checkpoint records and a resume must repeat (``epochs`` and ``epochs_decay``
    are the schedule's, checked against the finished epochs instead)."""
    from ..registry import loss_info
    from .common import _plain

    tune = {
        "loss": loss_info(name).name, "colorspace": cs, "init": str(opts.get("init", "default")),
        "head": str(opts.get("head", "weighted-sigmoid")).lower(), "lr": float(opts.get("lr", 2e-4)),
        "beta1": float(opts.get("beta1", 0.5)), "batch_size": int(opts.get("batch_size", 50)),
        "seed": int(opts.get("seed", 0)), "loss_kwargs": _plain(dict((opts.get("loss_kwargs") or {}).get(name) or {})),
        "faithful": bool(opts.get("faithful", False)), "original_input_range": bool(opts.get("original_input_range")),
    }
    out = {"tune": tune, "data": {"train_categories": list(train_cats), "load_size": data.get("load_size", 64)}}
    if train_triplets is not None:
        out["data"]["train_triplets"] = int(train_triplets)
    return out


def _measured(settings: dict[str, Any]) -> dict[str, Any]:
    return {sec: {k: settings[sec][k] for k in keys if k in (settings.get(sec) or {})}
            for sec, keys in _MEASURED_SETTINGS.items()}


def _check_tuned_weights(out: Path, weights: Path, name: str, cs: str, opts: dict[str, Any],
                         data: dict[str, Any], train_cats: Sequence[str]) -> None:
    """Refuse to test ``weights`` that are missing, or that the tuning checkpoint in ``out`` does not vouch for."""
    from .common import _refuse_other_settings, check_state_dict, read_checkpoint

    again = "genloss train --config <this config> (with the same overrides)"
    if not weights.is_file():
        raise FileNotFoundError(f"no tuned weights {weights}: genloss test on a tune: config evaluates the weights "
                                f"that train tuned with it; tune them first with {again}")
    ckpt = out / TUNE_CHECKPOINT
    if not ckpt.is_file():
        return  # weights kept without their checkpoint: nothing to check them against
    state = read_checkpoint(ckpt)
    if isinstance(state.get("settings"), dict):
        _refuse_other_settings(ckpt, _measured(state["settings"]),
                               _measured(_tune_settings(name, cs, opts, data, train_cats)),
                               "this config would report the scores of those weights under its own settings. Test "
                               "with the config they were tuned with, or tune this one into another output.dir")
    total = int(opts.get("epochs", 10)) + int(opts.get("epochs_decay", 10))
    done = int(state.get("epoch", 0))
    if done < total:
        raise ValueError(f"the tuning in {out} is not finished ({done} of {total} epochs in {ckpt}); finish it with "
                         f"{again}, which resumes it, then test")
    probe = _build_loss(name, cs, opts, pretrained=False)
    check_state_dict(ckpt, state["state_dict"], probe)
    probe.load_state_dict(state["state_dict"])
    expected = tuned_state_dict(probe)
    try:
        saved = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception:  # not a weight file at all: named below like any other file that is not the tuned one
        saved = None
    if not (isinstance(saved, dict) and saved.keys() == expected.keys()
            and all(torch.equal(saved[k], expected[k]) for k in expected)):
        raise ValueError(f"{weights} are not the weights that {ckpt} ends with (a train stopped before writing them, "
                         f"or a file of another run); write them with {again}")


def _test_tuned(cfg: dict[str, Any]) -> dict[str, Any]:
    """``test`` of a tuning config: the tuned weights in ``output.dir/weights`` on the validation categories."""
    data, opts, name, cs, train_cats, val_cats = _tune_setup(cfg)
    out = output_dir(cfg, "runs/2afc_tune")
    weights_dir = out / "weights"
    weights = weights_dir / tuned_weight_file_name(name, cs)
    _check_tuned_weights(out, weights, name, cs, opts, data, train_cats)
    _refuse_other_results(out, RESULT_STEMS["test"], "tuned")
    root = _data_root(data, val_cats)
    device = resolve_device(opts.get("device"))
    key = name if cs == "RGB" else f"{name} [LA]"
    # weights_dir is searched first and its SHA256SUMS vouches for the tuned file (checked to exist above)
    loss = _build_loss(name, cs, {**opts, "weights_dir": str(weights_dir)}, pretrained=True).to(device).eval()
    dist = compute_distances(loss, _loader(root, val_cats, opts), device, _input_map(name, opts),
                             bool(opts.get("progress", True)), desc=f"{key} (tuned)")
    results = {"scores": {"Human": scores_by_category(dist, human=True), f"{key} (tuned)": scores_by_category(dist)},
               "skipped": {}, "weights": str(weights)}
    print_table(results, title=f"2AFC score of the tuned {key} ({weights})")
    files = write_results(results, out, RESULT_STEMS["test"], "tuned")
    return {**results, "files": {k: str(v) for k, v in files.items()}}


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    """Tune one loss on 2AFC training judgments, save its weights, and evaluate before and after.

    Config keys: ``data`` as in :func:`test` plus ``data.train_categories``; ``tune.{loss,
    colorspace, init ('default' or 'pretrained'), head, epochs, epochs_decay, lr, beta1,
    batch_size, device, seed, loss_kwargs, resume}``; ``output.dir`` (weights go to ``output.dir/weights``,
    the before/after scores to ``tune_scores.csv``/``.json``, the epochs to ``train_log.csv``).
    ``output.dir/checkpoints/tune_last.ckpt`` is written atomically after every epoch; with
    ``tune.resume: auto`` (the default) re-running the command continues from it. A resume with
    other settings (``tune.lr``, the loss, the data, ...) is refused naming them, before any file
    is written; ``tune.epochs`` may be raised while the run has not begun its decay. A config
    without a ``tune:`` section (an evaluation config) is refused.
    """
    _config_kind(cfg, "train")
    data, opts, name, cs, train_cats, val_cats = _tune_setup(cfg)
    out = output_dir(cfg, "runs/2afc_tune")
    resume = opts.get("resume", "auto")
    if resume not in ("auto", False, None):
        raise ValueError(f"tune.resume must be auto (continue from the last finished epoch) or false, got {resume!r}")
    root = _data_root(data, [*train_cats, *val_cats])
    device = resolve_device(opts.get("device"))
    progress = bool(opts.get("progress", True))
    loss = _build_loss(name, cs, opts, pretrained=opts.get("init", "default") == "pretrained").to(device)
    head = make_rank_head(str(opts.get("head", "weighted-sigmoid")))
    train_set = TwoAFCDataset(root, train_cats, load_size=data.get("load_size", 64))
    settings = _tune_settings(name, cs, opts, data, train_cats, len(train_set))
    epochs, epochs_decay = int(opts.get("epochs", 10)), int(opts.get("epochs_decay", 10))
    lr = float(opts.get("lr", 2e-4))
    ckpt = out / TUNE_CHECKPOINT
    if resume == "auto" and ckpt.is_file():  # refuse a checkpoint this run cannot continue before writing anything
        _read_tune_checkpoint(ckpt, loss, head, settings, {"lr": lr, "epochs": epochs, "epochs_decay": epochs_decay},
                              "tune.")
    input_map = _input_map(name, opts)
    val_loader = _loader(root, val_cats, opts)

    def val_scores() -> dict[str, dict[str, float]]:
        return scores_by_category(compute_distances(loss, val_loader, device, input_map, progress, desc="val"))

    before = val_scores()
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "train_log.csv"
    if resume in (False, None):
        ckpt.unlink(missing_ok=True)
    # rewritten from the checkpoint's history on a resume (tune_loss logs the finished epochs again)
    with open(log_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["epoch", "loss", "accuracy", "lr"])
        writer.writeheader()
        result = tune_loss(
            loss,
            train_set,
            head=head,
            epochs=epochs,
            epochs_decay=epochs_decay,
            lr=lr,
            beta1=float(opts.get("beta1", 0.5)),
            batch_size=int(opts.get("batch_size", 50)),
            device=device,
            input_map=input_map,
            seed=int(opts.get("seed", 0)),
            progress=progress,
            log=lambda r: (writer.writerow(r), fh.flush()),
            checkpoint=ckpt,
            settings=settings,
            setting_prefix="tune.",
        )
    after = val_scores()
    weights = save_tuned_weights(loss, name, cs, out / "weights")
    key = name if cs == "RGB" else f"{name} [LA]"
    results = {"scores": {f"{key} (before)": before, f"{key} (tuned)": after}, "skipped": {}}
    print_table(results, title=f"2AFC score of {key} before and after tuning")
    files = write_results(results, out, RESULT_STEMS["train"], "tuning")
    return {
        "before": before, "after": after, "history": result["history"], "weights": str(weights),
        "resumed_from": result["resumed_from"],
        "files": {**{k: str(v) for k, v in files.items()}, "log": str(log_path), "checkpoint": str(ckpt)},
    }
