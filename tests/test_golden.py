"""Fidelity: the values of the paper's own implementation on real photographs (shared/golden)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import GOLDEN, golden_pair

import genloss

# Tolerances of shared/golden/README.md
REL_TOL = {"L1": 1e-4, "L2": 1e-4, "SSIM": 1e-4, "Watson-DCT": 1e-3, "Watson-DFT": 1e-3}
IDENTICAL_ABS_TOL = 0.05

pytestmark = pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden values not found at {GOLDEN}")


def _entries(metrics):
    import json

    if not GOLDEN.is_dir():
        return []
    with open(GOLDEN / "values.json") as fh:
        values = json.load(fh)["values"]
    return [v for v in values if v["metric"] in metrics]


def _check(value: float, entry: dict, rel: float) -> None:
    want = entry["value"]
    if entry["input"] == entry["target"]:
        assert value == pytest.approx(want, abs=IDENTICAL_ABS_TOL)
    else:
        assert value == pytest.approx(want, rel=rel), f"{entry}: got {value}"


@pytest.mark.parametrize("cs", ["RGB", "LA"])
@pytest.mark.parametrize("metric", list(REL_TOL))
def test_golden_values_faithful(metric, cs, golden, reference_weights):
    """Every entry, with the faithful flag (the paper's code path) where the loss has one."""
    entries = [e for e in _entries([metric]) if e["colorspace"] == cs]
    assert entries, "no golden entries found"
    kw = {"faithful": True} if metric.startswith("Watson") else {}
    loss = genloss.LossProvider().get_loss_function(metric, colorspace=cs, pretrained=True, reduction="sum",
                                                    deterministic=True, **kw)
    loss.eval()
    for e in entries:
        a, b = golden_pair(golden, e, cs)
        with torch.no_grad():
            _check(loss(a, b).item(), e, REL_TOL[metric])


@pytest.mark.parametrize("cs", ["RGB", "LA"])
@pytest.mark.parametrize("metric", ["Watson-DCT", "Watson-DFT"])
def test_golden_default_mode_matches_where_original_is_sane(metric, cs, golden, reference_weights):
    """The default (per-image luminance, floored) equals the original on the 64x64 photographs,
    which have no black blocks, and stays bounded where the original explodes (astronaut 128)."""
    loss = genloss.get_loss(metric, colorspace=cs, deterministic=True)
    for e in _entries([metric]):
        if e["colorspace"] != cs:
            continue
        a, b = golden_pair(golden, e, cs)
        with torch.no_grad():
            value = loss(a, b).item()
        if "_64" in e["input"]:
            _check(value, e, REL_TOL[metric])
        else:
            assert np.isfinite(value)
    if metric == "Watson-DCT" and cs == "RGB":
        e = next(e for e in _entries([metric]) if e["input"] == "dist_astronaut_128_bright" and e["colorspace"] == cs)
        a, b = golden_pair(golden, e, cs)
        assert e["value"] > 1e5  # the original's blow-up on the black border blocks
        assert loss(a, b).item() < 100


@pytest.mark.parametrize("metric", ["Watson-DCT", "Watson-DFT"])
def test_golden_gradients(metric, golden, reference_weights):
    grads = np.load(GOLDEN / "grads.npz")
    key = next(k for k in grads.files if metric.split("-")[1].lower() in k.lower())
    want = torch.from_numpy(grads[key]).float()
    e = {"input": "dist_astronaut_64_blur", "target": "ref_astronaut_64"}
    a, b = golden_pair(golden, e, "RGB")
    a.requires_grad_(True)
    loss = genloss.get_loss(metric, deterministic=True, faithful=True)
    loss(a, b).backward()
    err = (a.grad - want).norm() / want.norm()
    assert err < 1e-3, f"relative gradient error {err:.2e}"
