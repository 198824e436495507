"""Video prediction: frame-folder and moving-sprites data, the generator, train/test from the smoke config."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genloss.data.video import FrameFolderVideo, MovingSpritesVideo, save_frames
from genloss.experiments import test as run_test
from genloss.experiments import train as run_train
from genloss.experiments.common import image_grid
from genloss.experiments.video import FramePredictor, strip_tiles

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SMOKE = CONFIGS / "video_smoke.yaml"


@pytest.fixture(scope="module")
def sprites():
    return MovingSpritesVideo(6, size=32, context_length=3, seed=5)


def test_sprites_are_deterministic_and_move(sprites):
    a, b = sprites[2], sprites[2]
    assert torch.equal(a["context"], b["context"]) and torch.equal(a["target"], b["target"])
    assert a["context"].shape == (3, 3, 32, 32) and a["target"].shape == (3, 32, 32)
    assert 0.0 <= float(a["context"].min()) and float(a["context"].max()) <= 1.0
    # consecutive frames differ (sprites and background move), and clips differ between indices
    assert (a["target"] - a["context"][:, -1]).abs().mean() > 0.005
    assert not torch.equal(sprites[2]["target"], sprites[3]["target"])
    with pytest.raises(IndexError):
        sprites.clip(6)


def test_frame_folder_windows_follow_file_order(sprites, tmp_path):
    clip0, clip1 = sprites.clip(0), sprites.clip(1)
    save_frames(np.concatenate([clip0, clip1]), tmp_path / "test" / "seq_a")  # 8 frames
    save_frames(clip1[:3], tmp_path / "test" / "seq_b")  # too short for one window
    ds = FrameFolderVideo(tmp_path, "test", context_length=3)
    assert len(ds) == 8 - 3
    item = ds[0]
    expected = torch.from_numpy(np.round(clip0 * 255) / 255).permute(3, 0, 1, 2).float()
    assert torch.allclose(item["context"], expected[:, :3], atol=1e-6)
    assert torch.allclose(item["target"], expected[:, 3], atol=1e-6)
    skip = FrameFolderVideo(tmp_path, "test", context_length=2, frames_skip=2)
    assert len(skip) == 8 - 4
    assert torch.allclose(skip[1]["target"], torch.from_numpy(np.round(clip1[1] * 255) / 255).permute(2, 0, 1).float(),
                          atol=1e-6)
    small = FrameFolderVideo(tmp_path, "test", size=16, max_samples=2)
    assert len(small) == 2 and small[1]["context"].shape == (3, 3, 16, 16)
    with pytest.raises(FileNotFoundError, match="prepare_kitti"):
        FrameFolderVideo(tmp_path, "train")
    with pytest.raises(ValueError, match="at least 9 frames"):
        FrameFolderVideo(tmp_path, "test", context_length=4, frames_skip=2)


def test_generator_shapes_and_errors():
    g = FramePredictor(context_length=3, ngf=4, n_down=2, n_blocks=1, norm="instance")
    out = g(torch.rand(2, 3, 3, 16, 24))
    assert out.shape == (2, 3, 16, 24) and 0 <= float(out.min()) and float(out.max()) <= 1
    with pytest.raises(ValueError, match="multiples of 4"):
        g(torch.rand(1, 3, 3, 18, 16))
    with pytest.raises(ValueError, match=r"\(N, 3, 3, H, W\)"):
        g(torch.rand(1, 3, 2, 16, 16))
    context, pred, target = torch.rand(2, 3, 3, 8, 8), torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    tiles = strip_tiles(context, pred, target)
    # sample 1's strip: its three context frames (oldest first), its prediction, its ground truth
    assert torch.equal(tiles[5:8], context[1].transpose(0, 1)) and torch.equal(tiles[8], pred[1])
    assert torch.equal(tiles[9], target[1])
    strip = image_grid(tiles, nrow=5, padding=2, border=False)
    assert strip.shape == (3, 2 * 8 + 2, 5 * 8 + 4 * 2)


def test_smoke_config_trains_and_tests(tmp_path, reference_weights):
    out = tmp_path / "run"
    res = run_train(SMOKE, [f"output.dir={out}"])
    assert res["global_step"] == 20 and Path(res["checkpoint"]).is_file()
    rows = list(csv.DictReader(open(out / "logs" / "csv" / "version_0" / "metrics.csv")))
    losses = [float(r["train/loss"]) for r in rows if r["train/loss"]]
    assert losses[-1] < losses[0]  # the generator learns
    assert any((out / "logs" / "tensorboard").rglob("events.out.tfevents*"))

    metrics = run_test(SMOKE, [f"output.dir={out}"])["metrics"]
    assert metrics["n"] == 8 and set(metrics) >= {"l1", "mse", "ssim", "psnr", "perceptual"}
    assert metrics["mse"] < metrics["l1"] < 0.5 and -1 < metrics["ssim"] < 1
    # Deeploss needs an ImageNet backbone: either it works, or the note says why and Watson-DFT is used
    if metrics["perceptual_name"] == "Watson-DFT":
        assert "Deeploss-Squeeze" in metrics["perceptual_note"] and metrics["perceptual"] > 0
    saved = json.loads((out / "test" / "metrics.json").read_text())
    assert saved["l1"] == pytest.approx(metrics["l1"])
    from PIL import Image

    with Image.open(out / "test" / "strips.png") as im:  # 4 rows of context x3 | prediction | truth
        assert im.size == (5 * 32 + 4 * 2, 4 * 32 + 3 * 2)

    with pytest.raises(FileNotFoundError, match="train first"):
        run_test(SMOKE, [f"output.dir={tmp_path / 'none'}"])

    # the checkpoint holds the generator only (the loss is kept out of it)
    state = torch.load(res["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    assert state and all(k.startswith("generator.") for k in state)
    # re-running continues from last.ckpt (trainer.resume: auto) in a new log version
    more = run_train(SMOKE, [f"output.dir={out}", "trainer.max_steps=24"])
    assert more["resumed_from"] == res["checkpoint"] and more["global_step"] == 24
    assert Path(more["log_dir"]).name == "version_1"
    with pytest.raises(ValueError, match="did you mean 'batch_size'"):
        run_train(SMOKE, [f"output.dir={out}", "data.batch_sise=2"])


def test_corrwise_wrapped_loss_trains_the_generator(sprites):
    """CorrWise(L1) from a config section with the default flow (classical, no weights: offline)."""
    from genloss import CorrWise
    from genloss.experiments.common import build_loss

    loss = build_loss({"name": "L1", "reduction": "mean", "corrwise": {"scale_clip": 0.1}})
    assert isinstance(loss, CorrWise)
    g = FramePredictor(context_length=3, ngf=4, n_down=2, n_blocks=1, norm="instance")
    batch = [sprites[i] for i in range(2)]
    context = torch.stack([b["context"] for b in batch])
    target = torch.stack([b["target"] for b in batch])
    value = loss(g(context), target)
    value = value[0] if isinstance(value, tuple) else value
    value.backward()
    assert torch.isfinite(value) and value > 0
    assert all(p.grad is not None for p in g.parameters())
    # aligned by the flow, the last context frame is much closer to the next frame than pixel-wise
    per_image = build_loss({"name": "L1", "reduction": "none", "corrwise": True})
    aligned, plain = per_image(context[:, :, -1], target), build_loss("L1")(context[:, :, -1], target)
    assert (aligned < 0.7 * plain).all()


def _corrwise_sections(cfg: dict) -> list[dict]:
    """The ``loss.corrwise`` mapping of a config, as written and with its smoke overrides applied."""
    from genloss.experiments.config import load_config

    out = [cfg.get("loss", {}).get("corrwise")]
    if "smoke" in cfg:
        out.append(load_config(cfg, ["smoke.enabled=true"])["loss"].get("corrwise"))
    return [c for c in out if isinstance(c, dict)]


@pytest.mark.parametrize("name", ["video_corrwise_l1.yaml", "toy_corrwise_l1.yaml", "video_l1.yaml"])
def test_config_corrwise_sections_use_real_arguments(name):
    import inspect

    import yaml

    from genloss import CorrWise
    from genloss.corrwise.flow.base import list_flows

    cfg = yaml.safe_load((CONFIGS / name).read_text())
    accepted = set(inspect.signature(CorrWise.__init__).parameters) - {"self", "base_loss"}
    sections = _corrwise_sections(cfg)
    assert bool(sections) == ("corrwise" in name)
    for cw in sections:
        assert set(cw) <= accepted, set(cw) - accepted
        assert cw.get("flow", "coarse2fine") in list_flows()


@pytest.mark.parametrize("name", ["video_l1.yaml", "video_corrwise_l1.yaml"])
def test_full_configs_run_as_smoke(name, tmp_path):
    """The paper's configs shrink to a CPU run with smoke.enabled=true (CorrWise with the classical flow)."""
    out = tmp_path / "run"
    overrides = ["smoke.enabled=true", f"output.dir={out}", "trainer.max_steps=3", "test.perceptual=[]"]
    res = run_train(CONFIGS / name, overrides)
    assert res["global_step"] == 3 and Path(res["checkpoint"]).is_file()
    metrics = run_test(CONFIGS / name, overrides)["metrics"]
    assert metrics["n"] == 8 and metrics["perceptual"] is None and 0 < metrics["l1"] < 1


def test_prepare_kitti_script(tmp_path, sprites):
    raw = tmp_path / "raw"
    for drive in ("2011_09_26_drive_0001_sync", "2011_09_26_drive_0002_sync", "2011_09_26_drive_0005_sync"):
        save_frames(sprites.clip(0), raw / "2011_09_26" / drive / "image_03" / "data")
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "splits_train.txt").write_text("2011_09_26_drive_0001_sync,2011_09_26_drive_0002_sync\n")
    (splits / "splits_val.txt").write_text("2011_09_26_drive_0005_sync\n")
    (splits / "splits_test.txt").write_text("2011_09_26_drive_0009_sync\n")  # missing drive: reported
    out = tmp_path / "kitti"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_kitti.py"), "--source", str(raw),
                           "--target", str(out), "--splits", str(splits), "--height", "16", "--width", "32"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "2011_09_26_drive_0009_sync" in proc.stderr
    ds = FrameFolderVideo(out, "train", context_length=3)
    assert len(ds) == 2 and ds[0]["context"].shape == (3, 3, 16, 32)
    assert sorted(p.name for p in (out / "val").iterdir()) == ["2011_09_26_drive_0005_sync"]
