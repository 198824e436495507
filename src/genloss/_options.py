"""Strict option forwarding: ``get_loss``, ``get_flow``, configs and ``CorrWise(flow_kwargs=...)`` pass
options to a class's constructor, and an unknown or misspelt one is a ``TypeError`` that names it and
lists the valid ones (never silently dropped)."""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
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
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, list(valid), n=1)
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


def strict_bools(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a constructor so that its ``bool`` options accept only ``True``/``False``.

    A string such as ``'False'`` (from argparse, an environment variable, JSON) is truthy: taken as a
    flag it would silently turn the option on. Options annotated ``bool`` refuse anything else with a
    ``TypeError`` naming the option.
    """
    sig = inspect.signature(init)
    flags = [n for n, p in sig.parameters.items() if p.annotation in ("bool", bool)]
    if not flags or getattr(init, "_strict_bools", False):
        return init

    @functools.wraps(init)
    def checked(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = sig.bind_partial(self, *args, **kwargs).arguments
        for name in flags:
            if name in bound and not isinstance(bound[name], bool):
                raise TypeError(f"{type(self).__name__}: {name} must be True or False, got {bound[name]!r}")
        init(self, *args, **kwargs)

    checked._strict_bools = True  # type: ignore[attr-defined]
    return checked
