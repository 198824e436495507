"""The runtime benchmark runs, times peers in the same run and prints ratios."""

from __future__ import annotations

import pytest

from genloss.experiments import runtime


def test_runtime_benchmark_prints_ratios_against_peers(capsys):
    pytest.importorskip("piq")
    pytest.importorskip("pytorch_msssim")
    code = runtime.main(["--losses", "L1", "SSIM", "Watson-DCT", "--colorspaces", "RGB", "LA",
                         "--batch", "4", "--size", "32", "--repeats", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "torch.nn.L1Loss" in out and "piq.ssim" in out and "pytorch_msssim.ssim" in out
    verdicts = [line for line in out.splitlines() if line.startswith(("PASS", "MISS"))]
    assert len(verdicts) == 6  # L1, SSIM, Watson-DCT in RGB and LA
    assert all("x " in v for v in verdicts)


def test_table_and_targets_from_rows():
    rows = [{"loss": "SSIM", "colorspace": "RGB", "shape": "1x3x8x8", "times": {"ours": 1.0, "piq.ssim": 2.0},
             "memory": {}, "errors": {"lpips": "ImportError: no module"}},
            {"loss": "Watson-DFT", "colorspace": "RGB", "shape": "1x3x8x8",
             "times": {"ours": 1.0, "piq.ssim": 2.0}, "memory": {"ours": 10.0, "original": 5.0}, "errors": {}}]
    table = runtime.format_table(rows)
    assert "0.50" in table and "unavailable: ImportError" in table
    t = runtime.targets(rows)
    assert t[0].startswith("PASS SSIM RGB: 0.50x")
    assert t[1].startswith("MISS Watson-DFT RGB: 0.50x piq SSIM")  # target is <= 0.3
    assert t[2].startswith("MISS Watson-DFT RGB: peak memory 10 MB vs original 5 MB")
