"""Shared fixtures: the project's shared/ folder, reference weights, golden values, real photographs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GENLOSS_SHARED", ROOT.parent / "shared"))
REFERENCE_WEIGHTS = SHARED / "reference-weights"
GOLDEN = SHARED / "golden"

# Tests never touch the network: weights come from shared/ or from files the tests write.
os.environ.setdefault("GENLOSS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

requires_shared = pytest.mark.skipif(
    not REFERENCE_WEIGHTS.is_dir(), reason=f"reference weights not found at {REFERENCE_WEIGHTS}"
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test sees an empty download cache, so nothing leaks in from the developer's machine."""
    monkeypatch.setenv("GENLOSS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("GENLOSS_OFFLINE", "1")


@pytest.fixture
def reference_weights(monkeypatch) -> Path:
    if not REFERENCE_WEIGHTS.is_dir():
        pytest.skip(f"reference weights not found at {REFERENCE_WEIGHTS}")
    monkeypatch.setenv("GENLOSS_WEIGHTS_DIR", str(REFERENCE_WEIGHTS))
    return REFERENCE_WEIGHTS


@pytest.fixture(scope="session")
def golden() -> dict:
    if not GOLDEN.is_dir():
        pytest.skip(f"golden values not found at {GOLDEN}")
    with open(GOLDEN / "values.json") as fh:
        values = json.load(fh)
    with np.load(GOLDEN / "images.npz") as f:
        images = {k: f[k] for k in f.files}
    return {"values": values["values"], "meta": values["meta"], "images": images}


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float32 1x3xHxW in [0, 1]."""
    return torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def golden_pair(golden: dict, entry: dict, colorspace: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (input, target) tensors of a golden entry, greyscale as the golden README describes."""
    a = to_tensor(golden["images"][entry["input"]])
    b = to_tensor(golden["images"][entry["target"]])
    if colorspace == "LA":
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        a, b = (a * w).sum(1, keepdim=True), (b * w).sum(1, keepdim=True)
    return a, b


@pytest.fixture(scope="session")
def photo() -> torch.Tensor:
    """A real photograph (scikit-image's astronaut), 1x3x64x64 in [0, 1]."""
    return photo_batch(["astronaut"], 64)


def photo_batch(names: list[str], size: int) -> torch.Tensor:
    """Real photographs from scikit-image, centre-cropped and resized to size x size, as N x 3 x H x W."""
    from genloss.data.photos import load_photos

    return load_photos(names, size)


def cuda_graph_replay(loss, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Capture ``loss(x, y).backward()`` in one CUDA graph, then replay it on each (x, y) of ``pairs``.

    The documented whole-network pattern of ``torch.cuda.graph``: warm-up calls on a side stream,
    the input's ``.grad`` set to None before capture (so the graph allocates it), new data copied
    into the static tensors before each replay. Returns the (loss, input gradient) of every replay.
    """
    x0, y0 = pairs[0]
    static_x = x0.cuda().clone().requires_grad_(True)
    static_y = y0.cuda().clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            static_x.grad = None
            loss(static_x, static_y).backward()
    torch.cuda.current_stream().wait_stream(side)
    static_x.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = loss(static_x, static_y)
        static_out.backward()
    results = []
    for x, y in pairs:
        with torch.no_grad():
            static_x.copy_(x)
            static_y.copy_(y)
        graph.replay()
        results.append((static_out.detach().clone(), static_x.grad.clone()))
    return results


def in_pieces(monkeypatch, images: int, image: torch.Tensor) -> None:
    """Make the hand-written Functions split a CPU batch into pieces of ``images`` images like ``image`` (C, H, W)."""
    from genloss.losses import _pieces

    monkeypatch.setattr(_pieces, "CHUNK_VALUES", images * image.numel())
