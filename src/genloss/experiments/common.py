"""Shared Lightning plumbing of the experiments: trainer from config, checkpoints and resume, logs, losses, PNGs.

Every training experiment (``vae``, ``toy``, ...) builds a ``LightningModule`` and calls :func:`fit`,
which reads the config's ``trainer:`` section, so the same config file runs on a CPU, one GPU or
with DDP across GPUs and nodes::

    trainer:
      accelerator: auto        # cpu | gpu | auto ...      (any lightning.Trainer argument is accepted)
      devices: auto            # 1 | 4 | [0, 1] | auto
      num_nodes: 1             # > 1 for multi-node DDP (launch with torchrun / SLURM)
      strategy: auto           # ddp | ddp_spawn | auto ...
      precision: 32-true
      max_steps: -1
      max_epochs: 10
      seed: 0                  # genloss key: seeds python, numpy, torch and dataloader workers
      resume: auto             # genloss key: auto | true | false | PATH, see resolve_resume
      checkpoint_every_n_steps: null   # genloss key: also write last.ckpt every N optimizer steps

Outputs, under ``output.dir`` (see :func:`output_dir`)::

    checkpoints/last.ckpt            model + optimizer + loop state, written at the end of every
                                     epoch, every ``checkpoint_every_n_steps`` and on an exception
                                     (Ctrl-C, an error, SLURM pre-emption signals handled by Lightning)
    logs/csv/version_N/metrics.csv   one version folder per run (a resumed run is a new version)
    logs/tensorboard/version_N/      TensorBoard events

The API is deliberately small and stable: :func:`fit`, :func:`build_trainer`,
:func:`resolve_resume`, :func:`output_dir`, :func:`apply_smoke`, :func:`build_loss`,
:func:`loss_value`, :class:`FrozenLoss`, :func:`save_image_grid`, :func:`image_grid`,
:func:`find_checkpoint`, :func:`test_device`, :func:`resolve_device`, :func:`seed_from_config`.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import itertools
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

# re-exported: the experiments import every config helper from here
from .config import apply_smoke as apply_smoke
from .config import check_keys as check_keys
from .config import section as section

#: ``trainer:`` keys that genloss interprets itself (everything else goes to ``lightning.Trainer``)
GENLOSS_TRAINER_KEYS = ("seed", "resume", "checkpoint_every_n_steps", "progress_bar")
#: ``lightning.Trainer`` arguments that :func:`build_trainer` owns and a config must not set
_MANAGED_TRAINER_ARGS = ("logger", "callbacks", "default_root_dir", "enable_checkpointing", "plugins", "self")
#: the keys of a ``loss:`` section understood by :func:`build_loss`
LOSS_KEYS = ("name", "colorspace", "pretrained", "reduction", "deterministic", "weights_dir", "kwargs", "corrwise")

LAST_CHECKPOINT = "last.ckpt"


# ------------------------------------------------------------------------------------------------
# config helpers
# ------------------------------------------------------------------------------------------------
#: top-level sections every training experiment understands (its own ones come on top)
COMMON_SECTIONS = ("experiment", "loss", "trainer", "output", "test", "smoke")


def check_config(cfg: dict[str, Any], experiment: str, sections: dict[str, Iterable[str]]) -> None:
    """Raise a ``ValueError`` naming the first unknown section or key of an experiment's config.

    ``sections`` maps the experiment's sections (e.g. ``data``, ``model``, ``optim``, ``test``) to
    their allowed keys; :data:`COMMON_SECTIONS` are allowed too (``trainer``, ``loss`` and
    ``output`` are checked where they are read). The ``loss`` section must name a loss.
    """
    check_keys(cfg, [*COMMON_SECTIONS, *sections], f"the {experiment} config")
    for name, keys in sections.items():
        check_keys(section(cfg, name), keys, name)
    if "name" not in section(cfg, "loss"):
        raise ValueError("loss.name must name a genloss loss, e.g. L1 (see genloss.list_losses())")


def output_dir(cfg: dict[str, Any], default: str) -> Path:
    """The run's output folder: ``output.dir`` of the config, else ``default`` (e.g. ``'runs/vae_mnist'``)."""
    out = section(cfg, "output")
    check_keys(out, ("dir",), "output")
    return Path(out.get("dir") or default)


# ------------------------------------------------------------------------------------------------
# trainer, checkpoints, resume
# ------------------------------------------------------------------------------------------------
def resolve_resume(resume: Any, checkpoint_dir: str | Path) -> str | None:
    """The checkpoint ``trainer.fit(ckpt_path=...)`` should continue from, or ``None`` to start fresh.

    ``resume`` is ``'auto'`` (the default: continue from ``checkpoint_dir/last.ckpt`` if it exists,
    so re-running an interrupted command picks up where it stopped), ``True``/``'last'`` (the same,
    but raise when there is nothing to resume), ``False``/``None`` (start over) or a checkpoint path.
    """
    last = Path(checkpoint_dir) / LAST_CHECKPOINT
    if resume is None or resume is False or (isinstance(resume, str) and resume.lower() in ("false", "no", "never")):
        return None
    if isinstance(resume, str) and resume.lower() == "auto":
        return str(last) if last.is_file() else None
    if resume is True or (isinstance(resume, str) and resume.lower() in ("true", "last")):
        if not last.is_file():
            raise FileNotFoundError(f"trainer.resume={resume!r} but there is no checkpoint at {last}")
        return str(last)
    if isinstance(resume, (str, Path)):
        if not Path(resume).is_file():
            raise FileNotFoundError(f"trainer.resume names {resume}, which does not exist")
        return str(resume)
    raise ValueError(f"trainer.resume must be 'auto', true, false or a checkpoint path, got {resume!r}")


#: ``trainer.checkpoint_every_n_steps`` when a config does not set it (``null`` or 0 = epoch ends only)
DEFAULT_CHECKPOINT_EVERY_N_STEPS = 100


class CheckpointError(ValueError):
    """A checkpoint cannot be used: empty, truncated, not ours, unsafe to unpickle, or another model's."""


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically: a temporary file in the same folder, fsync, ``os.replace``.

    The temporary file lives next to the target (not in ``$TMPDIR``) because ``os.replace`` is
    atomic only within one filesystem; a reader (or a kill -9 at any moment) therefore sees either
    the old or the new file, never an empty or partial one.
    """
    from .._files import atomic_write

    path = Path(path)
    # the usual mode (umask; an existing file's own), not mkstemp's 0600: see genloss._files
    with atomic_write(path, "wb", fsync=True, suffix=".tmp") as fh:
        torch.save(obj, fh)
    return path


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files a kill -9 during :func:`atomic_torch_save` left in ``folder``."""
    stale = sorted(Path(folder).glob(".*.ckpt.*.tmp")) if Path(folder).is_dir() else []
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return stale


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a Lightning checkpoint with ``weights_only=True``; a bad file raises one :class:`CheckpointError`.

    ``weights_only=True`` unpickles tensors and plain data only, so a malicious file cannot run
    code. The message names the file and says what is wrong with it.
    """
    import pickle

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); delete it, or train again into another "
                              "output.dir")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} holds objects that weights_only=True refuses to load, so it was "
                              f"not loaded (it may run code when unpickled): {first}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} ({size} bytes) is truncated or not a PyTorch checkpoint: "
                              f"{first}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"checkpoint {path} is not a Lightning checkpoint of genloss (no 'state_dict')")
    return ckpt


def check_state_dict(path: str | Path, saved: dict[str, Any], model: nn.Module) -> None:
    """Raise a :class:`CheckpointError` unless ``model`` would load ``saved`` strictly.

    Decided by ``load_state_dict`` itself, on a copy of the model: its modules' own rules apply (state
    dicts of an earlier version that lack a key a module treats as optional, the deep losses' absent
    backbone keys, a refused Adaptive state saved with another layout), and the model is not changed.
    """
    probe = copy.deepcopy(model)
    problems = []
    try:
        result = probe.load_state_dict(saved, strict=False)
    except (RuntimeError, ValueError) as e:  # shape mismatches, refused extra state
        problems.append(" ".join(str(e).split())[:400])
    else:
        missing, unexpected = result.missing_keys, result.unexpected_keys
        if missing:
            problems.append(f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
        if unexpected:
            problems.append(f"unexpected {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else ""))
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit the model of this config ({'; '.join(problems)}); "
                              "use the settings it was trained with, or another output.dir")


def load_module(cls: type, path: str | Path, map_location: Any = "cpu", settings: dict[str, Any] | None = None,
                **kwargs: Any):
    """A ``LightningModule`` of class ``cls`` from a checkpoint, loaded with ``weights_only=True``.

    Used instead of ``cls.load_from_checkpoint``, which unpickles with torch's default (anything,
    before torch 2.6). ``kwargs`` override saved hyperparameters (e.g. ``build_criterion=False``).
    ``settings``: this run's config sections (e.g. ``{'model': ..., 'loss': ...}``) that the
    checkpoint's hyperparameters must equal; a checkpoint of another configuration is refused (a
    ``test`` would report its numbers under this config's name).
    """
    ckpt = read_checkpoint(path, map_location="cpu")
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict):
        raise CheckpointError(f"checkpoint {path} has no hyperparameters to rebuild the model from")
    if settings is not None:
        saved = {name: hparams[name] for name in settings if name in hparams}
        _refuse_other_settings(path, saved, {name: settings[name] for name in saved},
                               "this config would report the numbers of that run. Evaluate with the config it was "
                               "trained with, or set test.checkpoint to a checkpoint of this configuration")
    try:
        module = cls(**{**hparams, **kwargs})
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} does not describe a {cls.__name__}: {e}") from None
    check_state_dict(path, ckpt["state_dict"], module)
    module.load_state_dict(ckpt["state_dict"])
    return module.to(map_location)


def _checkpoint_classes():
    from lightning.pytorch.callbacks import Checkpoint
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Lightning's checkpoint I/O, but atomic on every filesystem and loading with ``weights_only=True``.

        Lightning's own save goes through an fsspec transaction whose temporary file is not
        guaranteed to be in the target's folder; this one is (see :func:`atomic_torch_save`).
        """

        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
            if storage_options is not None:
                raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
            atomic_torch_save(checkpoint, path)

        def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
            # weights_only is always True here, whatever the caller asks (a resume reads our own files)
            return read_checkpoint(path, map_location=map_location or (lambda storage, loc: storage))

    class LastCheckpoint(Checkpoint):
        """Keep ``dirpath/last.ckpt`` current: every ``every_n_steps`` steps, at every epoch end, at the end.

        Also on an exception (Ctrl-C, an error, SLURM pre-emption signals that Lightning turns into
        exceptions), but only once training has started: a run that failed while restoring its
        checkpoint must not save its untrained model over it.
        """

        def __init__(self, dirpath: Path, every_n_steps: int | None) -> None:
            self.path = Path(dirpath) / LAST_CHECKPOINT
            self.every_n_steps = every_n_steps
            self._started = False
            self._saved_step: int | None = None
            #: (epoch, global_step) of the last checkpoint written, as stored in it
            self.saved: tuple[int, int] | None = None

        def on_train_start(self, trainer, pl_module) -> None:
            self._started = True
            self._saved_step = trainer.global_step  # what a resumed run's checkpoint already holds

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            step = trainer.global_step
            if self.every_n_steps and step % self.every_n_steps == 0 and step != self._saved_step:
                self._save(trainer)

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self._save(trainer)  # also at a step already saved: the loop state now says the epoch is done

        def on_train_end(self, trainer, pl_module) -> None:
            if trainer.global_step != self._saved_step:
                self._save(trainer)

        def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
            if self._started and trainer.global_step != self._saved_step:
                self._save(trainer)

        def _save(self, trainer) -> None:
            # rank 0 writes, through AtomicCheckpointIO; the whole training state (optimizer, loops), said
            # explicitly: Lightning warns on every save when weights_only is left unset
            trainer.save_checkpoint(self.path, weights_only=False)
            self._saved_step = trainer.global_step
            self.saved = (int(trainer.current_epoch), int(trainer.global_step))  # what the file's epoch/global_step say

    return AtomicCheckpointIO, LastCheckpoint


def build_trainer(trainer_cfg: dict[str, Any], out_dir: str | Path, *, callbacks: Sequence[Any] = (),
                  monitor: str | None = None, **defaults: Any):
    """A ``lightning.Trainer`` from a config's ``trainer:`` section, writing under ``out_dir``.

    Every ``lightning.Trainer`` argument may appear in ``trainer_cfg`` (accelerator, devices,
    num_nodes, strategy, precision, max_steps, ...) except the ones set here (logger, callbacks,
    default_root_dir, enable_checkpointing, plugins); unknown keys raise with the allowed ones.
    ``defaults`` are experiment defaults that the config overrides. The genloss keys of
    :data:`GENLOSS_TRAINER_KEYS` are handled by :func:`fit` and ignored here, except
    ``checkpoint_every_n_steps`` (default :data:`DEFAULT_CHECKPOINT_EVERY_N_STEPS`) and ``progress_bar``.

    ``checkpoints/last.ckpt`` is written atomically every ``checkpoint_every_n_steps`` optimizer
    steps, at every epoch end, at the end (also when ``max_steps`` stops a run mid-epoch) and when
    training is interrupted by an exception, so a kill -9 loses at most one interval. With
    ``monitor`` a ``ModelCheckpoint`` also keeps the best checkpoint by that metric.

    Returns the trainer; its ``checkpoint_callback`` is the ``last.ckpt`` writer.
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    allowed = [p for p in inspect.signature(L.Trainer.__init__).parameters if p not in _MANAGED_TRAINER_ARGS]
    check_keys(trainer_cfg, [*allowed, *GENLOSS_TRAINER_KEYS], "trainer")
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    kwargs: dict[str, Any] = {"enable_model_summary": False, "log_every_n_steps": 10, **defaults}
    kwargs.update({k: v for k, v in trainer_cfg.items() if k not in GENLOSS_TRAINER_KEYS})
    if "progress_bar" in trainer_cfg:
        kwargs["enable_progress_bar"] = bool(trainer_cfg["progress_bar"])
    every = trainer_cfg.get("checkpoint_every_n_steps", DEFAULT_CHECKPOINT_EVERY_N_STEPS)
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 0):
        raise ValueError(f"trainer.checkpoint_every_n_steps must be a whole number >= 0 (0 or null: epoch ends "
                         f"only), got {every!r}")
    atomic_io, last_checkpoint = _checkpoint_classes()
    last = last_checkpoint(ckpt_dir, every or None)
    checkpoints: list[Any] = [last]
    if monitor:
        checkpoints.insert(0, ModelCheckpoint(dirpath=ckpt_dir, filename="best-{step}", save_last=False,
                                              save_top_k=1, monitor=monitor))
    loggers = [CSVLogger(str(out / "logs"), name="csv"), TensorBoardLogger(str(out / "logs"), name="tensorboard")]
    return L.Trainer(default_root_dir=str(out), logger=loggers, callbacks=[*callbacks, *checkpoints],
                     plugins=[atomic_io()], **kwargs)


def _check_resume(ckpt_path: str | None, module: Any) -> dict[str, Any] | None:
    """Refuse, before Lightning touches any file, a checkpoint that cannot resume ``module``: another
    architecture, weights only, or other settings (loss, model, optimiser: resuming would silently
    continue a run of another configuration, e.g. a Watson-DFT run trained further with SSIM).
    Returns the checkpoint (``None`` without one)."""
    if ckpt_path is None:
        return None
    ckpt = read_checkpoint(ckpt_path)
    check_state_dict(ckpt_path, ckpt["state_dict"], module)
    for key in ("optimizer_states", "loops", "global_step"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {ckpt_path} has no {key!r}: it holds weights only and cannot "
                                  "resume training; set trainer.resume=false or use another output.dir")
    saved, current = ckpt.get("hyper_parameters"), getattr(module, "hparams", None)
    if isinstance(saved, dict) and current is not None:
        _refuse_other_settings(ckpt_path, saved, dict(current),
                               "resuming would continue that run with this config. Use another output.dir for this "
                               "configuration, or set trainer.resume=false to start over in this one (its checkpoint "
                               "will be overwritten)")
    return ckpt


def _finished(ckpt: dict[str, Any], trainer: Any) -> str | None:
    """Why a resumed run has nothing left to train (its ``max_steps`` or ``max_epochs`` reached), else ``None``.

    The test of Lightning's fit loop, on the checkpoint's counters: the global step, and the epochs
    processed (an epoch that ``max_steps`` cut short counts, as for Lightning).
    """
    step = int(ckpt.get("global_step", 0))
    try:
        processed = int(ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        processed = int(ckpt.get("epoch", 0))
    max_steps, max_epochs = trainer.max_steps, trainer.max_epochs
    if max_steps is not None and max_steps != -1 and step >= max_steps:
        return f"it is at step {step} and trainer.max_steps is {max_steps}"
    if max_epochs is not None and max_epochs != -1 and processed >= max_epochs:
        return f"it has run {processed} epoch(s) and trainer.max_epochs is {max_epochs}"
    return None


def _refuse_other_settings(path: str | Path, saved: dict, current: dict, consequence: str) -> None:
    """A :class:`CheckpointError` naming each setting (key and both values) in which ``saved`` differs."""
    changed = _setting_differences(_plain(saved), _plain(current))
    if changed:
        more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
        raise CheckpointError(f"checkpoint {path} was trained with other settings: {'; '.join(changed[:3])}{more}; "
                              f"{consequence}")


def _plain(value: Any) -> Any:
    """Settings as plain dicts and lists (a tuple saved in a checkpoint equals a YAML list)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


#: settings that say where files are, not what is computed (the files are checked by their hashes):
#: a run resumed on another machine may differ in them
_LOCATION_SETTINGS = frozenset({"weights_dir"})


def _setting_differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """``'key: X in the checkpoint, Y now'`` for every setting that differs (dotted keys, nested dicts)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[str] = []
        for key in sorted((set(saved) | set(current)) - _LOCATION_SETTINGS):
            name = f"{prefix}{key}"
            if key not in saved:
                out.append(f"{name}: not set in the checkpoint, {current[key]!r} now")
            elif key not in current:
                out.append(f"{name}: {saved[key]!r} in the checkpoint, not set now")
            else:
                out.extend(_setting_differences(saved[key], current[key], f"{name}."))
        return out
    if saved != current:
        return [f"{prefix[:-1]}: {saved!r} in the checkpoint, {current!r} now"]
    return []


def fit(module: Any, cfg: dict[str, Any], out_dir: str | Path, train_loader: Any, val_loader: Any = None, *,
        callbacks: Sequence[Any] = (), monitor: str | None = None, **trainer_defaults: Any) -> dict[str, Any]:
    """Seed, build the trainer from ``cfg['trainer']``, resume if asked, train; return a summary.

    ``module`` is a ``LightningModule`` (build it *after* seeding if its initialisation must be
    reproducible: call :func:`seed_from_config` first). A checkpoint to resume from is loaded with
    ``weights_only=True`` and checked against ``module`` first: a bad one raises a
    :class:`CheckpointError` naming it and is left as it was. Returns ``{'checkpoint': last.ckpt
    path, 'resumed_from': path or None, 'already_complete', 'global_step', 'epoch', 'metrics': {name:
    float}, 'log_dir': CSV log folder of this run, 'tensorboard_dir'}``. ``global_step`` and ``epoch``
    are those stored in ``last.ckpt`` (``epoch``: Lightning's 0-based epoch counter when it was
    written). A resumed run whose checkpoint already reached ``max_steps`` or ``max_epochs`` trains
    nothing and writes no logs: ``already_complete`` is true, ``metrics`` empty and the log folders
    ``None``.
    """
    t = section(cfg, "trainer")
    out = Path(out_dir)
    ckpt_path = resolve_resume(t.get("resume", "auto"), out / "checkpoints")
    saved = _check_resume(ckpt_path, module)
    trainer = build_trainer(t, out, callbacks=callbacks, monitor=monitor, **trainer_defaults)
    if trainer.is_global_zero:
        remove_stale_temporaries(out / "checkpoints")
    done = _finished(saved, trainer) if saved is not None else None
    if done is not None:  # nothing to train: no Lightning run, so no empty log version either
        if trainer.is_global_zero:
            print(f"already complete: {ckpt_path}: {done}; nothing to train (raise trainer.max_steps or "
                  "trainer.max_epochs to train further, or set trainer.resume=false to start over)", file=sys.stderr)
        return {
            "checkpoint": str(out / "checkpoints" / LAST_CHECKPOINT),
            "resumed_from": ckpt_path,
            "already_complete": True,
            "global_step": int(saved.get("global_step", 0)),
            "epoch": int(saved.get("epoch", 0)),
            "metrics": {},
            "log_dir": None,
            "tensorboard_dir": None,
        }
    if ckpt_path and trainer.is_global_zero:
        print(f"resuming from {ckpt_path}", file=sys.stderr)
    trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
    csv_logger, tb_logger = trainer.loggers[0], trainer.loggers[1]
    last = next((cb.saved for cb in trainer.callbacks if getattr(cb, "saved", None) is not None), None)
    epoch, step = last if last is not None else (int(trainer.current_epoch), int(trainer.global_step))
    return {
        "checkpoint": str(out / "checkpoints" / LAST_CHECKPOINT),
        "resumed_from": ckpt_path,
        "already_complete": False,
        "global_step": step,
        "epoch": epoch,
        "metrics": metrics,
        "log_dir": csv_logger.log_dir,
        "tensorboard_dir": tb_logger.log_dir,
    }


def seed_from_config(cfg: dict[str, Any]) -> int:
    """Seed python, numpy and torch (and dataloader workers) from ``trainer.seed`` (default 0); returns it."""
    import lightning as L

    seed = int(section(cfg, "trainer").get("seed", 0))
    L.seed_everything(seed, workers=True, verbose=False)
    return seed


def tested_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config sections a checkpoint must have been trained with to be tested under this config: the
    model and the loss (the optimiser does not change what a test measures)."""
    return {name: section(cfg, name) for name in ("model", "loss")}


def find_checkpoint(cfg: dict[str, Any], out_dir: str | Path) -> Path:
    """The checkpoint ``test`` evaluates: ``test.checkpoint`` or ``out_dir/checkpoints/last.ckpt`` (must exist)."""
    path = Path(section(cfg, "test").get("checkpoint") or Path(out_dir) / "checkpoints" / LAST_CHECKPOINT)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train first or set test.checkpoint")
    return path


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``'auto'``/``None`` = CUDA when available, else CPU; anything else as ``torch.device(name)``."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def test_device(cfg: dict[str, Any]) -> torch.device:
    """The device of ``test``: ``test.device`` (``auto`` = CUDA when available, else CPU)."""
    return resolve_device(section(cfg, "test").get("device", "auto"))


test_device.__test__ = False  # not a pytest test


# ------------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------------
def build_loss(spec: str | dict[str, Any], *, image_size: Sequence[int] | None = None,
               extra_keys: Iterable[str] = ()) -> nn.Module:
    """A training loss from a config's ``loss:`` section: a registry loss, optionally CorrWise-wrapped.

    ``spec`` is a loss name or a mapping::

        name: Watson-DFT          # any genloss.list_losses() name (case-insensitive)
        colorspace: RGB           # RGB | LA (greyscale)
        pretrained: true          # the authors' weights tuned on BAPPS (frozen)
        reduction: sum            # sum | mean | none
        deterministic: false      # Watson: no random shift of up to 8 px when true
        weights_dir: null         # folder holding the weight files
        kwargs: {}                # loss-specific options
        corrwise:                 # null/false: plain loss; a mapping: genloss.CorrWise arguments
          flow: raft              #   (true = CorrWise defaults)
          scale_clip: 0.1

    ``image_size`` (C, H, W) is passed to the registry (the Adaptive loss allocates its per-pixel
    parameters from it). ``extra_keys`` are keys the calling experiment reads itself (e.g. the
    VAE's ``log_weight``); any other unknown key raises.
    """
    from ..registry import make_loss

    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"the loss section must be a loss name or a mapping with a 'name', got {spec!r}")
    check_keys(spec, [*LOSS_KEYS, *extra_keys], "loss")
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"loss.kwargs must be a mapping, got {kwargs!r}")
    # The section's top-level keys apply to every loss that has them (the paper's LossProvider
    # semantics); loss.kwargs go to the loss' class strictly, so a misspelt option raises.
    common = {
        "colorspace": spec.get("colorspace", "RGB"),
        "pretrained": bool(spec.get("pretrained", True)),
        "reduction": spec.get("reduction", "mean"),
        "deterministic": bool(spec.get("deterministic", False)),
        "image_size": tuple(image_size) if image_size is not None else None,
        "weights_dir": spec.get("weights_dir"),
    }
    base = make_loss(spec["name"], common, **kwargs)
    cw = spec.get("corrwise")
    if cw is None or cw is False:
        return base
    if cw is True:
        cw = {}
    if not isinstance(cw, dict):
        raise ValueError(f"loss.corrwise must be a mapping of CorrWise arguments (or true/false), got {cw!r}")
    from .. import CorrWise

    return CorrWise.from_config(base, cw)


def loss_value(out: Any) -> torch.Tensor:
    """The loss tensor of a loss call (``CorrWise(return_warped=True)`` returns ``(loss, warped)``)."""
    return out[0] if isinstance(out, (tuple, list)) else out


class FrozenLoss:
    """A loss whose parameters are not trained, kept *outside* a module's state dict.

    Assigned as an attribute of a ``LightningModule`` it is not registered as a submodule, so
    checkpoints hold the trained network alone: tuned perceptual metrics and flow networks (RAFT
    in a CorrWise loss) are not copied into every checkpoint, and loading a checkpoint for
    evaluation needs none of their weights. Lightning does not move it either: :meth:`on` moves it
    to the device of the batch on first use (a no-op for losses without parameters or buffers).
    """

    def __init__(self, loss: nn.Module) -> None:
        loss.requires_grad_(False)
        self.loss = loss

    def on(self, device: torch.device | str) -> nn.Module:
        """The loss on ``device`` (moved there the first time it is asked for another device)."""
        state = next(itertools.chain(self.loss.parameters(), self.loss.buffers()), None)
        if state is not None and state.device != torch.device(device):
            self.loss = self.loss.to(device)
        return self.loss


# ------------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------------
def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0,
               border: bool = True) -> torch.Tensor:
    """Tile a batch (N, C, H, W), C in {1, 3}, values in [0, 1] (clamped), into one float CPU image (3, H', W').

    ``nrow`` images per row with ``padding`` pixels of ``pad_value`` between them, and around the
    grid unless ``border=False`` (strips that are cut to fit: H' = rows * (H + padding) - padding).
    Any device and float dtype.
    """
    from torchvision.utils import make_grid

    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (N, C, H, W) with C = 1 or 3, got {shape}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch")
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=pad_value)
    if not border and padding > 0:
        grid = grid[:, padding:-padding, padding:-padding]
    return grid


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, padding: int = 2,
                    pad_value: float = 1.0, border: bool = True) -> Path:
    """Save a batch (N, C, H, W), C in {1, 3}, values in [0, 1] (clamped), as one PNG grid; returns the path.

    Any device and float dtype; the grid has ``nrow`` images per row and ``padding`` pixels of
    ``pad_value`` between them (see :func:`image_grid`). Parent folders are created.
    """
    from ..data.images import write_image

    grid = image_grid(images, nrow=nrow, padding=padding, pad_value=pad_value, border=border)
    if images.shape[1] == 1:  # make_grid repeats grey to 3 channels; store grey as grey
        grid = grid[:1]
    return write_image(grid, path)
