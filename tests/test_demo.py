"""The built-in photographs, the distortions and the `genloss demo` report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genloss.data import photos
from genloss.data.photos import DISTORTIONS, brightness, gaussian_blur, gaussian_noise, jpeg, load_photo, shift
from genloss.demo import QUICK, LossEntry, build_losses, fit_misaligned, known_motion, run_demo, sharpness


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return photos.load_photos(["astronaut", "coffee"], 48)


def test_load_photo_is_a_centre_crop_in_unit_range():
    t = load_photo("chelsea", 40)
    assert t.shape == (1, 3, 40, 40) and t.dtype == torch.float32
    assert 0 <= float(t.min()) and float(t.max()) <= 1 and float(t.std()) > 0.05
    full = load_photo("chelsea", None)
    h, w = photos.photo_array("chelsea").shape[:2]
    assert full.shape[-2:] == (min(h, w), min(h, w))
    with pytest.raises(ValueError, match="unknown photograph"):
        load_photo("no_such_picture")


def test_distortions_are_pure_and_keep_shape(x):
    before = x.clone()
    for kind, d in DISTORTIONS.items():
        for s in d.strengths:
            y = d(x, s)
            assert y.shape == x.shape and y.dtype == x.dtype, kind
            assert 0 <= float(y.min()) and float(y.max()) <= 1, kind
            assert not torch.equal(y, x), (kind, s)
    assert torch.equal(x, before)


def test_distortion_strength_orders_the_damage(x):
    # larger strengths move the image further away, for every kind (mean absolute change)
    for kind, d in DISTORTIONS.items():
        err = [float((d(x, s) - x).abs().mean()) for s in (d.strengths[0], d.strengths[-1])]
        assert err[0] < err[1], kind
    assert sharpness(gaussian_blur(x, 2.0)) < sharpness(gaussian_blur(x, 0.5)) < sharpness(x)
    assert float((jpeg(x, 95) - x).abs().mean()) < float((jpeg(x, 10) - x).abs().mean())


def test_distortion_details(x):
    assert torch.equal(gaussian_blur(x, 0), x)
    assert torch.equal(gaussian_noise(x, 0.1, seed=3), gaussian_noise(x, 0.1, seed=3))
    assert not torch.equal(gaussian_noise(x, 0.1, seed=3), gaussian_noise(x, 0.1, seed=4))
    # an integer shift moves the content by whole pixels
    torch.testing.assert_close(shift(x, 2, 0)[..., 2:], x[..., :-2], atol=1e-5, rtol=0)
    torch.testing.assert_close(shift(x, 0, -3)[..., :-3, :], x[..., 3:, :], atol=1e-5, rtol=0)
    torch.testing.assert_close(brightness(x, 0.1), (x + 0.1).clamp(0, 1))
    grey = x[:, :1]
    assert jpeg(grey, 50).shape == grey.shape
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(x, -1)
    with pytest.raises(ValueError, match="quality"):
        jpeg(x, 0)
    with pytest.raises(ValueError, match="unknown distortion"):
        photos.distort(x, "swirl", 1.0)


def test_known_motion_is_the_flow_from_target_to_prediction():
    from genloss.corrwise.warp import backward_warp

    target, prediction, flow = known_motion(64)
    assert target.shape == prediction.shape == (1, 3, 64, 64) and flow.shape == (1, 2, 64, 64)
    aligned = backward_warp(prediction, flow, padding_mode="border")
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    # reading the prediction at p + flow(p) gives the target back (up to resampling blur)
    assert float((aligned - target)[inner].abs().mean()) < 0.25 * float((prediction - target)[inner].abs().mean())


def test_build_losses_tuned_with_reference_weights(reference_weights):
    entries = {e.name: e for e in build_losses("RGB", None, names=["L1", "Watson-DFT", "Adaptive"])}
    assert entries["L1"].status == "default"
    assert entries["Watson-DFT"].status == "tuned" and entries["Adaptive"].status == "tuned"


def test_build_losses_falls_back_to_untuned_offline():
    entries = {e.name: e for e in build_losses("RGB", None, names=["L2", "Watson-DFT"])}
    assert entries["L2"].status == "default"
    e = entries["Watson-DFT"]
    assert e.status == "untuned" and e.module is not None
    assert "rgb_watson_fft_trial0.pth" in e.note and "pretrained=False" in e.note


def test_build_losses_names_a_missing_backbone_not_the_tuned_file(reference_weights, tmp_path, monkeypatch):
    """The tuned Deeploss-Squeeze file is there; its ImageNet SqueezeNet is not: the note says so and how to get it."""
    import genloss

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (backbone,) = genloss.loss_info("Deeploss-Squeeze").backbone_files
    (e,) = build_losses("RGB", None, names=["Deeploss-Squeeze"])
    assert e.status == "skipped" and e.module is None
    assert e.note.startswith(f"missing {backbone} (torchvision's ImageNet backbone")
    assert f"genloss weights download {backbone}`" in e.note and "tuned weights" not in e.note


class _InputProbe(torch.nn.Module):
    """L2 per image that records the memory layout of every input it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.layouts: list[tuple[bool, int]] = []

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.layouts.append((input.is_contiguous(), input.stride(0)))
        return (input - target).square().flatten(1).sum(1)


def test_fit_gives_each_loss_a_dense_batch():
    """The optimisation feeds the losses one copy of the fitted image per target, not a stride-0 view of it."""
    from dataclasses import replace

    probe = _InputProbe()
    config = replace(QUICK, fit_losses=None, fit_steps=3, fit_size=16, fit_targets=4)
    fit = fit_misaligned([LossEntry("probe", "test", probe, "default")], config)
    assert probe.layouts == [(True, 3 * 16 * 16)] * config.fit_steps
    run = fit["runs"]["probe"]
    assert run["history"][-1] < run["history"][0]  # the gradient reached the image through the copies


def test_quick_demo_writes_report_and_says_when_untuned(tmp_path):
    # offline without weights: the tuned losses run untuned and the report must say so
    report = run_demo(tmp_path / "demo", quick=True, progress=False)
    html = report.index.read_text()
    assert report.index.is_file()
    for name in ("distortions.png", "distortion_curves.png", "sensitivity.png", "optimisation.png",
                 "optimisation_curves.png", "corrwise.png"):
        path = tmp_path / "demo" / name
        assert path.is_file() and f"src='{name}'" in html, name
        with Image.open(path) as im:
            assert im.size[0] > 300 and im.size[1] > 200
            assert np.asarray(im.convert("L")).std() > 5  # not a blank canvas
    assert "UNTUNED" in html and any("pretrained=False" in n for n in report.notes)
    assert "(c) Correspondence-wise alignment" in html

    sweep = report.sweep
    for name in ("L1", "L2", "SSIM", "Watson-DFT"):
        norm = sweep["normalised"][name]
        assert all(v[0] == 0 for v in norm.values())  # strength 0 is the undistorted photograph
        assert max(max(v) for v in norm.values()) == pytest.approx(1.0)
    noise = sweep["raw"]["L2"]["noise"]
    assert all(a < b for a, b in zip(noise, noise[1:], strict=False))

    fit = report.fit
    assert {"L1", "L2"} <= set(fit["runs"])
    # L2's optimum over the shifted targets is their mean: the fit must have moved towards it
    mean = fit["targets"].mean(0, keepdim=True)
    start_gap = float(((fit["start"] - mean) ** 2).sum())
    assert float(((fit["runs"]["L2"]["image"] - mean) ** 2).sum()) < 0.3 * start_gap

    cw = report.corrwise
    assert "error" not in cw, cw.get("error")
    # the default offline flow recovers the known motion to well under its size
    assert cw["epe"] < 0.25 * cw["max_motion"]
    moved_l1, moved_corrwise = cw["rows"][0][1:]
    blur_l1, blur_corrwise = cw["rows"][1][1:]
    assert moved_corrwise < 0.5 * moved_l1  # misalignment is forgiven ...
    assert blur_corrwise > 0.8 * blur_l1  # ... blur is not

    # the text claims only what the numbers show, with the plots' labels and a caveat on timings
    ranked = sorted(fit["runs"], key=lambda n: fit["runs"][n]["sharpness"])
    assert f"the sharpest result is {ranked[-1]} " in html and f"the least sharp {ranked[0]} " in html
    assert "keep more detail" not in html and "perceptual losses" not in html.split("(b) Optimisation")[1]
    strongest = 100 - sweep["strengths"]["jpeg"][-1]
    assert f"<th>JPEG quality {strongest:g}</th>" in html and "<th>jpeg " not in html
    assert "wall-clock seconds of a single run on this machine" in html
    assert "it forgives the misalignment" in html  # what the asserted ratios above show


def _fit(sharpness: dict[str, float], mean: float) -> dict:
    return {"runs": {n: {"sharpness": s} for n, s in sharpness.items()}, "mean_sharpness": mean}


def test_fit_verdict_follows_the_numbers():
    from genloss.demo import fit_verdict

    text = fit_verdict(_fit({"L2": 0.5, "Watson-DCT": 0.4, "SSIM": 0.9}, mean=0.6))
    assert "sharpest result is SSIM (0.90)" in text and "least sharp Watson-DCT (0.40)" in text
    assert "Sharper than the mean of the targets (L2's optimum): SSIM." in text
    text = fit_verdict(_fit({"L2": 0.5, "Watson-DCT": 0.4}, mean=0.6))
    assert "No loss gave a result sharper than the mean" in text


def test_corrwise_verdict_follows_the_numbers():
    from genloss.demo import corrwise_verdict

    forgiving = corrwise_verdict([("moved", 10.0, 2.0), ("blurred", 10.0, 9.0), ("noisy", 10.0, 9.5)])
    assert "moved: 0.20" in forgiving and "it forgives the misalignment" in forgiving
    not_forgiving = corrwise_verdict([("moved", 10.0, 9.8), ("blurred", 10.0, 9.0), ("noisy", 10.0, 9.5)])
    assert "did not forgive the misalignment" in not_forgiving and "forgives" not in not_forgiving


def test_untuned_note_offers_a_download_only_for_published_weights():
    from genloss.demo import _untuned_note

    note = _untuned_note(["Watson-DFT", "Watson-VGG"])
    published, unpublished = note.split("Watson-VGG: ")
    assert "Watson-DFT: set GENLOSS_WEIGHTS_DIR" in published and "genloss weights download" in published
    assert "not published" in unpublished and "a copy from the authors" in unpublished
    assert "genloss weights download" not in unpublished and "UNTUNED" in note
