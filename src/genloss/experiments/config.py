"""Config files: YAML with ``key.sub=value`` command-line overrides, and the helpers that read them.

This module imports nothing from the rest of :mod:`genloss.experiments`: ``common`` (the Lightning
plumbing) builds on it, never the other way round.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file or an override cannot be read; the message names the file or the override."""


def section(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """``cfg[name]`` as a dict (``{}`` when absent or null); raises if it is something else."""
    value = cfg.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"config section {name!r} must be a mapping, got {type(value).__name__}: {value!r}")
    return value


def check_keys(values: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    """Raise :class:`ConfigError` naming the unknown keys of ``values`` (with close matches) and the allowed ones.

    A misspelt key is bad usage (the command line exits with 2), like a bad override.
    """
    allowed = sorted(set(allowed))
    unknown = [k for k in values if k not in allowed]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), allowed, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(hints)}; allowed: {', '.join(allowed)}")


def _parse_value(item: str, text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = str(getattr(e, "problem", None) or e).strip()
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); "
                          "quote strings with special characters, e.g. key='a: b'") from None


#: keys (last component) whose values may be a number or a word, e.g. ``devices: 1`` or ``devices: auto``
_NUMBER_OR_WORD_KEYS = frozenset({"devices", "precision", "log_weight", "resume", "num_nodes", "strategy"})


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else type(value).__name__


#: keys (dotted) that take null in every experiment, besides those a config itself sets to null and the
#: ``lightning.Trainer`` arguments typed ``Optional``
NULLABLE_KEYS = frozenset({
    "output.dir",                        # the experiment's default folder
    "trainer.resume",                    # start over
    "trainer.checkpoint_every_n_steps",  # last.ckpt at epoch ends only
    "loss.corrwise",                     # the plain loss
    "loss.weights_dir",                  # GENLOSS_WEIGHTS_DIR and the cache
    "loss.kwargs",                       # no options
    "test.checkpoint",                   # output.dir/checkpoints/last.ckpt
    "test.device",                       # auto
})
#: further keys that take null, per experiment
NULLABLE_KEYS_OF = {
    "vae": frozenset({"data.root", "data.limit_train", "data.limit_test", "optim.lr_half_life_epochs",
                      "test.batch_size"}),
    "toy": frozenset({"data.assets_dir"}),
    "video": frozenset({"data.root", "data.size", "data.max_samples", "data.lengths"}),
    "2afc": frozenset({"data.synthetic", "data.categories", "data.load_size", "eval.losses", "eval.weights_dir",
                       "eval.device", "tune.weights_dir", "tune.device", "tune.resume"}),
}
#: mappings of free-form options (passed on to a class that checks them): any key under them takes null
_FREE_FORM = ("loss.kwargs.", "loss.corrwise.", "smoke.overrides.", "eval.loss_kwargs.", "tune.loss_kwargs.")


def _trainer_takes_null(name: str) -> bool | None:
    """Whether ``lightning.Trainer`` accepts ``None`` for argument ``name`` (``None``: no such argument)."""
    import inspect

    try:
        import lightning
    except ImportError:  # pragma: no cover - the experiments need lightning anyway
        return None
    param = inspect.signature(lightning.Trainer.__init__).parameters.get(name)
    if param is None:
        return None
    annotation = param.annotation if isinstance(param.annotation, str) else repr(param.annotation)
    return param.default is None or "None" in annotation or "Optional" in annotation


def takes_null(experiment: Any, key: str) -> bool | None:
    """Whether the dotted ``key`` may be null in a config of ``experiment`` (``None``: unknown trainer key)."""
    if key in NULLABLE_KEYS or key in NULLABLE_KEYS_OF.get(str(experiment), ()) or key.startswith(_FREE_FORM):
        return True
    section_name, _, name = key.partition(".")
    if section_name == "trainer" and name in ("seed", "progress_bar"):  # genloss' own trainer keys
        return False
    if section_name == "trainer" and name and "." not in name:
        return _trainer_takes_null(name)
    return False


def _check_null_override(cfg: dict[str, Any], item: str, parts: list[str], present: bool, old: Any) -> None:
    """Refuse ``key=null`` where the key does not take null (``trainer.max_steps=null`` crashed in Lightning).

    Null is accepted where the config itself has null, for :data:`NULLABLE_KEYS` (and the experiment's
    :data:`NULLABLE_KEYS_OF`), under free-form option mappings (``loss.kwargs``, ...), for
    ``lightning.Trainer`` arguments typed ``Optional`` and for keys Lightning does not know (the
    experiment then names them as unknown).
    """
    if present and old is None:
        return
    key = ".".join(parts)
    if takes_null(cfg.get("experiment"), key) is not False:
        return
    had = f"the config has {key}: {old!r}" if present else f"{key} is not set in the config"
    keep = "keep the config's value" if present else "use the default"
    raise ConfigError(f"override {item!r}: {key} does not take null ({had}); give a value, or leave the override out "
                      f"to {keep}")


def _check_override_type(item: str, key: str, old: Any, new: Any) -> None:
    """Refuse a word where the config has a number or true/false (``trainer.max_steps=abc``).

    Only that case: many keys legitimately take several kinds (``data.size: 32`` or ``[32, 48]``,
    ``loss.corrwise: false`` or a mapping); ``null`` is checked by :func:`_check_null_override`.
    """
    kind_old, kind_new = _kind(old), _kind(new)
    if kind_new != "a string" or kind_old not in ("a number", "true or false"):
        return
    if kind_old == "a number" and key in _NUMBER_OR_WORD_KEYS:
        return
    raise ConfigError(f"override {item!r}: expected {kind_old} like the config's {key}: {old!r}, got {kind_new} "
                      f"({new!r})")


def apply_overrides(cfg: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of ``cfg`` with ``a.b.c=value`` overrides applied (values parsed as YAML)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, value = item.split("=", 1)
        node = cfg
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: {key!r} is not a dotted key like trainer.max_steps")
        for p in parts[:-1]:
            if not isinstance(node.setdefault(p, {}), dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
            node = node[p]
        new = _parse_value(item, value)
        if new is None:
            _check_null_override(cfg, item, parts, parts[-1] in node, node.get(parts[-1]))
        _check_override_type(item, parts[-1], node.get(parts[-1]), new)
        node[parts[-1]] = new
    return cfg


def apply_smoke(cfg: dict[str, Any]) -> dict[str, Any]:
    """Apply the config's ``smoke.overrides`` when ``smoke.enabled`` is true; returns a new config.

    Full-size configs carry a ``smoke:`` section with the overrides that shrink them to a CPU run of
    a few seconds (tiny images, a few steps), so CI runs every config::

        genloss train --config configs/vae_mnist.yaml smoke.enabled=true [key=value ...]

    ``overrides`` maps dotted keys to values, e.g. ``{trainer.max_steps: 3, data.kind: digits}``.
    :func:`load_config` calls this and then re-applies the command-line overrides, so ``key=value``
    arguments win over the smoke values. The result is marked ``smoke.applied: true``, so applying
    it twice changes nothing.
    """
    import yaml

    smoke = section(cfg, "smoke")
    check_keys(smoke, ("enabled", "overrides", "applied"), "smoke")
    if not smoke.get("enabled") or smoke.get("applied"):
        return cfg
    overrides = smoke.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ValueError("smoke.overrides must map dotted keys to values, e.g. {trainer.max_steps: 3}")
    # apply_overrides parses "key=value" strings as YAML: dump each value back to YAML text
    items = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
             for k, v in overrides.items()]
    out = apply_overrides(cfg, items)
    out["smoke"] = {**out["smoke"], "applied": True}
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a dict; a missing file or a YAML error raises one line naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = str(getattr(e, "problem", None) or e).strip()
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return cfg


def load_config(config: str | Path | dict[str, Any], overrides: list[str] | None = None) -> dict[str, Any]:
    """Load a YAML config file (or take a dict) and apply overrides."""
    cfg = config if isinstance(config, dict) else read_config_file(config)
    merged = apply_overrides(cfg, overrides)
    smoke = merged.get("smoke")
    if isinstance(smoke, dict) and smoke.get("enabled") and not smoke.get("applied"):
        # `smoke.enabled=true` shrinks a full config with its smoke.overrides; command-line
        # overrides are applied again on top, so they still win
        merged = apply_overrides(apply_smoke(merged), overrides)
    return merged
