"""The CorrWise paper's toy data: a car sprite pasted at a random horizontal offset onto a street background.

The task (Geng et al., CVPR 2022, section 4.1) has no usable input: a generator sees the same fixed
noise for every sample and must output one image, while the targets differ only by the car's
horizontal position. The optimum of a pixel-wise loss is then the per-pixel median (L1) or mean
(L2) over the car positions, a smeared car; a correspondence-wise loss aligns the output to each
target before comparing, and its optimum is a sharp car.

Images: ``bg.png`` (1242x375 street scene) and ``car.png`` (222x85 RGBA) from the paper's
repository, fetched and verified by :mod:`genloss.weights` (:func:`toy_asset_paths`). As in the
paper, the background is centre-cropped to 512x256 at its native resolution, the car keeps its
native size, and its top-left corner is at ``(x, y) * (bg_size - car_size)`` with
``x ~ U(x_center - x_range, x_center + x_range)`` (0.5 +/- 0.15) and ``y = y_center`` (0.7), rounded
to whole pixels. ``width`` < 512 downsamples the whole scene (background crop and car alike) for
small experiments.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..weights import WEIGHT_FILES, resolve
from .images import read_image, resize_image

#: the paper's two images (described in genloss.hub's table)
BACKGROUND = WEIGHT_FILES["bg.png"]
SPRITE = WEIGHT_FILES["car.png"]

#: the paper's scene: background centre crop (height, width) at native resolution
SCENE_SIZE = (256, 512)


def toy_asset_paths(assets_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Verified local paths of ``bg.png`` and ``car.png``.

    Looked up in ``assets_dir``, ``GENLOSS_WEIGHTS_DIR``, the cache, else downloaded from the paper's
    repository (sha256-checked); offline without the files, a
    :class:`~genloss.weights.WeightsUnavailableError` says where to put them.
    """
    return resolve(BACKGROUND, assets_dir), resolve(SPRITE, assets_dir)


class CarSprites(Dataset):
    """Toy samples ``{'input': fixed noise (3, H, W), 'target': scene (3, H, W) in [0, 1], 'x': offset}``.

    Args:
        background: (3, Hb, Wb) RGB tensor in [0, 1], at least 256x512.
        sprite: (4, hs, ws) RGBA tensor in [0, 1] (alpha in channel 3).
        width: scene width in pixels; the paper's 512, smaller values downsample the scene
            (H = width / 2).
        length: samples per epoch (the paper: 500).
        x_center, x_range: the car's horizontal position ~ U(x_center +/- x_range), as a fraction
            of the free width (0 = left border, 1 = right border).
        y_center, y_range: the same vertically (the paper: 0.7 and 0).
        seed: sample ``i`` draws its position from ``(seed, i)``, so the data set is reproducible
            and every epoch sees the same ``length`` positions; the noise input comes from ``seed``.
    """

    def __init__(self, background: torch.Tensor, sprite: torch.Tensor, width: int = 512, length: int = 500,
                 x_center: float = 0.5, x_range: float = 0.15, y_center: float = 0.7, y_range: float = 0.0,
                 seed: int = 0) -> None:
        if background.dim() != 3 or background.shape[0] != 3:
            raise ValueError(f"background must be an RGB tensor (3, H, W), got {tuple(background.shape)}")
        if sprite.dim() != 3 or sprite.shape[0] != 4:
            raise ValueError(f"sprite must be an RGBA tensor (4, h, w), got {tuple(sprite.shape)}")
        hb, wb = background.shape[1:]
        if hb < SCENE_SIZE[0] or wb < SCENE_SIZE[1]:
            raise ValueError(f"background must be at least {SCENE_SIZE[0]}x{SCENE_SIZE[1]}, got {hb}x{wb}")
        if not 8 <= int(width) <= SCENE_SIZE[1] or int(width) % 2:
            raise ValueError(f"width must be an even number of pixels in [8, {SCENE_SIZE[1]}], got {width!r}")
        for name, c, r in (("x", x_center, x_range), ("y", y_center, y_range)):
            if r < 0 or c - r < 0 or c + r > 1:
                raise ValueError(f"{name}_center +/- {name}_range must stay in [0, 1], got {c} +/- {r}")
        top, left = (hb - SCENE_SIZE[0]) // 2, (wb - SCENE_SIZE[1]) // 2
        scene = background[:, top:top + SCENE_SIZE[0], left:left + SCENE_SIZE[1]]
        scale = int(width) / SCENE_SIZE[1]
        self.height, self.width = int(width) // 2, int(width)
        self.background = resize_image(scene, (self.height, self.width))
        hs, ws = sprite.shape[1:]
        size = (max(1, round(hs * scale)), max(1, round(ws * scale)))
        if size[0] > self.height or size[1] > self.width:
            raise ValueError(f"the sprite ({hs}x{ws} at scale {scale:g}) does not fit the "
                             f"{self.height}x{self.width} scene")
        sprite = resize_image(sprite, size)
        self.sprite_rgb, self.sprite_alpha = sprite[:3], sprite[3:4]
        self.length = int(length)
        self.x_center, self.x_range, self.y_center, self.y_range = x_center, x_range, y_center, y_range
        self.seed = int(seed)
        g = torch.Generator().manual_seed(self.seed)
        self.noise = torch.randn(3, self.height, self.width, generator=g)

    @classmethod
    def from_files(cls, assets_dir: str | os.PathLike | None = None, **kwargs) -> CarSprites:
        """Load ``bg.png`` and ``car.png`` (see :func:`toy_asset_paths`) and build the data set."""
        bg, car = toy_asset_paths(assets_dir)
        return cls(read_image(bg, "RGB"), read_image(car, "RGBA"), **kwargs)

    def composite(self, x: float, y: float | None = None) -> torch.Tensor:
        """The scene (3, H, W) with the car's top-left corner at ``(x, y) * (scene - sprite)`` (whole pixels)."""
        y = self.y_center if y is None else y
        h, w = self.sprite_rgb.shape[1:]
        left = int(x * (self.width - w))
        top = int(y * (self.height - h))
        img = self.background.clone()
        region = img[:, top:top + h, left:left + w]
        img[:, top:top + h, left:left + w] = self.sprite_alpha * self.sprite_rgb + (1 - self.sprite_alpha) * region
        return img

    def centered(self) -> torch.Tensor:
        """The scene with the car at the centre of its range: the sharp reference of the toy experiment."""
        return self.composite(self.x_center, self.y_center)

    def position(self, index: int) -> tuple[float, float]:
        """The (x, y) position fractions of sample ``index``."""
        rng = np.random.default_rng((self.seed, int(index)))
        x = rng.uniform(self.x_center - self.x_range, self.x_center + self.x_range)
        y = rng.uniform(self.y_center - self.y_range, self.y_center + self.y_range) if self.y_range else self.y_center
        return float(x), float(y)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        x, y = self.position(index)
        return {"input": self.noise, "target": self.composite(x, y), "x": torch.tensor(x)}
