"""2AFC tuning under faults: a killed tuning run resumes from its last finished epoch, exactly."""

from __future__ import annotations

import csv

import pytest
import torch

import genloss
from genloss.data.bapps import TwoAFCDataset, make_synthetic_bapps
from genloss.experiments.common import CheckpointError
from genloss.experiments.twoafc import tune_loss


class _Killed(Exception):
    pass


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> TwoAFCDataset:
    root = make_synthetic_bapps(tmp_path_factory.mktemp("bapps"), {"train/mix": 32}, size=16, mixed=["mix"], seed=1)
    return TwoAFCDataset(root, ["train/mix"], load_size=None)


def _tune(dataset, checkpoint=None, log=None):
    loss = genloss.get_loss("Watson-DCT", pretrained=False, deterministic=True, reduction="none")
    result = tune_loss(loss, dataset, epochs=2, epochs_decay=2, lr=0.05, batch_size=16, progress=False,
                       checkpoint=checkpoint, log=log)
    return loss, result


def test_interrupted_tuning_resumes_from_the_last_epoch_and_equals_an_uninterrupted_run(dataset, tmp_path):
    straight, straight_result = _tune(dataset)
    ckpt = tmp_path / "tune_last.ckpt"

    def die_after_epoch_2(record):
        if record["epoch"] == 2:
            raise _Killed  # after the checkpoint of epoch 2 was written, as a kill at that moment

    with pytest.raises(_Killed):
        _tune(dataset, ckpt, log=die_after_epoch_2)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    logged = []
    resumed, result = _tune(dataset, ckpt, log=logged.append)
    assert result["resumed_from"] == str(ckpt)
    assert [r["epoch"] for r in logged] == [1, 2, 3, 4]  # the finished epochs are logged again, then the rest
    assert result["history"] == pytest.approx(straight_result["history"])
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_tuning_checkpoint_of_another_loss_is_refused_and_kept(dataset, tmp_path):
    ckpt = tmp_path / "tune_last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(3)}, "head": {}, "optimizer": {}, "scheduler": {}, "generator": None,
                "epoch": 1, "history": []}, ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="does not fit the model"):
        _tune(dataset, ckpt)
    assert ckpt.read_bytes() == before


def test_train_writes_the_log_again_on_resume(tmp_path):
    from conftest import ROOT

    from genloss.experiments import train as run_train

    args = [f"data.root={tmp_path / 'data'}", f"output.dir={tmp_path / 'run'}", "tune.epochs=1", "tune.epochs_decay=1"]
    first = run_train(ROOT / "configs" / "2afc_tune_smoke.yaml", args)
    assert first["resumed_from"] is None and len(first["history"]) == 2
    # a finished run re-run: nothing left to tune, the log still has every epoch once
    again = run_train(ROOT / "configs" / "2afc_tune_smoke.yaml", args)
    assert again["resumed_from"] == first["files"]["checkpoint"] and again["history"] == first["history"]
    with open(again["files"]["log"]) as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2]
