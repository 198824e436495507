"""MNIST for the VAE experiment: torchvision's dataset or a local folder of images, padded to 32x32.

The Watson paper trains its MNIST VAE on 32x32 images: the 28x28 digits zero-padded by 2 px.
:func:`mnist_dataset` reads either

* torchvision's MNIST files under ``root`` (``root/MNIST/raw/...``; ``download=True`` fetches them), or
* a local image folder ``root/<split>/<label>/*.png`` (the layout of the paper's
  ``mnist_download.py``), read as greyscale, or ``root/<split>/*.png`` without labels.

Items are ``(image (1, size, size) float32 in [0, 1], label int)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .images import open_8bit, write_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def pad_or_crop_to(size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A transform that centre-pads (zeros) or centre-crops a (C, H, W) tensor to (C, size, size)."""

    def fit(img: torch.Tensor) -> torch.Tensor:
        _, h, w = img.shape
        out = img.new_zeros(img.shape[0], size, size)
        # centred overlap of the input and the output box
        ch, cw = min(h, size), min(w, size)
        iy, ix = (h - ch) // 2, (w - cw) // 2
        oy, ox = (size - ch) // 2, (size - cw) // 2
        out[:, oy:oy + ch, ox:ox + cw] = img[:, iy:iy + ch, ix:ix + cw]
        return out

    return fit


class ImageFiles(Dataset):
    """Images found under a folder: ``(transform(image), label)`` with labels from class subfolders.

    ``root/<class>/*.png`` gives labels 0..K-1 in sorted class-name order; images directly in
    ``root`` (or nested without a class level) get label 0 when ``labelled=False``. Files are
    listed once, sorted, so the order is the same on every machine.
    """

    def __init__(self, root: str | Path, transform: Callable, mode: str = "RGB", labelled: bool = True) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        self.transform = transform
        self.mode = mode
        classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.samples: list[tuple[Path, int]] = []
        if labelled and classes:
            for label, cls in enumerate(classes):
                self.samples += [(p, label) for p in _image_files(self.root / cls)]
        else:
            self.samples = [(p, 0) for p in _image_files(self.root)]
        if not self.samples:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {self.root}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(open_8bit(path, self.mode)), label


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def save_image_folder(images: torch.Tensor, labels: Sequence[int] | None, folder: str | Path) -> Path:
    """Write images (N, C, H, W) in [0, 1] as PNGs ``folder/<label>/<i>.png`` (or ``folder/<i>.png``).

    The inverse of :class:`ImageFiles`; used to build local datasets in the same format as the
    real ones (tests, smoke runs).
    """
    folder = Path(folder)
    for i, img in enumerate(images):
        sub = folder / str(int(labels[i])) if labels is not None else folder
        write_image(img, sub / f"{i:06d}.png")
    return folder


def mnist_dataset(root: str | Path, split: str = "train", size: int = 32, download: bool = False) -> Dataset:
    """MNIST (or any greyscale digit set in the same layout) as ``(image (1, size, size), label)``.

    Args:
        root: folder with torchvision's ``MNIST/`` files, or with ``train/`` and ``test/`` image folders.
        split: ``'train'`` or ``'test'``.
        size: output side; 28x28 digits are zero-padded (32 = the paper), larger images centre-cropped.
        download: let torchvision download MNIST into ``root`` when it is not there.
    """
    from torchvision import transforms

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    transform = transforms.Compose([transforms.ToTensor(), pad_or_crop_to(int(size))])
    if download or (root / "MNIST" / "raw").is_dir():
        from torchvision.datasets import MNIST

        return MNIST(str(root), train=split == "train", download=download, transform=transform)
    if (root / split).is_dir():
        return ImageFiles(root / split, transform, mode="L")
    raise FileNotFoundError(
        f"no MNIST data under {root}: expected torchvision's {root / 'MNIST' / 'raw'} (set data.download: true "
        f"to fetch it) or an image folder {root / split}/<label>/*.png"
    )
