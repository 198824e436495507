"""2AFC evaluation and tuning on a small BAPPS-format set of real photographs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import genloss
from genloss.data.bapps import TwoAFCDataset, make_synthetic_bapps
from genloss.experiments import test as run_test
from genloss.experiments import train as run_train
from genloss.experiments.twoafc import (
    PAPER_2AFC,
    WeightedSigmoidRank,
    compute_distances,
    human_scores,
    paper_name,
    scores_by_category,
    two_afc_scores,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_score_rule_and_ties():
    d0 = torch.tensor([1.0, 2.0, 1.0])
    d1 = torch.tensor([2.0, 1.0, 1.0])
    judge = torch.tensor([0.2, 0.2, 0.9])
    # p0 closer -> agree with the 80% preferring p0; p1 closer -> 20% agree; tie -> 0.5
    assert two_afc_scores(d0, d1, judge).tolist() == pytest.approx([0.8, 0.2, 0.5])
    assert human_scores(torch.tensor([0.0, 0.5, 0.8])).tolist() == pytest.approx([1.0, 0.5, 0.68])
    with pytest.raises(ValueError, match="same shape"):
        two_afc_scores(d0, d1[:2], judge)


def test_paper_table_and_names():
    assert PAPER_2AFC["Watson-fft"]["traditional"] == 0.687
    assert PAPER_2AFC["L2 [LA]"]["mean"] == 0.605
    for row in PAPER_2AFC.values():  # "mean" is the unweighted mean of the six categories
        assert sum(v for k, v in row.items() if k != "mean") / 6 == pytest.approx(row["mean"], abs=1.5e-3)
    assert paper_name("Watson-DFT", "LA") == "Watson-fft [LA]"
    assert paper_name("MS-SSIM") is None


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("bapps")
    make_synthetic_bapps(root, {"val/traditional": 48, "val/color": 48}, size=16, mixed=["val/color"], seed=0)
    return root


def test_l2_agrees_with_judgments_of_same_kind_distortions(small_set):
    loader = DataLoader(TwoAFCDataset(small_set, ["val/traditional"], load_size=None), batch_size=16)
    dist = compute_distances(genloss.get_loss("L2", reduction="none"), loader, progress=False)
    scores = scores_by_category(dist)
    human = scores_by_category(dist, human=True)
    assert scores["traditional"]["n"] == 48
    assert scores["traditional"]["score"] > 0.75
    # an untrained metric cannot beat the raters' own consistency by much
    assert scores["traditional"]["score"] < human["traditional"]["score"] + 0.1
    # reversing the distance reverses the verdict
    flipped = two_afc_scores(dist["d1"], dist["d0"], dist["judge"]).mean()
    assert float(flipped) == pytest.approx(1 - scores["traditional"]["score"])


def test_eval_config_writes_table_csv_json(small_set, tmp_path, capsys, reference_weights):
    cfg = {
        "experiment": "2afc",
        "data": {"root": str(small_set), "categories": ["traditional", "color"], "load_size": None},
        "eval": {"losses": ["L1", "L2", "Adaptive", "NoSuchLoss"], "colorspaces": ["RGB", "LA"], "batch_size": 24,
                 "progress": False},
        "output": {"dir": str(tmp_path / "out")},
    }
    with pytest.raises(ValueError, match="unknown loss"):
        run_test(cfg)
    cfg["eval"]["losses"] = ["L1", "L2", "Adaptive"]
    res = run_test(cfg)
    printed = capsys.readouterr().out
    assert "L2 [LA]" in printed and "paper mean" in printed
    # the tuned Adaptive weights exist for 64x64 only: reported as skipped, with the reason
    assert "Adaptive" in res["skipped"] and "64" in res["skipped"]["Adaptive"]
    rows = list(csv.DictReader(open(res["files"]["csv"])))
    l2 = {r["category"]: r for r in rows if r["loss"] == "L2"}
    assert float(l2["traditional"]["paper"]) == PAPER_2AFC["L2"]["traditional"]
    assert float(l2["traditional"]["score"]) == pytest.approx(res["scores"]["L2"]["traditional"]["score"])
    saved = json.load(open(res["files"]["json"]))
    assert saved["scores"]["Human"]["color"]["n"] == 48
    assert set(saved["scores"]) == {"Human", "L1", "L1 [LA]", "L2", "L2 [LA]"}


def test_weighted_sigmoid_head():
    head = WeightedSigmoidRank()
    with torch.no_grad():
        p = head(torch.tensor([2.0, 1.0, 0.0]), torch.tensor([1.0, 2.0, 0.0]))
    assert p[0] > 0.5 > p[1] and float(p[2]) == 0.5


def test_tuning_raises_score_and_weights_load_with_get_loss(tmp_path, capsys):
    """On pairs of different distortion kinds the default Watson-DCT disagrees with the raters; tuning fixes it.

    Runs the CI smoke config (configs/2afc_tune_smoke.yaml) with its folders moved to tmp_path.
    """
    data = tmp_path / "data"
    res = run_train(CONFIGS / "2afc_tune_smoke.yaml",
                    [f"data.root={data}", f"output.dir={tmp_path / 'run'}", "tune.progress=true"])
    before, after = res["before"]["color"]["score"], res["after"]["color"]["score"]
    assert before < 0.45
    assert after > before + 0.15
    assert len(res["history"]) == 6 and res["history"][-1]["accuracy"] > res["history"][0]["accuracy"]
    assert "tune epoch" in capsys.readouterr().err  # progress bars

    # the tuned parameters load by name from the output folder and reproduce the tuned score
    weights_dir = tmp_path / "run" / "weights"
    assert (weights_dir / "rgb_watson_dct_trial0.pth").is_file() and (weights_dir / "SHA256SUMS").is_file()
    tuned = genloss.get_loss("Watson-DCT", weights_dir=weights_dir, deterministic=True, reduction="none")
    loader = DataLoader(TwoAFCDataset(data, ["val/color"], load_size=None), batch_size=64)
    again = scores_by_category(compute_distances(tuned, loader, progress=False))["color"]["score"]
    assert again == pytest.approx(after, abs=1e-6)
    # a tampered file is still rejected
    (weights_dir / "rgb_watson_dct_trial0.pth").write_bytes(b"garbage")
    with pytest.raises(Exception, match="sha256"):
        genloss.get_loss("Watson-DCT", weights_dir=weights_dir)


def test_original_input_range_flag_changes_watson_only(small_set, reference_weights):
    loader = DataLoader(TwoAFCDataset(small_set, ["val/traditional"], load_size=None), batch_size=48)
    loss = genloss.get_loss("Watson-DCT", deterministic=True, reduction="none")
    plain = compute_distances(loss, loader, progress=False)
    shifted = compute_distances(loss, loader, input_map=lambda x: (x + 1) / 2, progress=False)
    assert not torch.allclose(plain["d0"], shifted["d0"])
    from genloss.experiments.twoafc import _input_map

    assert _input_map("Watson-DFT", {"original_input_range": True}) is not None
    assert _input_map("L2", {"original_input_range": True}) is None
    assert _input_map("Watson-DFT", {}) is None


def test_eval_smoke_config_runs(tmp_path):
    res = run_test(CONFIGS / "2afc_eval_smoke.yaml", [f"data.root={tmp_path / 'd'}", f"output.dir={tmp_path / 'o'}",
                                                       "eval.losses=[L2, Watson-DFT]", "eval.colorspaces=[RGB]"])
    assert set(res["scores"]) == {"Human", "L2", "Watson-DFT"}
    assert set(res["scores"]["L2"]) == {"traditional", "cnn", "superres", "deblur", "frameinterp", "color", "mean"}
