"""Build docs/img/corrwise.png: target, prediction, flow (colour-coded), warped prediction, occlusion mask.

The pair is made from scikit-image photographs: the target is the astronaut photograph, the prediction
the same scene moved by a smooth random motion with a patch (the cat) that moves differently, so the
flow has structure and the occlusion mask has something to find. CorrWise uses its default
'coarse2fine' estimator with occlusion masking.

    python docs/make_corrwise_figure.py [--out docs/img/corrwise.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import hsv_to_rgb  # noqa: E402
from torch import nn  # noqa: E402

from genloss import CorrWise  # noqa: E402
from genloss.corrwise.synthetic import synthetic_pair  # noqa: E402
from genloss.data.photos import load_photos  # noqa: E402


def flow_to_rgb(flow: np.ndarray, max_norm: float | None = None) -> np.ndarray:
    """(2, H, W) flow -> (H, W, 3) colours: hue = direction, saturation = magnitude (white = no motion)."""
    fx, fy = flow
    mag = np.hypot(fx, fy)
    max_norm = max_norm or max(mag.max(), 1e-6)
    hue = (np.arctan2(-fy, -fx) / np.pi + 1) / 2
    hsv = np.stack([hue, np.clip(mag / max_norm, 0, 1), np.ones_like(mag)], -1)
    return hsv_to_rgb(hsv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(Path(__file__).parent / "img" / "corrwise.png"))
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    s = args.size
    photos = load_photos(["astronaut"], s + s // 2)
    # image1 = target (reference frame), image2 = prediction; flow is the target -> prediction motion
    target, pred, true_flow = synthetic_pair(photos, "smooth", s, seed=3)
    patch = load_photos(["chelsea"], s // 4)
    p = s // 4
    y0, x0, shift = s // 2, s // 4, s // 16
    target[:, :, y0:y0 + p, x0:x0 + p] = patch
    pred[:, :, y0:y0 + p, x0 + shift:x0 + shift + p] = patch

    cw = CorrWise(nn.L1Loss(), occlusion=True)
    aligned = cw.align(pred, target)
    loss = aligned.loss
    plain = nn.L1Loss()(pred, target)
    flow = aligned.flow[0].numpy()
    mask = aligned.mask[0, 0].numpy()
    warped = aligned.warped[0].permute(1, 2, 0).clamp(0, 1).numpy()  # clamp: display only

    def rgb(t: torch.Tensor) -> np.ndarray:
        return t[0].permute(1, 2, 0).clamp(0, 1).numpy()

    max_norm = float(np.percentile(np.hypot(*flow), 95))  # outliers in flat regions would wash out the colours
    panels = [
        (rgb(target), "target"),
        (rgb(pred), f"prediction\nL1 = {plain.item():.3f}"),
        (flow_to_rgb(flow, max_norm), f"flow target -> prediction\n(full colour: {max_norm:.1f} px)"),
        (warped, f"warped prediction\nCorrWise(L1) = {loss.item():.3f}"),
        (mask, "occlusion mask\n(black = masked)"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.1))
    for ax, (img, title) in zip(axes, panels, strict=True):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out} (L1 {plain.item():.4f}, CorrWise(L1) {loss.item():.4f}, masked {1 - mask.mean():.1%})")


if __name__ == "__main__":
    main()
