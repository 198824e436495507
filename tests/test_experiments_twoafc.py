"""2AFC tuning under faults and misuse: a killed or extended tuning run resumes exactly, a resume with other
settings is refused, and train and test on the same config keep each other's results."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT

import genloss
from genloss.data.bapps import TwoAFCDataset, make_synthetic_bapps
from genloss.experiments import test as run_test
from genloss.experiments import train as run_train
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
    args = [f"data.root={tmp_path / 'data'}", f"output.dir={tmp_path / 'run'}", "tune.epochs=1", "tune.epochs_decay=1"]
    first = run_train(ROOT / "configs" / "2afc_tune_smoke.yaml", args)
    assert first["resumed_from"] is None and len(first["history"]) == 2
    # a finished run re-run: nothing left to tune, the log still has every epoch once
    again = run_train(ROOT / "configs" / "2afc_tune_smoke.yaml", args)
    assert again["resumed_from"] == first["files"]["checkpoint"] and again["history"] == first["history"]
    with open(again["files"]["log"]) as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2]


# ------------------------------------------------------------------------------------------------
# train and test on the same config; resuming with other settings (real processes and files)
# ------------------------------------------------------------------------------------------------
TUNE = ROOT / "configs" / "2afc_tune_smoke.yaml"
EVAL = ROOT / "configs" / "2afc_eval_smoke.yaml"
WEIGHT_FILE = "rgb_watson_dct_trial0.pth"


def _genloss(*args, wait: bool = True):
    """``genloss ARGS`` in a new Python process running this checkout's code."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "genloss.cli", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _log(run: Path) -> list[dict[str, float]]:
    with open(run / "train_log.csv") as fh:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "weights" / WEIGHT_FILE, weights_only=True)


def _assert_same_run(resumed: Path, straight: Path) -> None:
    """Same lr column, same per-epoch losses and the same tuned weights as the uninterrupted run."""
    a, b = _log(resumed), _log(straight)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    assert [r["lr"] for r in a] == pytest.approx([r["lr"] for r in b], rel=1e-12)
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-5)
    wa, wb = _weights(resumed), _weights(straight)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6), k


def test_test_on_a_tune_config_evaluates_the_tuned_weights_and_keeps_the_tuning_scores(tmp_path):
    """The issue: `test` on a tune config scored every loss with the authors' weights and replaced the
    tune's before/after scores. Now it evaluates the weights train wrote, into scores.* of its own."""
    args = [f"data.root={tmp_path / 'data'}", f"output.dir={tmp_path / 'run'}", "tune.epochs=2", "tune.epochs_decay=1"]
    r = _genloss("train", "--config", TUNE, *args)
    assert r.returncode == 0, r.stderr
    trained = json.loads(r.stdout)
    tuning = {n: (tmp_path / "run" / n).read_bytes() for n in ("tune_scores.csv", "tune_scores.json")}
    assert json.loads(tuning["tune_scores.json"])["kind"] == "tuning"
    r = _genloss("test", "--config", TUNE, *args)
    assert r.returncode == 0, r.stderr
    tested = json.loads(r.stdout)
    # the tuning's files are untouched; the test wrote its own
    assert {n: (tmp_path / "run" / n).read_bytes() for n in tuning} == tuning
    assert tested["files"]["json"] == str(tmp_path / "run" / "scores.json")
    saved = json.loads((tmp_path / "run" / "scores.json").read_text())
    assert saved["kind"] == "tuned" and set(saved["scores"]) == {"Human", "Watson-DCT (tuned)"}
    with open(tmp_path / "run" / "scores.csv") as fh:
        assert {row["loss"] for row in csv.DictReader(fh)} == {"Human", "Watson-DCT (tuned)"}
    # the tuned weights score what the tuning reported after tuning (not the untuned 0.26, nor the authors')
    assert saved["scores"]["Watson-DCT (tuned)"]["color"]["score"] == pytest.approx(
        trained["after"]["color"]["score"], abs=1e-6)
    assert saved["weights"] == str(tmp_path / "run" / "weights" / WEIGHT_FILE)
    # running test again is fine (same kind of results)
    assert _genloss("test", "--config", TUNE, *args).returncode == 0


def test_train_on_an_eval_config_refuses_naming_test_and_leaves_the_evaluation(tmp_path):
    args = [f"data.root={tmp_path / 'data'}", f"output.dir={tmp_path / 'eval'}", "eval.losses=[L2]",
            "eval.colorspaces=[RGB]"]
    assert _genloss("test", "--config", EVAL, *args).returncode == 0
    before = _files(tmp_path / "eval")
    r = _genloss("train", "--config", EVAL, *args)
    assert r.returncode == 1 and r.stdout == ""
    assert "no tune: section" in r.stderr and "genloss test --config" in r.stderr
    assert _files(tmp_path / "eval") == before  # no 20-epoch Watson-DFT tune, no replaced scores
    # a fresh output.dir is not even created
    r = _genloss("train", "--config", EVAL, f"data.root={tmp_path / 'data'}", f"output.dir={tmp_path / 'new'}")
    assert r.returncode == 1 and not (tmp_path / "new").exists()


def test_test_on_a_tune_config_refuses_missing_unfinished_or_foreign_weights(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    args = [f"data.root={data}", f"output.dir={run}", "tune.epochs=2", "tune.epochs_decay=0", "tune.progress=false"]
    with pytest.raises(FileNotFoundError, match="no tuned weights.*genloss train"):
        run_test(TUNE, args)
    assert not (run / "scores.json").exists()
    run_train(TUNE, args)
    files = _files(run)
    # the config now describes a longer tuning than the one in output.dir
    with pytest.raises(ValueError, match=r"not finished \(2 of 4 epochs"):
        run_test(TUNE, [*args, "tune.epochs=4"])
    # settings that change what the tuned loss measures
    with pytest.raises(CheckpointError, match="tune.original_input_range: False in the checkpoint, True now"):
        run_test(TUNE, [*args, "tune.original_input_range=true"])
    # weights that are not the ones the tuning ends with (another run's, or a train killed before writing them)
    assert _files(run) == files
    weights = run / "weights" / WEIGHT_FILE
    tampered = {k: v + 1 for k, v in _weights(run).items()}
    torch.save(tampered, weights)
    with pytest.raises(ValueError, match="are not the weights that .*tune_last.ckpt ends with"):
        run_test(TUNE, args)
    assert not (run / "scores.json").exists()
    run_train(TUNE, args)  # a finished tuning run again rewrites its weights
    assert run_test(TUNE, args)["scores"]["Watson-DCT (tuned)"]


def test_no_command_replaces_results_of_another_kind(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    tune = [f"data.root={data}", f"output.dir={run}", "tune.epochs=1", "tune.epochs_decay=0", "tune.progress=false"]
    run_train(TUNE, tune)
    run_test(TUNE, tune)
    files = _files(run)
    # an evaluation of losses pointed at the tuning's folder would replace the tuned weights' scores
    with pytest.raises(ValueError, match="holds an evaluation of tuned weights.*another output.dir"):
        run_test(EVAL, [f"data.root={tmp_path / 'edata'}", f"output.dir={run}", "eval.losses=[L1]",
                        "eval.colorspaces=[RGB]", "eval.progress=false"])
    assert _files(run) == files
    # the before/after scores an earlier version's train wrote as scores.json are not replaced either
    (run / "scores.json").write_text(json.dumps({"scores": {"Watson-DCT (before)": {}, "Watson-DCT (tuned)": {}}}))
    with pytest.raises(ValueError, match="holds the before/after scores of a tuning run"):
        run_test(TUNE, tune)
    # a config with both sections is ambiguous for both commands
    for command in (run_train, run_test):
        with pytest.raises(ValueError, match="both an eval: and a tune: section"):
            command(TUNE, [*tune, "eval.losses=[L1]"])


def test_resume_with_another_lr_is_refused_naming_it_and_leaves_every_file(tmp_path):
    """The issue: the new tune.lr was ignored without a word (and an epoch ran at lr 0)."""
    base = [f"data.root={tmp_path / 'data'}", f"output.dir={tmp_path / 'run'}", "tune.epochs_decay=0"]
    assert _genloss("train", "--config", TUNE, *base, "tune.epochs=3").returncode == 0
    files = _files(tmp_path / "run")
    r = _genloss("train", "--config", TUNE, *base, "tune.epochs=6", "tune.lr=0.001")
    assert r.returncode == 1 and r.stdout == ""
    assert "tune.lr: 0.1 in the checkpoint, 0.001 now" in r.stderr and "tune.resume=false" in r.stderr
    assert _files(tmp_path / "run") == files
    # other settings that change the tuning are named as well; a new device or progress setting is not one
    r = _genloss("train", "--config", TUNE, *base, "tune.epochs=3", "tune.batch_size=16", "tune.head=bce-rank")
    assert r.returncode == 1 and "tune.batch_size: 32 in the checkpoint, 16 now" in r.stderr
    assert "tune.head: 'weighted-sigmoid' in the checkpoint, 'bce-rank' now" in r.stderr
    assert _files(tmp_path / "run") == files
    # resume=false starts over with the new settings
    r = _genloss("train", "--config", TUNE, *base, "tune.epochs=2", "tune.lr=0.001", "tune.resume=false")
    assert r.returncode == 0, r.stderr
    assert [row["lr"] for row in _log(tmp_path / "run")] == [0.001, 0.001]


def test_adding_epochs_to_a_finished_run_equals_an_uninterrupted_run(tmp_path):
    """3 epochs, then the same run given 6 (+2 of decay): the lr column and the weights of one run of 6 + 2
    (before the fix, the 4th epoch ran at lr 0: the checkpoint's optimizer held its schedule's next rate)."""
    data = f"data.root={tmp_path / 'data'}"
    run_train(TUNE, [data, f"output.dir={tmp_path / 'straight'}", "tune.epochs=6", "tune.epochs_decay=2"])
    stopped = [data, f"output.dir={tmp_path / 'run'}"]
    run_train(TUNE, [*stopped, "tune.epochs=3", "tune.epochs_decay=0"])
    result = run_train(TUNE, [*stopped, "tune.epochs=6", "tune.epochs_decay=2"])
    assert result["resumed_from"] is not None
    assert [r["lr"] for r in _log(tmp_path / "run")] == pytest.approx([0.1] * 6 + [0.1 * 2 / 3, 0.1 / 3])
    _assert_same_run(tmp_path / "run", tmp_path / "straight")


def test_a_schedule_that_disagrees_with_the_finished_epochs_is_refused(tmp_path):
    args = [f"data.root={tmp_path / 'data'}", f"output.dir={tmp_path / 'run'}"]
    run_train(TUNE, [*args, "tune.epochs=2", "tune.epochs_decay=1"])  # epoch 3 decayed
    files = _files(tmp_path / "run")
    # more epochs after the decay began: the run would not be the one a 4 + 1 schedule describes
    with pytest.raises(CheckpointError, match=r"epoch 3 at lr 0\.05, which this schedule would run at lr 0\.1 "
                                              r"\(tune\.epochs: 2 in the checkpoint, 4 now\)"):
        run_train(TUNE, [*args, "tune.epochs=4", "tune.epochs_decay=1"])
    with pytest.raises(CheckpointError, match="has finished 3 epochs, more than tune.epochs \\+ tune.epochs_decay = 2"):
        run_train(TUNE, [*args, "tune.epochs=2", "tune.epochs_decay=0"])
    assert _files(tmp_path / "run") == files


def test_a_killed_tuning_process_resumed_equals_an_uninterrupted_run(tmp_path):
    """kill -9 during epoch k+1 of a real `genloss train`, the same command again: the lr column and the
    tuned weights of one uninterrupted run."""
    data = f"data.root={tmp_path / 'data'}"
    schedule = ["tune.epochs=12", "tune.epochs_decay=8"]
    straight = _genloss("train", "--config", TUNE, data, f"output.dir={tmp_path / 'straight'}", *schedule)
    assert straight.returncode == 0, straight.stderr
    run = tmp_path / "run"
    args = ["train", "--config", TUNE, data, f"output.dir={run}", *schedule]
    proc = _genloss(*args, wait=False)
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if (run / "train_log.csv").is_file() and len((run / "train_log.csv").read_text().splitlines()) > 3:
                break  # header + 3 epochs
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = torch.load(run / "checkpoints" / "tune_last.ckpt", weights_only=True)["epoch"]
    assert 3 <= done < 20 and not (run / "weights").exists()
    r = _genloss(*args)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["resumed_from"] == str(run / "checkpoints" / "tune_last.ckpt")
    _assert_same_run(run, tmp_path / "straight")


def test_a_checkpoint_of_an_earlier_version_continues_with_the_schedule(dataset, tmp_path):
    """Checkpoints written before the settings were saved: their optimizer holds the rate the old scheduler
    gave the next epoch (0 after its last epoch); a resume with more epochs sets the schedule's rate."""
    ckpt = tmp_path / "tune_last.ckpt"

    def tune(epochs, checkpoint=None, lr=0.05):
        loss = genloss.get_loss("Watson-DCT", pretrained=False, deterministic=True, reduction="none")
        return loss, tune_loss(loss, dataset, epochs=epochs, epochs_decay=0, lr=lr, batch_size=16, progress=False,
                               checkpoint=checkpoint)

    straight, straight_result = tune(4)
    tune(2, ckpt)
    state = torch.load(ckpt, weights_only=True)
    del state["settings"], state["schedule"]
    for group in state["optimizer"]["param_groups"]:
        group["lr"] = 0.0
    torch.save(state, ckpt)
    # without saved settings the learning rates of its finished epochs still tell another lr
    with pytest.raises(CheckpointError, match=r"epoch 1 at lr 0\.05, which this schedule would run at lr 0\.01"):
        tune(4, ckpt, lr=0.01)
    resumed, result = tune(4, ckpt)
    assert [r["lr"] for r in result["history"]] == [0.05] * 4
    assert result["history"] == pytest.approx(straight_result["history"])
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
