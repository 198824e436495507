"""VAE experiment: data (digits, MNIST/CelebA folders), networks, Lightning plumbing, smoke runs of every VAE config."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genloss.data.celeba import CelebACrop, celeba_dataset
from genloss.data.digits import DigitsDataset, load_digit_images
from genloss.data.mnist import mnist_dataset, pad_or_crop_to, save_image_folder
from genloss.experiments import test as run_test
from genloss.experiments import train as run_train
from genloss.experiments.common import apply_smoke, build_loss, resolve_resume, save_image_grid
from genloss.experiments.vae import CelebAVAE, MnistVAE, kl_divergence, reconstruction_weight

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SMOKE = CONFIGS / "vae_digits_smoke.yaml"
QUIET = ["trainer.progress_bar=false", "trainer.enable_model_summary=false"]


def _csv_rows(log_dir: str) -> list[dict[str, str]]:
    with open(Path(log_dir) / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def test_digits_look_like_mnist():
    images, labels = load_digit_images(28)
    assert images.shape == (1797, 1, 28, 28) and images.dtype == torch.float32 and labels.shape == (1797,)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    # strokes live in the central 20x20 box, the 4-pixel border is black as in MNIST
    assert float(images[..., :4, :].abs().max()) == 0 and float(images[..., :, -4:].abs().max()) == 0
    # real digits: the mean "1" is narrower than the mean "0" (less ink in the left and right thirds)
    zero, one = images[labels == 0].mean(0)[0], images[labels == 1].mean(0)[0]
    sides = np.r_[4:10, 18:24]
    assert float(one[:, sides].mean()) < 0.6 * float(zero[:, sides].mean())
    # 32x32 is the same digit padded by 2 more pixels
    assert torch.equal(load_digit_images(32)[0][:, :, 2:30, 2:30], images)
    with pytest.raises(ValueError, match="size"):
        load_digit_images(16)


def test_digit_splits_are_disjoint_and_fixed():
    train, test = DigitsDataset("train"), DigitsDataset("test")
    assert len(train) + len(test) == 1797
    flat_train = {tuple(x.flatten().tolist()) for x in train.images[:200]}
    assert not any(tuple(x.flatten().tolist()) in flat_train for x in test.images)
    assert torch.equal(DigitsDataset("test").images, test.images)  # same permutation every time
    assert len(DigitsDataset("train", limit=10)) == 10
    with pytest.raises(ValueError, match="split"):
        DigitsDataset("val")


def test_mnist_folder_roundtrip(tmp_path):
    images, labels = load_digit_images(28)
    save_image_folder(images[:12], labels[:12], tmp_path / "train")
    ds = mnist_dataset(tmp_path, "train", size=32)
    assert len(ds) == 12
    x, y = ds[0]
    assert x.shape == (1, 32, 32)
    # the PNGs hold the digits in 8 bits; reading them back and padding by 2 gives the same image
    order = np.argsort(labels[:12].numpy(), kind="stable")  # the folder lists labels in sorted order
    assert y == int(labels[order[0]])
    assert torch.allclose(x[:, 2:30, 2:30], images[order[0]], atol=0.5 / 255 + 1e-6)
    assert float(x[:, :2].abs().max()) == 0
    with pytest.raises(FileNotFoundError, match="download"):
        mnist_dataset(tmp_path, "test")


def test_pad_or_crop_centres():
    img = torch.arange(16.0).view(1, 4, 4)
    assert torch.equal(pad_or_crop_to(6)(img)[:, 1:5, 1:5], img)
    assert torch.equal(pad_or_crop_to(2)(img), img[:, 1:3, 1:3])


def test_celeba_crop_is_square_by_default():
    crop = CelebACrop(64)
    assert crop.box(178, 218) == (25, 45, 153, 173)  # 128 x 128 face box
    left, top, right, bottom = CelebACrop(64, "paper").box(178, 218)
    assert (right - left, bottom - top) == (128, 133)  # the published, non-square box
    assert CelebACrop(64).box(100, 60) == (20, 0, 80, 60)  # other sizes: centre square
    with pytest.raises(ValueError, match="crop"):
        CelebACrop(64, "face-ish")


def _write_faces(folder: Path, n: int) -> None:
    """Photographs from scikit-image cut to the 178x218 size of CelebA's aligned faces."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()][i % 3]
        y, x = 10 * (i // 3), 15 * (i // 3)
        Image.fromarray(img[y:y + 218, x:x + 178]).save(folder / f"{i:06d}.jpg")


def test_celeba_folder(tmp_path):
    _write_faces(tmp_path / "img", 10)
    train, test = celeba_dataset(tmp_path, "train"), celeba_dataset(tmp_path, "test")
    assert len(train) == 9 and len(test) == 1
    assert set(train.indices).isdisjoint(test.indices)
    x, label = train[0]
    assert x.shape == (3, 64, 64) and label == 0 and 0 <= float(x.min()) and float(x.max()) <= 1
    with pytest.raises(FileNotFoundError, match="CelebA"):
        celeba_dataset(tmp_path / "missing")


# ------------------------------------------------------------------------------------------------
# networks and objective
# ------------------------------------------------------------------------------------------------
def test_vae_networks():
    x = load_digit_images(32)[0][:4]
    vae = MnistVAE(latent_dim=2, hidden=32, base_channels=4)
    recon, mu, logvar, z = vae(x)
    assert recon.shape == x.shape and mu.shape == logvar.shape == z.shape == (4, 2)
    assert 0 <= float(recon.min()) and float(recon.max()) <= 1
    (recon.sum() + kl_divergence(mu, logvar).sum()).backward()
    assert all(p.grad is not None for p in vae.parameters())
    with pytest.raises(ValueError, match="expected images"):
        vae(torch.rand(2, 3, 32, 32))
    faces = CelebAVAE(latent_dim=8, hidden=16, base_channels=4)
    assert faces(torch.rand(2, 3, 64, 64))[0].shape == (2, 3, 64, 64)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in faces.decoder)
    published = CelebAVAE(latent_dim=8, hidden=16, base_channels=4, decoder_batchnorm=False)
    assert n_bn == 2 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in published.decoder)


def test_kl_divergence_matches_torch_distributions():
    mu, logvar = torch.randn(3, 5), torch.randn(3, 5)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(5), torch.ones(5))
    expected = torch.distributions.kl_divergence(q, p).sum(1)
    assert torch.allclose(kl_divergence(mu, logvar), expected, atol=1e-5)


def test_reconstruction_weight_uses_the_papers_values():
    assert reconstruction_weight({"name": "ssim"}, "mnist") == pytest.approx(np.exp(9))
    assert reconstruction_weight({"name": "SSIM"}, "celeba") == pytest.approx(np.exp(13))
    assert reconstruction_weight({"name": "Watson-fft"}, "digits") == pytest.approx(1.0)
    assert reconstruction_weight({"name": "L1", "log_weight": 2}, "mnist") == pytest.approx(np.exp(2))
    with pytest.raises(ValueError, match="log_weight"):
        reconstruction_weight({"name": "L1"}, "mnist")


# ------------------------------------------------------------------------------------------------
# plumbing
# ------------------------------------------------------------------------------------------------
def test_resolve_resume(tmp_path):
    assert resolve_resume("auto", tmp_path) is None
    assert resolve_resume(False, tmp_path) is None
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_resume(True, tmp_path)
    (tmp_path / "last.ckpt").write_bytes(b"x")
    assert resolve_resume("auto", tmp_path) == str(tmp_path / "last.ckpt")
    assert resolve_resume(None, tmp_path) is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_resume(str(tmp_path / "other.ckpt"), tmp_path)


def test_save_image_grid(tmp_path):
    x = load_digit_images(28)[0][:10]
    path = save_image_grid(x, tmp_path / "a" / "grid.png", nrow=5, padding=2)
    with Image.open(path) as im:
        assert im.mode == "L" and im.size == (5 * 30 + 2, 2 * 30 + 2)
        first = np.asarray(im)[2:30, 2:30] / 255.0
    assert np.allclose(first, x[0, 0].numpy(), atol=0.5 / 255 + 1e-6)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        save_image_grid(torch.rand(2, 2, 8, 8), tmp_path / "b.png")


def test_build_loss_and_smoke_section():
    import genloss

    assert isinstance(build_loss({"name": "L2", "reduction": "sum"}), torch.nn.Module)
    wrapped = build_loss({"name": "L1", "corrwise": {"flow": "coarse2fine", "scale_clip": 0.1}})
    assert isinstance(wrapped, genloss.CorrWise)
    with pytest.raises(ValueError, match="did you mean 'colorspace'"):
        build_loss({"name": "L1", "colorspce": "LA"})
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss({"name": "Watson-XYZ"})
    cfg = {"trainer": {"max_steps": 100}, "smoke": {"enabled": False, "overrides": {"trainer.max_steps": 3}}}
    assert apply_smoke(cfg) == cfg
    cfg["smoke"]["enabled"] = True
    smoke = apply_smoke(cfg)
    assert smoke["trainer"]["max_steps"] == 3 and apply_smoke(smoke) == smoke


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_step=3", "did you mean 'max_steps'"),
        ("data.kind=imagenet", "data.kind must be one of"),
        ("loss.name=NoSuchLoss", "unknown loss"),
        ("loss.name=L1", "set loss.log_weight"),
        ("modle.latent_dim=3", "did you mean 'model'"),
        ("loss.corrwise=3", "loss.corrwise must be a mapping"),
    ],
)
def test_bad_config_gives_a_clear_error(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        run_train(SMOKE, [f"output.dir={tmp_path}", override])
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


# ------------------------------------------------------------------------------------------------
# smoke runs
# ------------------------------------------------------------------------------------------------
def test_digits_smoke_train_test_and_resume(tmp_path):
    out = [f"output.dir={tmp_path}", *QUIET]
    first = run_train(SMOKE, [*out, "trainer.max_steps=4"])
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert first["global_step"] == 4 and first["resumed_from"] is None and ckpt.is_file()
    assert _ckpt(ckpt)["global_step"] == 4
    rows = _csv_rows(first["log_dir"])
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert any(r.get("val/loss") for r in rows)  # the epoch ended after 4 steps: validation ran
    assert list((tmp_path / "logs" / "tensorboard").rglob("events.out.tfevents*"))
    for kind in ("reconstructions", "samples"):
        with Image.open(first["images"][kind]) as im:
            assert im.mode == "L" and min(im.size) > 32

    # running the same command again continues from last.ckpt (resume: auto) up to the new max_steps
    second = run_train(SMOKE, [*out, "trainer.max_steps=8"])
    assert second["resumed_from"] == str(ckpt) and second["global_step"] == 8
    state = _ckpt(ckpt)
    assert state["global_step"] == 8
    adam_steps = {int(s["step"]) for s in state["optimizer_states"][0]["state"].values()}
    assert adam_steps == {8}  # the optimizer state was restored, not restarted
    assert second["log_dir"] != first["log_dir"]  # a new CSV version for the resumed run

    result = run_test(SMOKE, out)
    metrics = json.loads(Path(result["metrics_file"]).read_text())
    assert metrics["n"] == 16 and metrics["loss_name"] == "SSIM"
    assert 0 <= metrics["ssim"] <= 1 and np.isfinite(metrics["recon"]) and metrics["kl"] >= 0
    for key in ("reconstructions", "samples", "latent"):
        assert Path(result[key]).is_file()
    with Image.open(result["latent"]) as im:  # a 16 x 16 sweep of the 2-D latent space
        assert im.size == (16 * 34 + 2, 16 * 34 + 2)


def test_interrupted_training_resumes_without_losing_steps(tmp_path):
    import lightning as L

    from genloss.experiments import vae

    class Interrupt(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 3:
                raise RuntimeError("simulated crash")

    from genloss.experiments.config import load_config

    cfg = load_config(SMOKE, [f"output.dir={tmp_path}", *QUIET, "trainer.max_steps=6"])
    original_fit = vae.fit
    vae.fit = lambda *a, callbacks=(), **k: original_fit(*a, callbacks=[*callbacks, Interrupt()], **k)
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            vae.train(cfg)
    finally:
        vae.fit = original_fit
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    saved = _ckpt(ckpt)
    assert saved["global_step"] == 3
    resumed = vae.train(cfg)
    assert resumed["resumed_from"] == str(ckpt) and resumed["global_step"] == 6
    # the resumed run starts from the saved weights: its first logged step continues at step 4
    rows = _csv_rows(resumed["log_dir"])
    assert int(rows[0]["step"]) == 3  # Lightning logs step indices from 0: the 4th step is 3


def test_corrwise_wrapped_loss_trains(tmp_path):
    result = run_train(SMOKE, [f"output.dir={tmp_path}", *QUIET, "trainer.max_steps=2", "data.limit_train=16",
                               "loss.corrwise={flow: coarse2fine, scale_clip: 0.1}"])
    assert result["global_step"] == 2 and np.isfinite(result["metrics"]["train/loss"])


def test_mnist_config_on_a_local_mnist_folder(tmp_path, reference_weights):
    images, labels = load_digit_images(28)
    save_image_folder(images[:32], labels[:32], tmp_path / "mnist" / "train")
    save_image_folder(images[32:40], labels[32:40], tmp_path / "mnist" / "test")
    out = [f"output.dir={tmp_path / 'run'}", "smoke.enabled=true", "data.kind=mnist",
           f"data.root={tmp_path / 'mnist'}", "trainer.max_steps=2", *QUIET]
    result = run_train(CONFIGS / "vae_mnist.yaml", out)
    assert result["global_step"] == 2 and np.isfinite(result["metrics"]["train/loss"])
    metrics = run_test(CONFIGS / "vae_mnist.yaml", out)["metrics"]
    assert metrics["n"] == 8 and metrics["loss_name"] == "Watson-DFT"


def test_celeba_config_on_a_local_face_folder(tmp_path, reference_weights):
    _write_faces(tmp_path / "faces", 12)
    out = [f"output.dir={tmp_path / 'run'}", "smoke.enabled=true", "data.kind=celeba",
           f"data.root={tmp_path / 'faces'}",
           "data.size=16", "data.batch_size=4", "loss.colorspace=RGB", "trainer.max_steps=2", *QUIET]
    result = run_train(CONFIGS / "vae_celeba.yaml", out)
    assert result["global_step"] == 2
    with Image.open(result["images"]["samples"]) as im:
        assert im.mode == "RGB"
    metrics = run_test(CONFIGS / "vae_celeba.yaml", out)["metrics"]
    assert metrics["n"] == 1  # 10 % of 12 images


@pytest.mark.parametrize("name", ["vae_mnist.yaml", "vae_celeba.yaml"])
def test_full_configs_run_as_smoke_tests(tmp_path, reference_weights, name):
    result = run_train(CONFIGS / name, ["smoke.enabled=true", f"output.dir={tmp_path}", *QUIET])
    assert result["global_step"] == 4 and (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_same_trainer_section_builds_ddp_across_devices_and_nodes(tmp_path):
    from lightning.pytorch.strategies import DDPStrategy

    from genloss.experiments.common import build_trainer

    trainer = build_trainer({"accelerator": "cpu", "devices": 2, "num_nodes": 1, "strategy": "ddp",
                             "progress_bar": False}, tmp_path)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 2
    assert [type(lg).__name__ for lg in trainer.loggers] == ["CSVLogger", "TensorBoardLogger"]
    with pytest.raises(ValueError, match="callbacks"):
        build_trainer({"callbacks": []}, tmp_path)  # set by genloss, not by the config


# ------------------------------------------------------------------------------------------------
# checkpoints under faults
# ------------------------------------------------------------------------------------------------
def _genloss_process(*args: str) -> subprocess.Popen:
    """``genloss ARGS`` in a real child process (the code of this checkout, as the tests import it)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "genloss.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # two real processes (each imports Lightning): ~15 s
def test_kill_9_at_any_moment_keeps_a_loadable_checkpoint_and_the_same_command_resumes(tmp_path):
    every = 3
    args = ["train", "--config", str(SMOKE), f"output.dir={tmp_path}", *QUIET, "trainer.max_steps=100000",
            f"trainer.checkpoint_every_n_steps={every}", "data.limit_train=32", "images.every_n_epochs=1000"]
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    proc = _genloss_process(*args)
    try:
        deadline = time.monotonic() + 120
        seen: set[int] = set()
        while len(seen) < 3 and time.monotonic() < deadline and proc.poll() is None:
            if ckpt.is_file():
                seen.add(ckpt.stat().st_mtime_ns)  # three writes seen: kill in the middle of the run
            time.sleep(0.01)
        assert len(seen) >= 3, (proc.poll(), proc.stderr.read() if proc.poll() is not None else "still running")
        time.sleep(random.Random(0).uniform(0, 0.3))  # any moment, also during a write
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # never empty or partial
    step = state["global_step"]
    # 32 digits in batches of 16: an epoch is 2 steps, so every epoch end and every 3rd step was saved
    assert step > 0 and (step % every == 0 or step % 2 == 0)
    target = step + 3
    again = _genloss_process(*[a if not a.startswith("trainer.max_steps=") else f"trainer.max_steps={target}"
                               for a in args])
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    summary = json.loads(stdout)  # stdout holds the summary only
    assert summary["resumed_from"] == str(ckpt) and summary["global_step"] == target
    assert f"resuming from {ckpt}" in stderr
    assert not list(ckpt.parent.glob(".*.tmp"))  # a temporary file left by the kill was removed


def test_checkpoint_write_interrupted_midway_leaves_the_old_file(tmp_path, monkeypatch):
    from genloss.experiments import common

    path = tmp_path / "checkpoints" / "last.ckpt"
    common.atomic_torch_save({"global_step": 1}, path)
    before = path.read_bytes()
    real_save = torch.save

    def half_then_die(obj, fh, *a, **k):
        real_save(obj, fh, *a, **k)
        fh.truncate(7)
        raise KeyboardInterrupt  # as a Ctrl-C in the middle of the write

    monkeypatch.setattr(torch, "save", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        common.atomic_torch_save({"global_step": 2}, path)
    assert path.read_bytes() == before and list(path.parent.iterdir()) == [path]
    monkeypatch.setattr(torch, "save", real_save)

    # the temporary file is in the target's folder, whatever TMPDIR says: os.replace stays atomic
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((a, b)), real_replace(a, b)))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "elsewhere"))
    common.atomic_torch_save({"global_step": 3}, path)
    assert Path(replaced[0][0]).parent == path.parent
    assert torch.load(path, weights_only=True) == {"global_step": 3}


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("damage", ["architecture", "other_loss", "empty", "truncated", "malicious", "not_lightning"])
def test_failed_resume_names_the_file_and_leaves_it_unchanged(tmp_path, damage):
    out = [f"output.dir={tmp_path}", *QUIET, "trainer.max_steps=2"]
    run_train(SMOKE, out)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    good = ckpt.read_bytes()
    extra: list[str] = []
    if damage == "architecture":
        extra, message = ["model.hidden=64"], "does not fit the model"
    elif damage == "other_loss":  # the same model, another loss setting: resuming would mix two runs
        extra, message = ["loss.log_weight=5"], "other settings: loss.log_weight: 'paper' in the checkpoint, 5 now"
    elif damage == "empty":
        ckpt.write_bytes(b"")
        message = "is empty"
    elif damage == "truncated":
        ckpt.write_bytes(good[: len(good) // 2])
        message = "truncated or not a PyTorch checkpoint"
    elif damage == "malicious":
        torch.save({"state_dict": {}, "payload": _Exploit()}, ckpt)
        message = "weights_only=True refuses"
    else:
        torch.save({"weights": torch.zeros(3)}, ckpt)
        message = "not a Lightning checkpoint"
    before = ckpt.read_bytes()
    from genloss.experiments.common import CheckpointError

    with pytest.raises(CheckpointError, match=message) as info:
        run_train(SMOKE, [*out, "trainer.max_steps=4", *extra])
    assert str(ckpt) in str(info.value)
    assert ckpt.read_bytes() == before  # nothing saved over it


def test_checkpoint_saves_do_not_warn_about_weights_only(tmp_path):
    """Lightning warned '`weights_only` was not set' on every save of last.ckpt (read by a new user as the
    opposite of the weights_only=True loading genloss promises): the saves say what they write."""
    import logging

    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("lightning.pytorch")  # (Lightning logs it with log.info, not a warning)
    handler, level = Collect(level=logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        run_train(SMOKE, [f"output.dir={tmp_path}", *QUIET, "trainer.max_steps=2"])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and messages  # (the handler saw Lightning's logs)
    assert not [m for m in messages if "weights_only" in m]


def test_test_refuses_a_checkpoint_of_another_loss_but_not_of_another_optimiser(tmp_path):
    """`genloss test ... loss.X=...` scored whatever checkpoint was in output.dir under this config's name."""
    from genloss.experiments.common import CheckpointError

    out = [f"output.dir={tmp_path}", *QUIET, "trainer.max_steps=2"]
    run_train(SMOKE, out)
    with pytest.raises(CheckpointError, match="loss.log_weight: 'paper' in the checkpoint, 5 now.*would report"):
        run_test(SMOKE, [*out, "loss.log_weight=5"])
    assert "recon" in run_test(SMOKE, [*out, "optim.lr=0.5"])["metrics"]


def test_setting_differences_name_each_changed_key_and_ignore_file_locations():
    from genloss.experiments.common import _plain, _setting_differences

    saved = {"loss": {"name": "SSIM", "weights_dir": "/a", "reduction": "sum"}, "image_shape": (1, 32, 32)}
    same = {"loss": {"name": "SSIM", "weights_dir": "/elsewhere", "reduction": "sum"}, "image_shape": [1, 32, 32]}
    assert _setting_differences(_plain(saved), _plain(same)) == []
    other = {"loss": {"name": "Watson-DFT", "reduction": "sum", "pretrained": True}, "image_shape": [1, 64, 64]}
    assert _setting_differences(_plain(saved), _plain(other)) == [
        "image_shape: [1, 32, 32] in the checkpoint, [1, 64, 64] now",
        "loss.name: 'SSIM' in the checkpoint, 'Watson-DFT' now",
        "loss.pretrained: not set in the checkpoint, True now",
    ]


def test_override_kinds_and_yaml_errors_name_the_override(tmp_path):
    from genloss.experiments.config import ConfigError, apply_overrides, load_config

    cfg = {"trainer": {"max_steps": 6, "devices": 1, "progress_bar": False}, "data": {"size": [32, 48]},
           "loss": {"corrwise": {"flow": "raft"}}}
    ok = apply_overrides(cfg, ["trainer.devices=auto", "data.size=32", "loss.corrwise=false",
                               "trainer.max_epochs=null", "trainer.progress_bar=true"])
    assert ok["trainer"]["devices"] == "auto" and ok["data"]["size"] == 32 and ok["loss"]["corrwise"] is False
    assert ok["trainer"]["max_epochs"] is None  # lightning.Trainer takes None there: its default
    # null only where the key takes it: Lightning's max_steps is an int (-1 = no limit)
    with pytest.raises(ConfigError, match=r"'trainer.max_steps=null': trainer.max_steps does not take null"):
        apply_overrides(cfg, ["trainer.max_steps=null"])
    with pytest.raises(ConfigError, match=r"'trainer.max_steps=abc': expected a number .* max_steps: 6"):
        apply_overrides(cfg, ["trainer.max_steps=abc"])
    with pytest.raises(ConfigError, match="'trainer.progress_bar=maybe': expected true or false"):
        apply_overrides(cfg, ["trainer.progress_bar=maybe"])
    with pytest.raises(ConfigError, match=r"'data.size=\[1': the value is not valid YAML"):
        apply_overrides(cfg, ["data.size=[1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_steps: 3\n   devices: 1\n")
    with pytest.raises(ConfigError, match=f"config file {bad} is not valid YAML at line 3"):
        load_config(bad)


def test_config_module_has_no_import_circle_and_the_library_imports_no_application_layer():
    code = (
        "import sys\n"
        "import genloss, genloss.losses, genloss.corrwise, genloss.registry, genloss.weights\n"
        "app = [m for m in sys.modules if m.split('.')[:2] in (['genloss', 'data'], ['genloss', 'experiments'],"
        " ['genloss', 'cli'], ['genloss', 'demo'])]\n"
        "assert not app, app\n"
        "from genloss.experiments.config import load_config\n"
        "cfg = load_config({'smoke': {'enabled': True, 'overrides': {'trainer.max_steps': 3}}}, ['a.b=1'])\n"
        "assert cfg['trainer']['max_steps'] == 3 and cfg['a']['b'] == 1\n"
        "assert 'genloss.experiments.common' not in sys.modules  # config needs nothing from common\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
