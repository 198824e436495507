"""Strict option forwarding: ``get_loss``, ``get_flow``, configs and ``CorrWise(flow_kwargs=...)`` pass
options to a class's constructor, and an unknown or misspelt one is a ``TypeError`` that names it and
lists the valid ones (never silently dropped)."""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import math
import numbers
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

_OPTION_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def valid_options(factory: Callable[..., Any], exclude: Iterable[str] = ()) -> dict[str, inspect.Parameter]:
    """The keyword options a class (its ``__init__``) or function accepts, minus ``exclude``."""
    skip = set(exclude)
    params = inspect.signature(factory).parameters
    return {n: p for n, p in params.items() if p.kind in _OPTION_KINDS and n not in skip and n != "self"}


def check_options(
    owner: str, factory: Callable[..., Any], options: Mapping[str, Any], exclude: Iterable[str] = ()
) -> None:
    """Raise ``TypeError`` if ``options`` holds a name that ``factory`` does not accept.

    Args:
        owner: what the options are for, used in the message (e.g. ``"loss 'SSIM' (SSIMLoss)"``).
        factory: the class or function the options are forwarded to.
        options: the keyword options.
        exclude: accepted names that must not be passed here (fixed by the registry entry).
    """
    valid = valid_options(factory, exclude)
    unknown = [k for k in options if k not in valid]
    if not unknown:
        return
    fixed = set(exclude)
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, list(valid), n=1)
        if k in fixed:  # an option of the class that this entry sets itself (e.g. Deeploss-VGG's backbone)
            hints.append(f"{k!r} (fixed by this entry: choose another entry instead)")
        else:
            hints.append(f"{k!r} (did you mean {close[0]!r}?)" if close else repr(k))
    raise TypeError(
        f"{owner} got unknown option{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
        f"valid options: {', '.join(valid) or '(none)'}"
    )


def resolve_target(target: str | type) -> type:
    """A registry entry's class: itself, or imported from its path ``'package.module:Class'``.

    Registries (losses, flow estimators) store paths so that listing them imports nothing.
    """
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


#: annotations whose values :func:`strict_options` checks (and, for numbers, the kind of number)
_CHECKED = {"bool": "flag", "int": "integer", "int | None": "integer or None", "float": "number",
            "float | None": "number or None"}


def _annotation_text(annotation: Any) -> str | None:
    """An annotation as :data:`_CHECKED` spells it: the string itself (``from __future__ import annotations``),
    or the text of ``bool``, ``int``, ``float`` and their ``| None`` / ``Optional`` forms (a user's class
    written without that import); ``None`` for anything else."""
    if isinstance(annotation, str):
        return annotation
    plain = {bool: "bool", int: "int", float: "float"}
    if annotation in plain:
        return plain[annotation]
    args = set(typing.get_args(annotation))
    if type(None) in args and len(args) == 2:
        (other,) = args - {type(None)}
        if other in (int, float):
            return f"{plain[other]} | None"
    return None


def _checked_option(owner: str, name: str, kind: str, value: Any) -> Any:
    """``value`` if it is of the option's ``kind`` (as a plain Python number), else a ``TypeError`` or,
    for a non-finite number, a ``ValueError``, each naming ``owner`` and the option."""
    if kind == "flag":
        if not isinstance(value, bool):
            raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
        return value
    if value is None and kind.endswith(" or None"):
        return value
    article = "an" if kind.startswith("integer") else "a"
    # bool is an int in Python, but True as a window size or a norm order is a mistake, not a number
    if kind.startswith("integer"):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{owner}: {name} must be {article} {kind}, got {value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be {article} {kind}, got {value!r}")
    if not math.isfinite(value):
        # a NaN passes every `x < 0` check and then silently disables what it controls
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    return float(value)


def strict_options(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a constructor so that its ``bool``, ``int`` and ``float`` options accept only values of that kind.

    A string such as ``'False'`` (from argparse, an environment variable, JSON) is truthy: taken as a
    flag it would silently turn the option on; ``'0.1'`` as a number fails deep inside with a message
    that names no option; ``True`` is an ``int`` to Python; a NaN weight passes every range check and
    then silently turns its term off. Options annotated ``bool`` accept only ``True``/``False``,
    ``int`` only integers (not bools; NumPy integers become ``int``), ``float`` only finite real numbers
    (not bools; ints and NumPy floats become ``float``), ``... | None`` also ``None``; anything else is
    a ``TypeError`` (a non-finite number a ``ValueError``) naming the class and the option. The
    constructor's own range checks run after these.
    """
    sig = inspect.signature(init)
    kinds = {n: _CHECKED[a] for n, p in sig.parameters.items() if (a := _annotation_text(p.annotation)) in _CHECKED}
    if not kinds or getattr(init, "_strict_options", False):
        return init
    # the names of positional arguments after self, by position: plain tuples and dicts at call time (no
    # Signature.bind, which torch.compile cannot trace when a functional twin builds its loss in a graph)
    positional = tuple(n for n, p in sig.parameters.items()
                       if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))[1:]
    if any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values()):  # pragma: no cover (none of ours)
        positional = ()

    @functools.wraps(init)
    def checked(self: Any, *args: Any, **kwargs: Any) -> None:
        owner = type(self).__name__
        args = tuple(_checked_option(owner, positional[i], kinds[positional[i]], a)
                     if i < len(positional) and positional[i] in kinds else a for i, a in enumerate(args))
        kwargs = {k: _checked_option(owner, k, kinds[k], v) if k in kinds else v for k, v in kwargs.items()}
        init(self, *args, **kwargs)

    checked._strict_options = True  # type: ignore[attr-defined]
    return checked
