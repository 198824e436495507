"""The genloss command line, through typer's CliRunner: real photographs written as PNG files."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import genloss
from genloss.cli import app, load_image
from genloss.data.photos import gaussian_blur, load_photo, load_photos, tensor_to_array

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
# losses whose value must be finite on 64 x 64 photographs with the reference weights
EXPECTED_FINITE = ["L1", "L2", "SSIM", "Watson-DCT", "Watson-DFT", "Adaptive"]


def _png(path: Path, x) -> Path:
    Image.fromarray(tensor_to_array(x)).save(path)
    return path


def _read(path: Path) -> np.ndarray:
    """The PNG as float64 in [0, 1], independently of genloss' loader."""
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pngs")
    x = load_photo("astronaut", 64)
    return {
        "a": _png(d / "a.png", x),
        "b": _png(d / "b.png", gaussian_blur(x, 1.5)),
        "small": _png(d / "small.png", load_photo("coffee", 48)),
    }


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_help_of_every_command():
    for cmd in ([], ["compare"], ["losses"], ["weights"], ["weights", "download"], ["weights", "path"],
                ["weights", "verify"], ["train"], ["test"], ["demo"]):
        r = _invoke(*cmd, "--help")
        assert r.exit_code == 0, (cmd, r.output)
        assert "Usage" in r.output
    r = _invoke("bench", "--help")  # argparse's help of the benchmark itself
    assert r.exit_code == 0 and "--losses" in r.output


def test_losses_lists_every_registered_loss():
    r = _invoke("losses", "--json")
    assert r.exit_code == 0, r.output
    entries = json.loads(r.stdout)
    assert [e["name"] for e in entries] == genloss.list_losses()
    assert all(e["description"] and e["family"] for e in entries)
    table = _invoke("losses")
    assert table.exit_code == 0
    for name in ("L1", "L2", "SSIM", "Watson-DFT"):
        assert name in table.output


def test_losses_unknown_family_fails():
    r = _invoke("losses", "--family", "nope")
    assert r.exit_code == 2 and "no loss of family" in r.output


def test_compare_json_values_finite_and_match_direct_computation(pngs, reference_weights):
    r = _invoke("compare", pngs["a"], pngs["b"], "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["metrics"] == genloss.list_losses()
    values = doc["pairs"][0]["values"]
    for name in EXPECTED_FINITE:
        assert values[name] is not None and math.isfinite(values[name]) and values[name] > 0, name
    # MS-SSIM needs >= 161 px: reported as skipped for this pair, not as a crash
    assert values["MS-SSIM"] is None and "161" in doc["skipped"]["MS-SSIM"][doc["pairs"][0]["pair"]]
    a, b = _read(pngs["a"]), _read(pngs["b"])
    assert values["L1"] == pytest.approx(np.abs(a - b).sum(), rel=1e-4)
    assert values["L2"] == pytest.approx(((a - b) ** 2).sum(), rel=1e-4)


def test_compare_table_and_csv(pngs, reference_weights, tmp_path):
    r = _invoke("compare", pngs["a"], pngs["b"], "-l", "L1", "-l", "watson-dft")
    assert r.exit_code == 0, r.output
    assert "L1" in r.output and "Watson-DFT" in r.output
    out = tmp_path / "scores.csv"
    r = _invoke("compare", pngs["a"], pngs["b"], "-l", "L2", "-l", "Watson-DFT", "--format", "csv", "-o", out)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 1
    assert set(rows[0]) == {"pair", "a", "b", "L2", "Watson-DFT"}
    assert float(rows[0]["L2"]) > 0 and math.isfinite(float(rows[0]["Watson-DFT"]))


def test_compare_identical_images_is_zero(pngs):
    r = _invoke("compare", pngs["a"], pngs["a"], "-l", "L1", "-l", "L2", "-l", "SSIM", "-f", "json")
    assert r.exit_code == 0, r.output
    values = json.loads(r.stdout)["pairs"][0]["values"]
    assert values["L1"] == 0.0 and values["L2"] == 0.0
    assert abs(values["SSIM"]) < 1e-5


def test_compare_folders_one_row_per_pair(tmp_path):
    da, db = tmp_path / "pred", tmp_path / "target"
    da.mkdir()
    db.mkdir()
    for name in ("astronaut", "coffee"):
        x = load_photo(name, 32)
        _png(da / f"{name}.png", gaussian_blur(x, 1.0))
        _png(db / f"{name}.png", x)
    _png(da / "extra.png", load_photo("chelsea", 32))
    r = _invoke("compare", da, db, "-l", "L1", "-f", "csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["pair"] for row in rows] == ["astronaut.png", "coffee.png"]
    assert all(float(row["L1"]) > 0 for row in rows)
    assert "extra.png is only in" in r.output


def test_compare_bad_input_gives_clear_errors(pngs, tmp_path):
    r = _invoke("compare", pngs["a"], tmp_path / "missing.png", "-l", "L1")
    assert r.exit_code != 0 and "does not exist" in r.output
    r = _invoke("compare", pngs["a"], pngs["small"], "-l", "L1")
    assert r.exit_code != 0
    assert "same size" in r.output and "--resize" in r.output
    r = _invoke("compare", pngs["a"], pngs["small"], "-l", "L1", "--resize", "32")
    assert r.exit_code == 0, r.output
    r = _invoke("compare", pngs["a"], pngs["b"], "-l", "NoSuchLoss")
    assert r.exit_code == 2 and "unknown loss" in r.output
    not_image = tmp_path / "x.png"
    not_image.write_text("hello")
    r = _invoke("compare", not_image, pngs["a"], "-l", "L1")
    assert r.exit_code != 0 and "not an image" in r.output


def test_compare_missing_weights_shows_unavailable_and_strict_fails(pngs):
    # no reference_weights fixture: offline with an empty cache
    r = _invoke("compare", pngs["a"], pngs["b"], "-l", "L1", "-l", "Watson-DFT", "-f", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["pairs"][0]["values"]["Watson-DFT"] is None
    assert "rgb_watson_fft_trial0.pth" in doc["unavailable"]["Watson-DFT"]
    assert doc["pairs"][0]["values"]["L1"] > 0
    r = _invoke("compare", pngs["a"], pngs["b"], "-l", "L1", "-l", "Watson-DFT", "--strict")
    assert r.exit_code == 1 and "--strict" in r.output


def test_weights_path_offline_and_with_reference_folder(monkeypatch, tmp_path):
    r = _invoke("weights", "path", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert all(f["status"] == "missing" for f in doc["files"].values())
    r = _invoke("weights", "path")
    assert r.exit_code == 0 and "missing" in r.output and "genloss weights download" in r.output


def test_weights_path_finds_reference_weights(reference_weights):
    doc = json.loads(_invoke("weights", "path", "--json").stdout)
    present = {n for n, f in doc["files"].items() if f["status"] == "present"}
    assert "rgb_watson_fft_trial0.pth" in present
    assert doc["files"]["rgb_watson_fft_trial0.pth"]["path"].startswith(str(reference_weights))


def test_weights_download_offline_says_where_to_get_files(tmp_path):
    r = _invoke("weights", "download", "Watson-DFT", "--dir", tmp_path)
    assert r.exit_code == 1
    assert "GENLOSS_OFFLINE" in r.output
    assert "rgb_watson_fft_trial0.pth" in r.output and "gray_watson_fft_trial0.pth" in r.output
    assert "https://" in r.output
    assert not list(tmp_path.iterdir())  # nothing half-written
    r = _invoke("weights", "download", "nope.pth")
    assert r.exit_code == 2 and "neither a weight file nor a loss" in r.output


def test_weights_download_skips_present_files(reference_weights):
    r = _invoke("weights", "download", "rgb_watson_fft_trial0.pth")
    assert r.exit_code == 0, r.output
    assert "present" in r.output


def test_weights_verify_detects_a_corrupt_file(reference_weights, tmp_path):
    r = _invoke("weights", "verify")
    assert r.exit_code == 0, r.output
    assert "ok" in r.output and "MISMATCH" not in r.output
    (tmp_path / "rgb_watson_fft_trial0.pth").write_bytes(b"not the weights")
    r = _invoke("weights", "verify", "--dir", tmp_path)
    assert r.exit_code == 1 and "MISMATCH" in r.output


def test_train_and_test_report_config_errors(tmp_path):
    r = _invoke("train", "--config", tmp_path / "none.yaml")
    assert r.exit_code == 2 and "does not exist" in r.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text("experiment: nope\n")
    r = _invoke("test", "--config", cfg)
    assert r.exit_code == 1 and "experiment" in r.output
    r = _invoke("test", "--config", cfg, "no-equals-sign")
    assert r.exit_code == 2 and "key.sub=value" in r.output


def test_test_command_runs_the_2afc_smoke_config(tmp_path):
    cfg = ROOT / "configs" / "2afc_eval_smoke.yaml"
    if not cfg.is_file():
        pytest.skip("2AFC smoke config not present")
    r = _invoke("test", "--config", cfg, f"data.root={tmp_path / 'bapps'}", f"output.dir={tmp_path / 'out'}",
                "eval.losses=[L1]", "eval.colorspaces=[RGB]")
    assert r.exit_code == 0, r.output
    # the experiment may print its own table first; the summary is the JSON document at the end
    summary = json.loads(r.stdout[r.stdout.rindex("\n{\n") + 1 :] if "\n{\n" in r.stdout else r.stdout)
    assert isinstance(summary, dict)
    assert '"score"' in r.stdout


def test_bench_passes_arguments_through():
    r = _invoke("bench", "--losses", "L1", "--colorspaces", "RGB", "--batch", "2", "--size", "16", "--repeats", "1")
    assert r.exit_code == 0, r.output
    assert "L1" in r.output and "torch.nn.L1Loss" in r.output


def test_compare_scales_16_bit_images_by_their_depth(tmp_path):
    """A 16-bit greyscale PNG/TIFF of the same picture as an 8-bit one gives the 8-bit one's values
    (PIL's convert would saturate the 16-bit data to white: L1 750 instead of 2114 in the issue)."""
    import torch

    from genloss.data.images import read_image

    photo = load_photos(["camera"], 64)[0, 0].numpy()  # greyscale photograph in [0, 1]
    eight = np.round(photo * 255).astype(np.uint8)
    sixteen = eight.astype(np.uint16) * 257  # the same values at 16 bits (255 * 257 = 65535)
    Image.fromarray(eight).save(tmp_path / "a8.png")
    Image.fromarray(sixteen).save(tmp_path / "a16.png")
    Image.fromarray(sixteen).save(tmp_path / "a16.tif")
    Image.fromarray(np.zeros_like(eight)).save(tmp_path / "black.png")
    for name in ("a16.png", "a16.tif"):
        torch.testing.assert_close(read_image(tmp_path / name, "L"), read_image(tmp_path / "a8.png", "L"))
        torch.testing.assert_close(load_image(tmp_path / name), load_image(tmp_path / "a8.png"))
    want = float(load_image(tmp_path / "a8.png").sum())  # L1 against black, RGB
    got = genloss.get_loss("L1")(load_image(tmp_path / "a16.png"), load_image(tmp_path / "black.png"))
    assert float(got) == pytest.approx(want, rel=1e-5)
    Image.fromarray(sixteen.astype(np.int32)).save(tmp_path / "a32.tif")
    with pytest.raises(ValueError, match="no defined value range"):
        read_image(tmp_path / "a32.tif")


def test_image_folders_scale_16_bit_files_too(tmp_path):
    """The data sets' folder reader (MNIST/CelebA layouts) scales 16-bit files instead of saturating them."""
    import torch
    from torchvision import transforms

    from genloss.data.mnist import ImageFiles

    eight = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
    (tmp_path / "0").mkdir()
    Image.fromarray(eight).save(tmp_path / "0" / "a.png")
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "0" / "b.png")
    files = ImageFiles(tmp_path, transforms.ToTensor(), mode="L")
    torch.testing.assert_close(files[0][0], files[1][0])
