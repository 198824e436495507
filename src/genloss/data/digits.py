"""A small MNIST-like set of real handwritten digits: scikit-learn's 8x8 digits, upsampled.

``sklearn.datasets.load_digits`` ships 1,797 handwritten digits (UCI optdigits) as 8x8 images with
values 0..16; it is installed with scikit-learn, so tests and smoke runs need no download. MNIST
digits are size-normalised into a 20x20 box centred in a 28x28 image (the Watson paper pads them
to 32x32); :func:`load_digit_images` does the same with the 8x8 images: bilinear upsampling to
20x20, then zero padding to 28x28 or 32x32. Values are in [0, 1], white strokes on black, like
``torchvision.datasets.MNIST`` after ``ToTensor``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

#: side of the box the strokes are scaled into (as MNIST)
DIGIT_BOX = 20
SPLITS = ("train", "test", "all")


def load_digit_images(size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as images (N, 1, size, size) float32 in [0, 1] and labels (N,) int64.

    Args:
        size: output side, at least 20 (28 = MNIST, 32 = MNIST padded as in the Watson paper).
    """
    from sklearn.datasets import load_digits

    if not isinstance(size, int) or size < DIGIT_BOX:
        raise ValueError(f"size must be an int >= {DIGIT_BOX}, got {size!r}")
    digits = load_digits()
    small = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8)
    box = F.interpolate(small, size=(DIGIT_BOX, DIGIT_BOX), mode="bilinear", align_corners=False).clamp(0, 1)
    before = (size - DIGIT_BOX) // 2
    after = size - DIGIT_BOX - before
    images = F.pad(box, (before, after, before, after))
    return images.contiguous(), torch.from_numpy(digits.target.astype(np.int64))


class DigitsDataset(Dataset):
    """The upsampled digits as a dataset of ``(image (1, size, size) in [0, 1], label)`` pairs.

    Args:
        split: ``'train'`` (80 %), ``'test'`` (20 %) or ``'all'``; the split is a fixed random
            permutation (``seed``), the same on every machine.
        size: image side (28 or 32, see :func:`load_digit_images`).
        seed: seed of the train/test permutation.
        limit: keep only the first ``limit`` images of the split (tiny smoke runs).
    """

    def __init__(self, split: str = "train", size: int = 28, seed: int = 0, limit: int | None = None,
                 test_fraction: float = 0.2) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        images, labels = load_digit_images(size)
        order = torch.from_numpy(np.random.default_rng(seed).permutation(len(labels)))
        n_test = int(round(test_fraction * len(labels)))
        if split == "test":
            order = order[:n_test]
        elif split == "train":
            order = order[n_test:]
        if limit is not None:
            order = order[: int(limit)]
        self.images = images[order]
        self.labels = labels[order]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])
