"""The one validator: value checks that read the data on the CPU and keep CUDA free of synchronisation."""

from __future__ import annotations

import types

import pytest
import torch

from genloss import _validation as V


def _cuda_stub() -> types.SimpleNamespace:
    """Stands in for a CUDA tensor where only ``.device`` is consulted (this machine has no GPU)."""
    return types.SimpleNamespace(device=torch.device("cuda", 0))


def test_cpu_tensors_are_always_checked_readably():
    budget = V.CheckBudget(sync_calls=0)
    assert all(budget.mode(torch.zeros(1)) == "readable" for _ in range(20))


def test_cuda_checks_the_first_calls_readably_then_skips(monkeypatch):
    monkeypatch.delenv("GENLOSS_SYNC_CHECKS", raising=False)
    monkeypatch.delenv("GENLOSS_DEVICE_CHECKS", raising=False)
    budget = V.CheckBudget(sync_calls=3)
    modes = [budget.mode(_cuda_stub()) for _ in range(6)]
    assert modes == ["readable"] * 3 + ["skip"] * 3
    monkeypatch.setenv("GENLOSS_DEVICE_CHECKS", "1")
    assert budget.mode(_cuda_stub()) == "device"
    monkeypatch.setenv("GENLOSS_SYNC_CHECKS", "1")
    assert budget.mode(_cuda_stub()) == "readable"


def test_each_loss_has_its_own_budget():
    from genloss import L1Loss

    a, b = L1Loss(), L1Loss()
    a._checks.sync_calls_left = 0
    assert b._checks.sync_calls_left == V.CUDA_SYNC_CHECKS


def test_readable_errors_name_the_range_and_the_fix():
    x = torch.rand(1, 3, 4, 4)
    V.check_values(x, "input")
    with pytest.raises(ValueError, match=r"input has values in \[0, 255\].*outside the expected range \[0, 1\]"):
        V.check_values(torch.cat([x * 0, x * 0 + 255], 1), "input")
    with pytest.raises(ValueError, match="target contains NaN or Inf"):
        V.check_values(torch.tensor([0.5, float("inf")]), "target")
    V.check_values(x * 1.04, "input")  # within the tolerance (interpolation overshoot)
    V.check_values(x * 255, "input", (0.0, 255.0))


def test_device_side_assertion_path(monkeypatch):
    """The assertion used on CUDA after the first calls (and traced by torch.compile) fails on bad data."""

    class Device(V.CheckBudget):
        def mode(self, data):
            return "device"

    V.check_values(torch.rand(8), "input", budget=Device())
    with pytest.raises(RuntimeError, match="input contains NaN/Inf or values outside"):
        V.check_values(torch.rand(8) * 255, "input", budget=Device())


def test_value_range_option_is_validated():
    assert V.check_value_range([0, 255]) == (0.0, 255.0)
    with pytest.raises(ValueError, match="lo < hi"):
        V.check_value_range((1, 0))
    with pytest.raises(TypeError, match="pair"):
        V.check_value_range(5)


def test_compute_dtype_rule():
    assert V.compute_dtype(torch.float16, torch.float16) == torch.float32
    assert V.compute_dtype(torch.bfloat16, torch.float32) == torch.float32
    assert V.compute_dtype(torch.float32, torch.float64) == torch.float64


@pytest.mark.parametrize("name", ["Watson-DCT", "Watson-DFT", "SSIM"])
def test_issue_example_photo_in_three_ranges(name, reference_weights):
    """The issue's example: a 64x64 photograph and a noisy copy gave Watson-DCT 2.9 / 190 / 7.7 (and
    Watson-DFT 2.0e3 / 9.4e5 / 4.0e3, SSIM 0.127 / 0.144 / 0.145) for [0, 1], [0, 255] and [-1, 1]
    without a word. Now [0, 255] and [-1, 1] data are refused, and declared ranges give the [0, 1] value."""
    from conftest import photo_batch

    import genloss

    x = photo_batch(["astronaut"], 64)
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    loss = genloss.get_loss(name, reduction="none").eval()
    unit = loss(y, x)
    assert torch.isfinite(unit).all() and unit.item() > 0
    for lo, hi in ((0.0, 255.0), (-1.0, 1.0)):
        scaled_y, scaled_x = y * (hi - lo) + lo, x * (hi - lo) + lo
        with pytest.raises(ValueError, match=r"outside the expected range \[0, 1\]"):
            loss(scaled_y, scaled_x)
        declared = genloss.get_loss(name, reduction="none", value_range=(lo, hi)).eval()
        torch.testing.assert_close(declared(scaled_y, scaled_x), unit, rtol=1e-4, atol=1e-6)
