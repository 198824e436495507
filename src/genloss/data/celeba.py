"""CelebA faces for the VAE experiment, cropped to the face and resized to 64x64 as in the Watson paper.

:func:`celeba_dataset` reads either torchvision's CelebA (``root/celeba/img_align_celeba`` with
``list_eval_partition.txt``; ``download=True`` asks torchvision to fetch it from Google Drive, which
is often rate-limited) or any local folder of face images (searched recursively), split 90 % /
10 % by a fixed random permutation as the paper's training script does.

**Crop.** The paper's preprocessing (``celebA_download.py``) crops the 178x218 aligned faces with
the box ``(25, 45, w - 25, 45 + w - 45)`` = 128 px wide but 133 px high, so the faces are slightly
squeezed when resized to 64x64; the evident intent is a square 128x128 box at (25, 45). genloss
uses the square box (``crop='face'``, the default for 178x218 images); ``crop='paper'`` reproduces
the published 128x133 box. Images of other sizes are centre-cropped to a square (``crop='center'``),
or only resized (``crop='none'``; e.g. for folders that are already 64x64).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .mnist import ImageFiles

ALIGNED_SIZE = (178, 218)  # (width, height) of img_align_celeba
CROPS = ("auto", "face", "paper", "center", "none")


class CelebACrop:
    """PIL image -> (3, size, size) float tensor in [0, 1]: crop (see the module doc), then resize."""

    def __init__(self, size: int = 64, crop: str = "auto") -> None:
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        self.size = int(size)
        self.crop = crop

    def box(self, width: int, height: int) -> tuple[int, int, int, int] | None:
        """The crop box (left, top, right, bottom) for an image of this size, ``None`` for no crop."""
        crop = self.crop
        if crop == "auto":
            crop = "face" if (width, height) == ALIGNED_SIZE else "center"
        if crop == "face":
            return (25, 45, width - 25, 45 + width - 50)
        if crop == "paper":
            return (25, 45, width - 25, 45 + width - 45)
        if crop == "center":
            s = min(width, height)
            left, top = (width - s) // 2, (height - s) // 2
            return (left, top, left + s, top + s)
        return None

    def __call__(self, img) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms.functional import to_tensor

        box = self.box(*img.size)
        if box is not None:
            img = img.crop(box)
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.Resampling.LANCZOS)  # antialiased, as the paper
        return to_tensor(img)


class _ImagesOnly(Dataset):
    """Wrap torchvision's CelebA so items are ``(image, 0)`` (no attribute files needed)."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.ds[index][0], 0


def celeba_dataset(root: str | Path, split: str = "train", size: int = 64, crop: str = "auto",
                   download: bool = False, seed: int = 0, test_fraction: float = 0.1) -> Dataset:
    """CelebA (or any folder of face images) as ``(image (3, size, size) in [0, 1], 0)`` items.

    Args:
        root: torchvision's CelebA root (holding ``celeba/``) or a folder of images.
        split: ``'train'`` or ``'test'`` (torchvision's ``'valid'`` is accepted for its own split).
        size: output side (64 in the paper).
        crop: see :class:`CelebACrop`.
        download: let torchvision fetch CelebA into ``root``.
        seed, test_fraction: the fixed random split of a plain folder (the paper: 90 % / 10 %).
    """
    if split not in ("train", "test", "valid"):
        raise ValueError(f"split must be 'train', 'test' or 'valid', got {split!r}")
    root = Path(root)
    transform = CelebACrop(size, crop)
    if download or (root / "celeba" / "list_eval_partition.txt").is_file():
        from torchvision.datasets import CelebA

        return _ImagesOnly(CelebA(str(root), split=split, target_type=[], transform=transform, download=download))
    if not root.is_dir():
        raise FileNotFoundError(
            f"no CelebA data at {root}: expected torchvision's {root / 'celeba'} (data.download: true fetches "
            f"it) or a folder of face images"
        )
    if split == "valid":
        raise ValueError("split 'valid' exists only in torchvision's CelebA; a plain folder has 'train' and 'test'")
    files = ImageFiles(root, transform, mode="RGB", labelled=False)
    order = np.random.default_rng(seed).permutation(len(files))
    n_test = max(1, int(round(test_fraction * len(files))))
    idx = order[:n_test] if split == "test" else order[n_test:]
    return Subset(files, idx.tolist())
