"""Image writers refuse data of another range instead of saturating it."""

from __future__ import annotations

import pytest
import torch

from genloss.data.images import tensor_to_array, write_image


def test_writers_refuse_other_ranges_and_clip_only_overshoot(tmp_path):
    x = torch.rand(3, 8, 8)
    assert tensor_to_array(x * 1.02).max() == 255  # slight overshoot: clipped
    for bad in (x * 255, x * 2 - 1):  # [0, 255] would turn white, [-1, 1] half black
        with pytest.raises(ValueError, match="outside the expected range"):
            write_image(bad, tmp_path / "a.png")
    nan = x.clone()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tensor_to_array(nan)
    assert not (tmp_path / "a.png").exists()
