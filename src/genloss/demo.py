"""``genloss demo``: every loss on built-in photographs and digits, written up as an HTML report.

Three parts, all on photographs that ship with scikit-image. The tuned weights of the losses are
read from ``weights_dir``, ``GENLOSS_WEIGHTS_DIR`` or the cache and, when online, downloaded into
the cache (the RGB files, about 130 KB), as are torchvision's ImageNet backbones (SqueezeNet 1.1,
5 MB; VGG16, 528 MB, for Deeploss-VGG and Watson-VGG, which every run shows) unless torch's hub
cache has them; offline, losses without their weights run untuned or are skipped and the report says so
(Watson-VGG's tuned weights are not published: without a copy from the authors it always runs untuned):

(a) **Distortion sweep.** Photographs (astronaut, coffee, chelsea, rocket) distorted by blur,
    noise, JPEG, shift and brightness at increasing strengths; every available loss is evaluated.
    Curves are normalised per loss, ``(loss(d) - loss(identity)) / max_sweep(...)``, so losses with
    different scales (L2 in the thousands, 1 - SSIM below one) share one axis and one can read off
    which distortions each loss considers worst.
(b) **Optimisation.** One image is fitted, by gradient descent from a degraded start, to several
    randomly shifted copies of a photograph, once per loss. L2's optimum is their mean (blur), L1's
    their median; the report states which losses kept more detail than the mean *in this run*,
    from its own sharpness numbers. Results side by side with wall-clock timings (this machine).
(c) **CorrWise alignment.** A photograph and a copy moved by a known smooth motion; the
    correspondence-wise wrapper (default offline flow estimator) estimates the flow, warps the
    prediction onto the target and masks unreliable pixels.

Losses whose tuned weights are not available offline are run with ``pretrained=False`` and the
report says so; losses that cannot be built at all (e.g. a deep loss without its ImageNet
backbone) are skipped with the reason.
"""

from __future__ import annotations

import html
import math
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data.photos import DISTORTIONS, PHOTO_NAMES, gaussian_blur, load_photo, load_photos, shift

# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo's three parts."""

    photos: tuple[str, ...]
    #: side of the photographs in the sweep; losses that need another size get the next of ``fallback_sizes``
    size: int
    fallback_sizes: tuple[int, ...]
    #: indices into each distortion's strengths (``None``: all)
    strength_indices: tuple[int, ...] | None
    fit_losses: tuple[str, ...] | None  # None: every available loss
    fit_steps: int
    fit_size: int
    fit_targets: int
    fit_max_shift: float
    fit_lr: float
    corrwise_size: int


FULL = DemoConfig(
    photos=PHOTO_NAMES, size=64, fallback_sizes=(192,), strength_indices=None,
    fit_losses=None, fit_steps=200, fit_size=64, fit_targets=8, fit_max_shift=4.0, fit_lr=0.05,
    corrwise_size=160,
)
QUICK = DemoConfig(
    photos=("astronaut", "coffee"), size=64, fallback_sizes=(192,), strength_indices=(0, 2, 4),
    fit_losses=("L1", "L2", "SSIM", "Watson-DCT", "Watson-DFT"), fit_steps=80, fit_size=48, fit_targets=6,
    fit_max_shift=4.0, fit_lr=0.05, corrwise_size=96,
)


@dataclass
class LossEntry:
    """A loss of the demo: the module (or ``None`` when skipped) and how it was built."""

    name: str
    family: str
    module: nn.Module | None
    #: 'tuned' (pretrained weights), 'untuned' (pretrained=False fallback), 'default' (the loss has no
    #: weights) or 'skipped'
    status: str
    note: str = ""


@dataclass
class DemoReport:
    """What :func:`run_demo` produced."""

    output: Path
    index: Path
    seconds: float
    section_seconds: dict[str, float]
    images: list[Path]
    notes: list[str]
    losses: list[LossEntry] = field(default_factory=list)
    sweep: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    corrwise: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Building the losses
# --------------------------------------------------------------------------------------------------


def build_losses(colorspace: str, weights_dir: Path | None, *, names: Iterable[str] | None = None,
                 reduction: str = "none", deterministic: bool = True, device: str = "cpu",
                 size: int = 64) -> list[LossEntry]:
    """Every registered loss (or ``names``), tuned when its weights are available, else untuned.

    A loss whose tuned weights are missing is built with ``pretrained=False`` (status ``'untuned'``,
    the note says which file is missing); a loss that cannot be built even so is ``'skipped'``.
    """
    import genloss
    from genloss.registry import make_loss
    from genloss.weights import ChecksumError, WeightsUnavailableError

    entries = []
    for name in names if names is not None else genloss.list_losses():
        info = genloss.loss_info(name)
        # image_size: an untuned Adaptive loss creates its per-coefficient parameters for this size
        kw = {"colorspace": colorspace, "reduction": reduction, "deterministic": deterministic,
              "weights_dir": weights_dir, "image_size": (3, size, size)}
        try:
            module = make_loss(name, {"pretrained": True, **kw})
            status = "tuned" if info.weight_files else "default"
            entries.append(LossEntry(info.name, info.family, module.to(device), status))
            continue
        except WeightsUnavailableError as e:
            # every file still missing (a deep loss' or Watson-VGG's ImageNet backbone too) and how to get it
            reason = info.missing_note(colorspace, weights_dir, True, e) or str(e).splitlines()[0]
        except ChecksumError as e:
            reason = f"a weight file failed its check: {str(e).splitlines()[0]}"
        except Exception as e:  # noqa: BLE001 - a broken loss is reported, not fatal for the demo
            entries.append(LossEntry(info.name, info.family, None, "skipped", f"{type(e).__name__}: {e}"))
            continue
        try:
            module = make_loss(name, {"pretrained": False, **kw})
            # untuned losses start with trainable parameters; the demo uses them as fixed metrics
            for p in module.parameters():
                p.requires_grad_(False)
            entries.append(LossEntry(info.name, info.family, module.to(device), "untuned",
                                     reason + " -> using pretrained=False (untuned defaults)"))
        except Exception as e:  # noqa: BLE001
            # the same missing file (e.g. a deep loss' ImageNet backbone) needs saying only once
            named = isinstance(e, WeightsUnavailableError) and e.name is not None and e.name in reason
            note = reason if named else f"{reason}; untuned: {str(e).splitlines()[0]}"
            entries.append(LossEntry(info.name, info.family, None, "skipped", note))
    return entries


# --------------------------------------------------------------------------------------------------
# (a) distortion sweep
# --------------------------------------------------------------------------------------------------


def distortion_sweep(entries: list[LossEntry], config: DemoConfig, progress: bool = False) -> dict[str, Any]:
    """Loss values of every available loss for every distortion and strength, averaged over the photos.

    Returns ``{"strengths": {distortion: [s0=0, s1, ...]}, "raw": {loss: {distortion: [...]}},
    "normalised": {...}, "size": {loss: px}, "skipped": {loss: reason}}``; index 0 of each curve is
    the undistorted image (strength 0).
    """
    from tqdm.auto import tqdm

    sizes = list(dict.fromkeys((config.size, *config.fallback_sizes)))
    photos = {s: load_photos(config.photos, s) for s in sizes}
    strengths = {
        k: [0.0] + [d.strengths[i] for i in (config.strength_indices or range(len(d.strengths)))]
        for k, d in DISTORTIONS.items()
    }
    # distorted batches are computed once per size and shared by every loss
    distorted: dict[int, dict[str, list[torch.Tensor]]] = {}

    def batches(size: int) -> dict[str, list[torch.Tensor]]:
        if size not in distorted:
            x = photos[size]
            distorted[size] = {k: [x.clone() if s == 0 else DISTORTIONS[k](x, s) for s in ss]
                               for k, ss in strengths.items()}
        return distorted[size]

    raw: dict[str, dict[str, list[float]]] = {}
    used_size: dict[str, int] = {}
    skipped: dict[str, str] = {}
    available = [e for e in entries if e.module is not None]
    for e in tqdm(available, desc="(a) distortion sweep", unit="loss", disable=not progress):
        last_error = ""
        for size in sizes:
            try:
                curves = {}
                with torch.no_grad():
                    for kind, xs in batches(size).items():
                        ref = photos[size].to(_device(e.module))
                        curves[kind] = [float(e.module(x.to(ref.device), ref).mean()) for x in xs]
                raw[e.name], used_size[e.name] = curves, size
                break
            except ValueError as err:  # e.g. too small for MS-SSIM, or tuned for 64x64 only (Adaptive)
                last_error = str(err).splitlines()[0]
        else:
            skipped[e.name] = last_error
    normalised = {}
    for name, curves in raw.items():
        base = {k: v[0] for k, v in curves.items()}
        peak = max(v - base[k] for k, vs in curves.items() for v in vs)
        scale = peak if peak > 0 and math.isfinite(peak) else 1.0
        normalised[name] = {k: [(v - base[k]) / scale for v in vs] for k, vs in curves.items()}
    return {"strengths": strengths, "raw": raw, "normalised": normalised, "size": used_size, "skipped": skipped,
            "photos": list(config.photos)}


def _device(module: nn.Module) -> torch.device:
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


# --------------------------------------------------------------------------------------------------
# (b) optimisation: one image fitted to misaligned copies of a photograph
# --------------------------------------------------------------------------------------------------


def misaligned_targets(name: str, size: int, count: int, max_shift: float, seed: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A photograph and ``count`` copies shifted by random sub-pixel offsets in [-max_shift, max_shift]^2.

    Returns ``(original (1, 3, S, S), targets (count, 3, S, S), offsets (count, 2))``.
    """
    original = load_photo(name, size)
    gen = torch.Generator().manual_seed(seed)
    offsets = (torch.rand(count, 2, generator=gen) * 2 - 1) * max_shift
    targets = torch.cat([shift(original, float(dx), float(dy)) for dx, dy in offsets])
    return original, targets, offsets


def sharpness(x: torch.Tensor) -> float:
    """Mean absolute finite-difference gradient of an image batch (higher = more fine detail)."""
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


def fit_misaligned(entries: list[LossEntry], config: DemoConfig, seed: int = 0,
                   progress: bool = False) -> dict[str, Any]:
    """For every loss: the single image ``x`` minimising ``sum_i loss(x, target_i)`` over misaligned targets.

    The targets are one photograph shifted by up to ``config.fit_max_shift`` pixels (as when a
    generator cannot know the exact position of its target). The optimum of L2 is their mean (a
    blurred photograph), of L1 their median; whether a loss keeps more detail than that is what the
    run measures (``sharpness``). Every loss starts from the same degraded image (the blurred mean of
    the targets) and runs the same Adam steps on ``x = sigmoid(logits)`` (which keeps x in [0, 1]);
    the loss' sum over the targets is minimised, its scale does not matter to Adam.
    """
    from tqdm.auto import tqdm

    original, targets, offsets = misaligned_targets(config.photos[0], config.fit_size, config.fit_targets,
                                                    config.fit_max_shift, seed)
    start = gaussian_blur(targets.mean(0, keepdim=True), 2.0).clamp(0.01, 0.99)
    runs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    names = config.fit_losses or [e.name for e in entries]
    by_name = {e.name: e for e in entries}
    for name in tqdm([n for n in names if n in by_name], desc="(b) optimisation", unit="loss", disable=not progress):
        e = by_name[name]
        if e.module is None:
            skipped[name] = e.note
            continue
        dev = _device(e.module)
        tg = targets.to(dev)
        logits = torch.logit(start).to(dev).requires_grad_(True)
        opt = torch.optim.Adam([logits], lr=config.fit_lr)
        history = []
        t0 = time.perf_counter()
        try:
            for _ in range(config.fit_steps):
                # one dense copy per target, the batch a loss gets in training: an expand_as() view
                # aliases one image N times (stride 0), which in-place code refuses and strided kernels
                # may read slower; the copy is negligible next to any loss
                x = torch.sigmoid(logits).expand_as(tg).contiguous()
                loss = e.module(x, tg).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                history.append(float(loss.detach()))
        except ValueError as err:  # e.g. MS-SSIM needs >= 161 px
            skipped[name] = str(err).splitlines()[0]
            continue
        seconds = time.perf_counter() - t0
        result = torch.sigmoid(logits.detach()).cpu()
        runs[name] = {"image": result, "seconds": seconds, "ms_per_step": 1000 * seconds / config.fit_steps,
                      "history": history, "status": e.status, "sharpness": sharpness(result) / sharpness(original),
                      "l2_to_original": float(((result - original) ** 2).sum())}
    return {"original": original, "targets": targets, "offsets": offsets, "start": start, "runs": runs,
            "skipped": skipped, "steps": config.fit_steps, "lr": config.fit_lr,
            "start_sharpness": sharpness(start) / sharpness(original),
            "mean_sharpness": sharpness(targets.mean(0, keepdim=True)) / sharpness(original)}


# --------------------------------------------------------------------------------------------------
# (c) CorrWise alignment
# --------------------------------------------------------------------------------------------------


def known_motion(size: int, name: str = "astronaut", dx: float = 3.0, dy: float = -2.0,
                 swirl: float = 2.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A photograph (target), a copy moved by a known smooth motion (prediction), and that motion.

    The motion is a translation ``(dx, dy)`` plus a smooth swirl of up to ``swirl`` pixels. Both
    images are cut from a larger crop, so the moved copy has real content at its borders.

    Returns ``(target, prediction, flow)``, (1, 3, size, size) each and flow (1, 2, size, size) with
    ``prediction[p + flow[p]] == target[p]`` (the flow from target to prediction, genloss' convention).
    """
    margin = int(math.ceil(abs(dx) + abs(dy) + swirl)) + 4
    big = load_photo(name, size + 2 * margin)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    # a smooth rotational field, largest in the middle ring
    cx = cy = (size - 1) / 2
    r = torch.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) / (size / 2)
    amp = swirl * torch.exp(-((r - 0.5) ** 2) / 0.08)
    theta = torch.atan2(ys - cy, xs - cx)
    fx = dx - amp * torch.sin(theta)
    fy = dy + amp * torch.cos(theta)
    flow = torch.stack((fx, fy)).unsqueeze(0)
    target = big[..., margin : margin + size, margin : margin + size]
    # the prediction at q = p + flow[p] shows target's p: sample the big image at p - flow(p) ...
    # a backward warp needs the inverse motion; for a smooth, small field -flow(p) evaluated at p
    # is accurate to a fraction of a pixel, so the prediction is built by sampling big at p - flow.
    pos_x = xs + margin - fx
    pos_y = ys + margin - fy
    n = big.shape[-1]
    grid = torch.stack((2 * pos_x / (n - 1) - 1, 2 * pos_y / (n - 1) - 1), dim=-1).unsqueeze(0)
    prediction = F.grid_sample(big, grid, mode="bicubic", padding_mode="border", align_corners=True).clamp(0, 1)
    return target.contiguous(), prediction, flow


def corrwise_alignment(config: DemoConfig) -> dict[str, Any]:
    """Run CorrWise on a photograph pair with known motion; returns the images and numbers for the figure.

    The figure uses ``scale_clip=0`` (align fully) and occlusion masking so that the warped
    prediction and the mask are shown as they are; the loss table uses CorrWise's defaults.
    """
    try:
        from genloss.corrwise import CorrWise
    except ImportError as e:
        return {"error": f"CorrWise is not available in this installation ({e})"}
    import genloss

    target, prediction, true_flow = known_motion(config.corrwise_size)
    l1 = genloss.get_loss("L1")
    try:
        viz = CorrWise(l1, scale_clip=0.0, occlusion=True)
        t0 = time.perf_counter()
        with torch.no_grad():
            info = viz.align(prediction, target)
        flow_seconds = time.perf_counter() - t0
        default = CorrWise(l1)
        blurred = gaussian_blur(target, 1.5)
        noisy = photos_noise(target)
        rows = []
        with torch.no_grad():
            for label, img in (("prediction moved by the known motion", prediction),
                               ("target blurred (sigma 1.5 px)", blurred),
                               ("target with noise (std 0.05)", noisy)):
                rows.append((label, float(l1(img, target)), float(default(img, target))))
    except Exception as e:  # noqa: BLE001 - the rest of the report is still useful
        return {"error": f"CorrWise failed on the demo pair: {type(e).__name__}: {e}"}
    flow = info.flow
    mask = info.mask if info.mask is not None else torch.ones_like(target[:, :1])
    m = 8  # the outermost pixels see content that left the frame
    inner = (slice(None), slice(None), slice(m, -m), slice(m, -m))
    epe = float(torch.linalg.vector_norm(flow - true_flow, dim=1, keepdim=True)[inner].mean())
    return {
        "target": target, "prediction": prediction, "true_flow": true_flow, "flow": flow,
        "warped": info.warped, "mask": mask, "epe": epe, "flow_seconds": flow_seconds,
        "max_motion": float(torch.linalg.vector_norm(true_flow, dim=1).max()),
        "masked_fraction": float(1 - mask.float().mean()), "rows": rows,
        "flow_name": type(viz.flow).__name__ if hasattr(viz, "flow") else "default",
    }


def photos_noise(x: torch.Tensor) -> torch.Tensor:
    """The noise distortion of part (c), std 0.05, fixed seed."""
    from .data.photos import gaussian_noise

    return gaussian_noise(x, 0.05, seed=0)


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------

_MARKERS = "os^Dv<>Pp*hX"


def _style(i: int) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10").colors
    return {"color": colours[i % 10], "marker": _MARKERS[i % len(_MARKERS)],
            "linestyle": ("-", "--", ":", "-.")[(i // 10) % 4]}


def _img(x: torch.Tensor) -> np.ndarray:
    """(1|C, H, W) or (H, W) tensor in [0, 1] -> array for imshow."""
    x = x.detach().float().clamp(0, 1).cpu()
    if x.dim() == 4:
        x = x[0]
    if x.dim() == 3:
        x = x.permute(1, 2, 0)
        if x.shape[-1] == 1:
            x = x[..., 0]
    return x.numpy()


def _strength_label(kind: str, strength: float) -> str:
    # the JPEG strength is 100 - quality; readers know the quality
    return f"JPEG quality {100 - strength:g}" if kind == "jpeg" else f"{kind} {strength:g}"


def plot_distortion_examples(config: DemoConfig, strengths: dict[str, list[float]], path: Path) -> Path:
    """A grid of the first photograph under every distortion (rows) and strength (columns)."""
    import matplotlib.pyplot as plt

    x = load_photo(config.photos[0], 96)
    ncol = max(len(v) for v in strengths.values())
    fig, axes = plt.subplots(len(strengths), ncol, figsize=(1.6 * ncol, 1.75 * len(strengths)), squeeze=False)
    for r, (kind, ss) in enumerate(strengths.items()):
        for c in range(ncol):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(ss):
                continue
            y = x if ss[c] == 0 else DISTORTIONS[kind](x, ss[c])
            ax.imshow(_img(y), interpolation="nearest")
            ax.set_title("original" if ss[c] == 0 else _strength_label(kind, ss[c]), fontsize=8)
    fig.suptitle("Distortions and strengths of the sweep (strength 0 = undistorted)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_distortion_curves(sweep: dict[str, Any], path: Path) -> Path:
    """One panel per distortion: normalised loss against strength, one line per loss."""
    import matplotlib.pyplot as plt

    kinds = list(sweep["strengths"])
    ncol = 3
    nrow = math.ceil((len(kinds) + 1) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
    flat = [a for row in axes for a in row]
    names = list(sweep["normalised"])
    for ax, kind in zip(flat, kinds, strict=False):
        ss = sweep["strengths"][kind]
        for i, name in enumerate(names):
            ax.plot(ss, sweep["normalised"][name][kind], label=name, markersize=4, linewidth=1.4, **_style(i))
        ax.set_title(kind)
        ax.set_xlabel(DISTORTIONS[kind].unit)
        ax.set_ylabel("normalised loss")
        ax.set_ylim(-0.03, 1.05)
        ax.grid(alpha=0.3)
    legend_ax = flat[len(kinds)]
    legend_ax.axis("off")
    handles, labels = flat[0].get_legend_handles_labels()
    legend_ax.legend(handles, labels, loc="center", frameon=False, fontsize=9, title="loss")
    for ax in flat[len(kinds) + 1 :]:
        ax.axis("off")
    fig.suptitle("Loss increase over the undistorted photograph, divided by its largest increase in the sweep",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_sensitivity(sweep: dict[str, Any], path: Path) -> Path:
    """Heat map: normalised loss at each distortion's strongest level (rows: losses)."""
    import matplotlib.pyplot as plt

    names = list(sweep["normalised"])
    kinds = list(sweep["strengths"])
    m = np.array([[sweep["normalised"][n][k][-1] for k in kinds] for n in names])
    fig, ax = plt.subplots(figsize=(1.3 * len(kinds) + 2.4, 0.45 * len(names) + 1.4))
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(kinds)), [_strength_label(k, sweep["strengths"][k][-1]).replace(" ", "\n", 1)
                                      for k in kinds], fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=9)
    for i in range(len(names)):
        for j in range(len(kinds)):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] < 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    ax.set_title("Which distortion does each loss penalise most?\n(strongest level; 1 = the loss' maximum)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


#: said wherever the report shows seconds
TIMING_CAVEAT = ("Timings are wall-clock seconds of a single run on this machine, including first-call overheads and "
                 "whatever else the machine was doing; compare them only with each other, within this report. "
                 "`genloss bench` measures runtimes properly (repeats, warm-up, peers).")


def fit_verdict(fit: dict[str, Any]) -> str:
    """What part (b)'s numbers show, and nothing more: which results are sharper than the mean of the targets."""
    runs = fit.get("runs") or {}
    if not runs:
        return ""
    ranked = sorted(runs.items(), key=lambda kv: kv[1]["sharpness"], reverse=True)
    mean = fit["mean_sharpness"]
    sharper = [n for n, r in ranked if r["sharpness"] > mean]
    text = (f"In this run the sharpest result is {ranked[0][0]} ({ranked[0][1]['sharpness']:.2f}) and the least sharp "
            f"{ranked[-1][0]} ({ranked[-1][1]['sharpness']:.2f}). ")
    if sharper:
        text += f"Sharper than the mean of the targets (L2's optimum): {', '.join(sharper)}."
    else:
        text += "No loss gave a result sharper than the mean of the targets (L2's optimum)."
    return text + " Another photograph, seed or number of steps can change this order."


def corrwise_verdict(rows: list[tuple[str, float, float]]) -> str:
    """What part (c)'s table shows: how much CorrWise lowered L1 for the moved, blurred and noisy predictions."""
    ratios = [(label, b / a) for label, a, b in rows if a]
    if not ratios:
        return ""
    said = "; ".join(f"{label}: {r:.2f}" for label, r in ratios)
    moved, others = ratios[0][1], [r for _, r in ratios[1:]]
    if others and moved < min(others):
        return (f"CorrWise(L1) / L1 here: {said}. It lowered the loss of the moved prediction most: it forgives the "
                "misalignment, while blur and noise, which no flow can undo, keep most of their loss.")
    return (f"CorrWise(L1) / L1 here: {said}. In this run it did not forgive the misalignment more than blur or "
            "noise.")


def plot_fit(fit: dict[str, Any], path: Path) -> Path:
    """Top row: the original, the shifted targets and the start; below: each loss' result."""
    import matplotlib.pyplot as plt

    top = [("original", fit["original"])]
    # the first four targets show what "misaligned" means; all of them are used in the fit
    shown = min(4, len(fit["targets"]))
    top += [(f"target {i + 1} of {len(fit['targets'])}\nshift ({dx:+.1f}, {dy:+.1f}) px", fit["targets"][i])
            for i, (dx, dy) in enumerate(fit["offsets"].tolist()[:shown])]
    top += [("start:\nblurred mean of targets", fit["start"])]
    results = [(f"{n}{' (untuned)' if r['status'] == 'untuned' else ''}\n{r['seconds']:.1f} s, "
                f"sharpness {r['sharpness']:.2f}", r["image"]) for n, r in fit["runs"].items()]
    ncol = len(top)
    nrow_res = math.ceil(len(results) / ncol)
    fig, axes = plt.subplots(1 + nrow_res, ncol, figsize=(2.1 * ncol, 2.85 * (1 + nrow_res)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for c, (label, img) in enumerate(top):
        axes[0][c].imshow(_img(img), interpolation="nearest")
        axes[0][c].set_title(label, fontsize=8)
    for i, (label, img) in enumerate(results):
        ax = axes[1 + i // ncol][i % ncol]
        ax.imshow(_img(img), interpolation="nearest")
        ax.set_title(label, fontsize=8)
    fig.suptitle(f"Top: the photograph, shifted targets, the start. Below: the image each loss fits to all "
                 f"{len(fit['targets'])} targets ({fit['steps']} Adam steps; sharpness relative to the original;\n"
                 "seconds: wall-clock of one run on this machine)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_fit_curves(fit: dict[str, Any], path: Path) -> Path:
    """Each loss' objective per step, divided by its value at the start (different scales on one axis)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for i, (name, r) in enumerate(fit["runs"].items()):
        h = np.asarray(r["history"], dtype=np.float64)
        style = _style(i)
        style.pop("marker")
        ax.plot(np.arange(1, len(h) + 1), h / h[0] if h[0] != 0 else h, label=name, **style)
    ax.set_xlabel("Adam step")
    ax.set_ylabel("objective / value at the start")
    ax.set_title("Optimisation progress", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def flow_to_rgb(flow: torch.Tensor, max_magnitude: float | None = None) -> np.ndarray:
    """(1, 2, H, W) flow -> (H, W, 3) colours: hue = direction, saturation = magnitude / ``max_magnitude``."""
    from matplotlib.colors import hsv_to_rgb

    f = flow[0].detach().float().cpu()
    mag = torch.linalg.vector_norm(f, dim=0)
    top = max_magnitude if max_magnitude else float(mag.max()) or 1.0
    hue = (torch.atan2(-f[1], -f[0]) / (2 * math.pi) + 0.5) % 1.0
    hsv = torch.stack((hue, (mag / top).clamp(0, 1), torch.ones_like(mag)), dim=-1).numpy()
    return hsv_to_rgb(hsv)


def plot_corrwise(cw: dict[str, Any], path: Path) -> Path:
    """2 x 4 panels: target, prediction, |difference|, mask / true flow, estimated flow, warped, |difference|."""
    import matplotlib.pyplot as plt

    top = cw["max_motion"]
    diff = (cw["prediction"] - cw["target"]).abs().mean(1)
    diff_w = (cw["warped"] - cw["target"]).abs().mean(1)
    vmax = float(diff.max())
    panels = [
        ("target", _img(cw["target"]), {}),
        ("prediction (moved)", _img(cw["prediction"]), {}),
        ("|prediction - target|", diff[0].numpy(), {"cmap": "magma", "vmin": 0, "vmax": vmax}),
        (f"mask (white = compared,\n{100 * cw['masked_fraction']:.1f}% masked)", _img(cw["mask"]),
         {"cmap": "gray", "vmin": 0, "vmax": 1}),
        (f"true flow (max {top:.1f} px)", flow_to_rgb(cw["true_flow"], top), {}),
        (f"estimated flow\n(mean error {cw['epe']:.2f} px)", flow_to_rgb(cw["flow"], top), {}),
        ("warped prediction", _img(cw["warped"]), {}),
        ("|warped - target|", diff_w[0].numpy(), {"cmap": "magma", "vmin": 0, "vmax": vmax}),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(11, 6.9))
    for ax, (title, img, kw) in zip(axes.flat, panels, strict=True):
        ax.imshow(img, interpolation="nearest", **kw)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle("CorrWise: the flow from the target into the prediction aligns the prediction before the "
                 "loss compares it (same colour scale for both differences and both flows)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em} th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{background:#fff8e1;border-left:4px solid #f0ad4e;padding:.5em .8em;margin:.6em 0}
.muted{color:#777} img{max-width:100%;border:1px solid #eee;margin:.4em 0} code{background:#f4f4f4;padding:0 .2em}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _num(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.4g}" if (v == 0 or 1e-3 <= abs(v) < 1e5) else f"{v:.3e}"


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class='num'>{c}</td>" if i >= numeric_from else f"<td>{c}</td>"
                         for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html(report: DemoReport, config: DemoConfig, quick: bool) -> Path:
    """Write ``index.html`` for a finished report."""
    import genloss

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>genloss demo</title><style>{_CSS}</style>"
             "</head><body>",
             "<h1>genloss demo</h1>",
             f"<p class='muted'>genloss {_esc(genloss.__version__)}, torch {_esc(torch.__version__)}, "
             f"Python {_esc(platform.python_version())}, {_esc(platform.machine())}, "
             f"{torch.get_num_threads()} CPU threads; {'quick' if quick else 'full'} run in {report.seconds:.1f} s "
             f"({', '.join(f'{k} {v:.1f} s' for k, v in report.section_seconds.items())}; wall-clock on this "
             "machine, including downloads and first-call overheads).</p>"]
    for note in report.notes:
        parts.append(f"<div class='note'>{_esc(note)}</div>")

    # losses
    parts.append("<h2>Losses</h2>")
    labels = {"tuned": "tuned weights", "default": "no weights needed", "untuned": "UNTUNED (pretrained=False)",
              "skipped": "skipped"}
    parts.append(_table(["loss", "family", "used as", "note"],
                        [[_esc(e.name), _esc(e.family), _esc(labels[e.status]), _esc(e.note)] for e in report.losses],
                        numeric_from=99))

    # (a)
    sw = report.sweep
    parts.append("<h2>(a) Loss against distortion type and strength</h2>")
    parts.append(
        f"<p>Photographs from scikit-image ({_esc(', '.join(sw['photos']))}), centre-cropped and resized; "
        "each curve is the mean over the photographs. To put losses of very different scales on one axis each "
        "curve shows <code>(loss(distorted) - loss(original)) / (largest such increase of that loss in the "
        "sweep)</code>: 1 marks the distortion and strength the loss penalises most. Watson losses are "
        "evaluated with <code>deterministic=True</code> (no random shift).</p>")
    for img in ("distortions.png", "distortion_curves.png", "sensitivity.png"):
        if (report.output / img).is_file():
            parts.append(f"<img src='{img}' alt='{img}'>")
    if sw.get("raw"):
        kinds = list(sw["strengths"])
        rows = [[_esc(n), _esc(sw["size"][n])] + [_num(sw["raw"][n][k][-1]) for k in kinds] for n in sw["raw"]]
        parts.append("<p>Raw values (reduction per image, mean over the photographs) at the strongest level:</p>")
        parts.append(_table(["loss", "px"] + [_strength_label(k, sw["strengths"][k][-1]) for k in kinds], rows))
    for name, why in sw.get("skipped", {}).items():
        parts.append(f"<div class='note'>{_esc(name)} was not evaluated: {_esc(why)}</div>")

    # (b)
    fit = report.fit
    parts.append("<h2>(b) Optimisation: one image fitted to misaligned targets</h2>")
    if fit.get("runs"):
        parts.append(
            f"<p>A generator often cannot know exactly where its target is. Here a single image <i>x</i> "
            f"minimises <code>sum_i loss(x, target_i)</code> over {len(fit['targets'])} copies of a photograph "
            "shifted by random sub-pixel offsets of up to 4 px. Every loss starts from the same degraded image "
            f"(the blurred mean of the targets) and runs {fit['steps']} Adam steps (lr {fit['lr']:g}) on "
            "<code>x = sigmoid(logits)</code>. L2's optimum is the mean of the targets (blurred), L1's the median. "
            "<i>Sharpness</i> is the mean absolute pixel "
            f"gradient relative to the original (the mean of the targets has {fit['mean_sharpness']:.2f}, the "
            f"start {fit['start_sharpness']:.2f}). {_esc(fit_verdict(fit))}</p>")
        parts.append("<img src='optimisation.png' alt='optimisation results'>")
        rows = [[_esc(n) + (" (untuned)" if r["status"] == "untuned" else ""), f"{r['seconds']:.2f}",
                 f"{r['ms_per_step']:.1f}", f"{r['sharpness']:.2f}", _num(r["l2_to_original"])]
                for n, r in fit["runs"].items()]
        parts.append(_table(["loss", "time (s)", "ms / step", "sharpness", "L2 to the unshifted original"], rows))
        parts.append(f"<p class='muted'>{_esc(TIMING_CAVEAT)}</p>")
        parts.append("<img src='optimisation_curves.png' alt='optimisation curves'>")
    for name, why in fit.get("skipped", {}).items():
        parts.append(f"<div class='note'>{_esc(name)} was not optimised: {_esc(why)}</div>")

    # (c)
    cw = report.corrwise
    parts.append("<h2>(c) Correspondence-wise alignment (CorrWise)</h2>")
    if cw.get("error"):
        parts.append(f"<div class='note'>{_esc(cw['error'])}</div>")
    else:
        parts.append(
            f"<p>The target is a photograph; the prediction is the same photograph moved by a known smooth motion "
            f"(a translation plus a swirl, up to {cw['max_motion']:.1f} px). <code>genloss.CorrWise</code> with its "
            "default offline flow estimator (no weights) estimates the flow from the target's pixels into the "
            f"prediction ({cw['flow_seconds']:.2f} s wall-clock on this machine for one {cw['target'].shape[-1]} px "
            "pair, both directions for "
            "the occlusion check), warps the prediction onto the target and masks pixels that fail the "
            "forward-backward consistency check. The figure aligns fully (<code>scale_clip=0</code>); the table "
            "uses the defaults (flow scaled by 0.9, the paper's epsilon = 0.1, no masking).</p>")
        parts.append("<img src='corrwise.png' alt='CorrWise alignment'>")
        parts.append(_table(["prediction", "L1", "CorrWise(L1)", "ratio"],
                            [[_esc(label), _num(a), _num(b), f"{b / a:.2f}" if a else "n/a"]
                             for label, a, b in cw["rows"]]))
        parts.append(f"<p>{_esc(corrwise_verdict(cw['rows']))}</p>")
    parts.append("<p class='muted'>Generated by <code>genloss demo</code>.</p></body></html>")
    index = report.output / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    return index


# --------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------


def _untuned_note(untuned: list[str]) -> str:
    """The report's note on losses that ran untuned: how to get their tuned weights (a download, or for
    files the authors never published, such as Watson-VGG's, a copy from them in a weights folder)."""
    import genloss
    from genloss.hub import WEIGHT_FILES

    def published(name: str) -> bool:
        files = genloss.loss_info(name).weight_files.get("RGB", ())
        return all(WEIGHT_FILES[f].published for f in files if f in WEIGHT_FILES)

    fetchable = [n for n in untuned if published(n)]
    unpublished = [n for n in untuned if not published(n)]
    how = []
    if fetchable:
        how.append(f"{', '.join(fetchable)}: set GENLOSS_WEIGHTS_DIR to the folder that holds them, or run "
                   "`genloss weights download` when online")
    if unpublished:
        how.append(f"{', '.join(unpublished)}: not published by the authors, so no download can fetch them; put a "
                   "copy from the authors into the folder GENLOSS_WEIGHTS_DIR names (or --weights-dir)")
    return (f"The tuned weights of {', '.join(untuned)} were not found ({'; '.join(how)}); these losses ran with "
            "pretrained=False, i.e. UNTUNED default parameters, so their numbers are not those of the paper.")


def run_demo(output: str | Path = "genloss-demo", *, quick: bool = False, weights_dir: str | Path | None = None,
             seed: int = 0, progress: bool = False, device: str = "cpu") -> DemoReport:
    """Run the demo and write ``output/index.html`` and its PNG figures.

    Args:
        output: folder for the report (created).
        quick: a smaller run (2 photographs, 3 strengths, 5 losses optimised for 80 steps); < 1 min on a CPU.
        weights_dir: folder with the tuned weight files (else ``GENLOSS_WEIGHTS_DIR`` and the cache).
        seed: seed of the random shifts of part (b).
        progress: show progress bars (stderr).
        device: torch device of the sweep (training and CorrWise run on the CPU).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only; never open a window
    config = QUICK if quick else FULL
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    wdir = Path(weights_dir) if weights_dir is not None else None
    t_start = time.perf_counter()
    times: dict[str, float] = {}
    notes: list[str] = []

    entries = build_losses("RGB", wdir, device=device)
    untuned = [e.name for e in entries if e.status == "untuned"]
    if untuned:
        notes.append(_untuned_note(untuned))
    skipped = [e.name for e in entries if e.status == "skipped"]
    if skipped:
        notes.append(f"Skipped (could not be built offline): {', '.join(skipped)}; see the table of losses.")

    images: list[Path] = []
    t = time.perf_counter()
    sweep = distortion_sweep(entries, config, progress=progress)
    images.append(plot_distortion_examples(config, sweep["strengths"], out / "distortions.png"))
    if sweep["normalised"]:
        images.append(plot_distortion_curves(sweep, out / "distortion_curves.png"))
        images.append(plot_sensitivity(sweep, out / "sensitivity.png"))
    times["sweep"] = time.perf_counter() - t

    t = time.perf_counter()
    fit = fit_misaligned(entries, config, seed=seed, progress=progress)
    if fit["runs"]:
        images.append(plot_fit(fit, out / "optimisation.png"))
        images.append(plot_fit_curves(fit, out / "optimisation_curves.png"))
    times["optimisation"] = time.perf_counter() - t

    t = time.perf_counter()
    cw = corrwise_alignment(config)
    if cw.get("error"):
        notes.append(cw["error"])
    else:
        images.append(plot_corrwise(cw, out / "corrwise.png"))
    times["corrwise"] = time.perf_counter() - t

    report = DemoReport(output=out, index=out / "index.html", seconds=time.perf_counter() - t_start,
                        section_seconds=times, images=images, notes=notes, losses=entries, sweep=sweep,
                        fit=fit, corrwise=cw)
    write_html(report, config, quick)
    return report


__all__ = ["DemoConfig", "DemoReport", "FULL", "QUICK", "LossEntry", "build_losses", "distortion_sweep",
           "fit_misaligned", "known_motion", "misaligned_targets", "run_demo", "sharpness"]
