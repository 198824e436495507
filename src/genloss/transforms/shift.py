"""Random joint shift of an image pair (the Watson paper's training augmentation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift_pair(
    input: torch.Tensor,
    target: torch.Tensor,
    max_shift: int = 8,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift both (N, C, H, W) images by the same random offset of 0..max_shift-1 px (minus max_shift/2).

    Both images are replicate-padded by ``max_shift // 2`` on every side and cropped back to
    (H, W) at a random offset drawn once per call (the same for the whole batch, as in the paper).
    This moves the 8x8 block grid relative to the image content, so a blockwise loss does not
    learn the grid's position. Uses torch's RNG (seed it with ``torch.manual_seed`` or pass a
    ``generator``).
    """
    if max_shift < 2:
        return input, target
    oy, ox = torch.randint(0, max_shift, (2,), generator=generator).tolist()
    return shift_image(input, oy, ox, max_shift), shift_image(target, oy, ox, max_shift)


def shift_image(x: torch.Tensor, oy: int, ox: int, max_shift: int = 8) -> torch.Tensor:
    """Replicate-pad (N, C, H, W) by ``max_shift // 2`` and crop (H, W) at offset (oy, ox)."""
    pad = max_shift // 2
    h, w = x.shape[-2:]
    return F.pad(x, (pad, pad, pad, pad), mode="replicate")[..., oy : oy + h, ox : ox + w]
