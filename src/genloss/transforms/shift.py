"""Shift of an image by a given offset with replicate padding (the Watson paper's training augmentation:
the Watson losses draw one random offset per call and shift prediction and target alike)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def shift_image(x: torch.Tensor, oy: int, ox: int, max_shift: int = 8) -> torch.Tensor:
    """Replicate-pad (N, C, H, W) by ``max_shift // 2`` and crop (H, W) at offset (oy, ox)."""
    pad = max_shift // 2
    h, w = x.shape[-2:]
    return F.pad(x, (pad, pad, pad, pad), mode="replicate")[..., oy : oy + h, ox : ox + w]
