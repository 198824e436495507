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
    pad = max_shift // 2
    h, w = input.shape[-2:]
    oy, ox = torch.randint(0, max_shift, (2,), generator=generator).tolist()
    both = F.pad(torch.cat([input, target], 0), (pad, pad, pad, pad), mode="replicate")
    both = both[..., oy : oy + h, ox : ox + w]
    return both[: input.shape[0]], both[input.shape[0] :]
