"""Every environment variable genloss reads, in one place (names, meaning, parsing).

| variable | meaning |
|---|---|
| ``GENLOSS_WEIGHTS_DIR`` | folder(s) (``os.pathsep``-separated) holding downloadable files; searched first |
| ``GENLOSS_CACHE_DIR`` | the download cache (default ``$XDG_CACHE_HOME/genloss`` or ``~/.cache/genloss``) |
| ``GENLOSS_OFFLINE`` | ``1``: never download; a missing file raises an error that says where to put it |
| ``GENLOSS_BACKBONE_DIR`` | folder holding torchvision's backbone files under their own names |
| ``GENLOSS_SYNC_CHECKS`` | ``1``: check CUDA inputs' values readably on every call (host read, slower); |
|  | default: each loss's first calls only |
| ``GENLOSS_DEVICE_CHECKS`` | ``1``: check the later CUDA calls with device-side assertions (no host read) |
| ``GENLOSS_DEBUG`` | ``1``: the command line shows tracebacks |
| ``GENLOSS_ORIGINAL_REPO`` | a clone of the Watson paper's repository, timed by ``genloss bench --original`` |
"""

from __future__ import annotations

import os

WEIGHTS_DIR = "GENLOSS_WEIGHTS_DIR"
CACHE_DIR = "GENLOSS_CACHE_DIR"
OFFLINE = "GENLOSS_OFFLINE"
BACKBONE_DIR = "GENLOSS_BACKBONE_DIR"
SYNC_CHECKS = "GENLOSS_SYNC_CHECKS"
DEVICE_CHECKS = "GENLOSS_DEVICE_CHECKS"
DEBUG = "GENLOSS_DEBUG"
ORIGINAL_REPO = "GENLOSS_ORIGINAL_REPO"

_FALSE = ("", "0", "false", "no", "off")


def flag(name: str) -> bool:
    """True when the environment variable ``name`` is set to anything but ``''``, ``0``, ``false``, ``no``, ``off``."""
    return os.environ.get(name, "").strip().lower() not in _FALSE


def offline() -> bool:
    """``GENLOSS_OFFLINE`` is set: downloads are refused."""
    return flag(OFFLINE)
