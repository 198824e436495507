"""CorrWise toy experiment: car-sprite data, asset verification, sharpness metric, generators, smoke runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import SHARED
from PIL import Image

from genloss.data.sprites import CarSprites, toy_asset_paths
from genloss.experiments import test as run_test
from genloss.experiments import train as run_train
from genloss.experiments.toy import LearnedImage, ToyGenerator, car_band, sharpness_metrics
from genloss.weights import ChecksumError, WeightsUnavailableError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
ASSETS = SHARED / "corrwise-toy"  # conftest.SHARED honours GENLOSS_SHARED
QUIET = ["trainer.progress_bar=false"]

pytestmark = pytest.mark.skipif(not (ASSETS / "car.png").is_file(), reason=f"toy images not found at {ASSETS}")


@pytest.fixture
def assets(monkeypatch) -> Path:
    monkeypatch.setenv("GENLOSS_WEIGHTS_DIR", str(ASSETS))
    return ASSETS


@pytest.fixture(scope="module")
def small() -> CarSprites:
    return CarSprites.from_files(ASSETS, width=64, length=32)


def test_assets_are_verified(tmp_path, monkeypatch):
    monkeypatch.delenv("GENLOSS_WEIGHTS_DIR", raising=False)
    with pytest.raises(WeightsUnavailableError, match="car.png|bg.png"):
        toy_asset_paths(tmp_path)  # offline (tests) and not present
    shutil.copy(ASSETS / "bg.png", tmp_path / "bg.png")
    data = bytearray((ASSETS / "car.png").read_bytes())
    data[-20] ^= 0xFF
    (tmp_path / "car.png").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="car.png"):
        toy_asset_paths(tmp_path)
    bg, car = toy_asset_paths(ASSETS)
    assert bg.name == "bg.png" and car.name == "car.png"


def test_paper_scene_geometry():
    ds = CarSprites.from_files(ASSETS, length=4)
    item = ds[0]
    assert item["target"].shape == item["input"].shape == (3, 256, 512)
    assert tuple(ds.sprite_rgb.shape[1:]) == (85, 222)  # the car keeps its native size
    # the car is where the paper puts it: top-left at (x, 0.7) * (scene - car), whole pixels
    diff = (item["target"] - ds.background).abs().sum(0) > 1e-6
    rows, cols = diff.any(1).nonzero().squeeze(1), diff.any(0).nonzero().squeeze(1)
    assert int(rows.min()) >= int(0.7 * (256 - 85)) and int(rows.max()) < int(0.7 * (256 - 85)) + 85
    left = int(float(item["x"]) * (512 - 222))
    assert int(cols.min()) >= left and int(cols.max()) < left + 222


def test_positions_are_uniform_in_range_and_reproducible(small):
    xs = torch.tensor([small.position(i)[0] for i in range(len(small))])
    assert float(xs.min()) >= 0.35 and float(xs.max()) <= 0.65 and float(xs.std()) > 0.05
    assert small.position(3) == CarSprites.from_files(ASSETS, width=64, length=32).position(3)
    assert torch.equal(small[5]["input"], small[6]["input"])  # one fixed noise input for all samples
    assert not torch.equal(small[5]["target"], small[6]["target"])
    # outside the band the car moves through, every target is the background
    rows, cols = car_band(small)
    mask = torch.ones(small.height, small.width, dtype=torch.bool)
    mask[rows, cols] = False
    assert all(torch.equal(small[i]["target"][:, mask], small.background[:, mask]) for i in range(8))
    with pytest.raises(IndexError):
        small[32]


def test_invalid_sprite_settings():
    bg, car = torch.rand(3, 300, 600), torch.rand(4, 20, 40)
    with pytest.raises(ValueError, match="x_center"):
        CarSprites(bg, car, x_center=0.9, x_range=0.2)
    with pytest.raises(ValueError, match="width"):
        CarSprites(bg, car, width=1000)
    with pytest.raises(ValueError, match="RGBA"):
        CarSprites(bg, car[:3])
    with pytest.raises(ValueError, match="at least 256x512"):
        CarSprites(torch.rand(3, 100, 100), car)


def test_sharpness_metric_tells_a_sharp_car_from_a_smeared_one(small):
    sharp = small[0]["target"]
    m_sharp, pictures = sharpness_metrics(sharp, small)
    assert m_sharp["nearest_target_l1"] < 0.01  # it *is* one of the targets
    assert m_sharp["nearest_x"] == pytest.approx(small.position(0)[0], abs=1.5 / (small.width - 28))
    assert 0.8 < m_sharp["gradient_energy_ratio"] < 1.25
    smeared = pictures["median"]  # the pixel-wise L1 optimum
    m_smeared, _ = sharpness_metrics(smeared, small)
    assert m_smeared["median_l1"] < 1e-6 and m_smeared["nearest_target_l1"] > 0.03
    assert m_smeared["gradient_energy_ratio"] < 0.7 * m_sharp["gradient_energy_ratio"]
    assert m_smeared["laplacian_variance_ratio"] < 0.7 * m_sharp["laplacian_variance_ratio"]


def test_generators():
    noise = torch.randn(2, 3, 32, 64)
    g = ToyGenerator(ngf=4, n_down=2, n_blocks=1)
    out = g(noise)
    assert out.shape == noise.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    assert ToyGenerator(ngf=4, n_down=2, n_blocks=1, upsample="transpose")(noise).shape == noise.shape
    with pytest.raises(ValueError, match="multiples of 4"):
        g(torch.randn(1, 3, 30, 64))
    img = LearnedImage(32, 64)
    assert torch.allclose(img(noise), torch.full_like(noise, 0.5))
    with pytest.raises(ValueError, match="upsample"):
        ToyGenerator(upsample="bicubic")


def test_l1_smoke_train_test_and_the_l1_optimum_is_the_median(tmp_path, assets):
    out = [f"output.dir={tmp_path}", "smoke.enabled=true", *QUIET]
    result = run_train(CONFIGS / "toy_l1.yaml", [*out, "trainer.max_steps=150", "trainer.max_epochs=100",
                                                 "data.length=32"])
    assert result["global_step"] == 150 and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (Path(result["log_dir"]) / "metrics.csv").is_file() and Path(result["output_image"]).is_file()
    summary = run_test(CONFIGS / "toy_l1.yaml", out)
    metrics = json.loads(Path(summary["metrics_file"]).read_text())
    assert metrics == summary["metrics"] and metrics["loss"] == "L1"
    # trained with L1 the output approaches the pixel-wise median, not any sharp target
    assert metrics["median_l1"] < 0.5 * metrics["nearest_target_l1"]
    with Image.open(summary["strip"]) as im:  # output | nearest target | median | mean, stacked
        assert im.size == (64 + 4, 4 * 34 + 2)


def test_corrwise_smoke_train_and_test(tmp_path, assets):
    out = [f"output.dir={tmp_path}", "smoke.enabled=true", *QUIET]
    result = run_train(CONFIGS / "toy_corrwise_l1.yaml", [*out, "trainer.max_steps=3"])
    assert result["global_step"] == 3 and torch.isfinite(torch.tensor(result["metrics"]["train/loss"]))
    metrics = run_test(CONFIGS / "toy_corrwise_l1.yaml", out)["metrics"]
    assert metrics["loss"] == "L1 (CorrWise)" and (tmp_path / "test" / "strip.png").is_file()


def test_resumed_training_equals_uninterrupted_training(tmp_path, assets):
    # one batch holds the whole (4-sample) data set, so the data order cannot differ between runs
    base = ["smoke.enabled=true", "data.length=4", "trainer.max_epochs=100", *QUIET]
    straight = tmp_path / "straight"
    run_train(CONFIGS / "toy_l1.yaml", [*base, f"output.dir={straight}", "trainer.max_steps=8"])
    split = tmp_path / "split"
    run_train(CONFIGS / "toy_l1.yaml", [*base, f"output.dir={split}", "trainer.max_steps=4"])
    resumed = run_train(CONFIGS / "toy_l1.yaml", [*base, f"output.dir={split}", "trainer.max_steps=8"])
    assert resumed["resumed_from"] is not None and resumed["global_step"] == 8
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["generator.logits"]
    b = torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["generator.logits"]
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, torch.zeros_like(a))


def test_bad_toy_config(tmp_path, assets):
    with pytest.raises(ValueError, match="did you mean 'x_range'"):
        run_train(CONFIGS / "toy_l1.yaml", [f"output.dir={tmp_path}", "smoke.enabled=true", "data.x_rang=0.1"])
    with pytest.raises(ValueError, match="model.kind"):
        run_train(CONFIGS / "toy_l1.yaml", [f"output.dir={tmp_path}", "smoke.enabled=true", "model.kind=mlp"])
    with pytest.raises(FileNotFoundError, match="train first"):
        run_test(CONFIGS / "toy_l1.yaml", [f"output.dir={tmp_path / 'none'}"])
