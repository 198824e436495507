"""Video data for next-frame prediction: a folder-of-frames layout and synthetic moving sprites.

Folder-of-frames layout (what ``scripts/prepare_kitti.py`` writes for KITTI)::

    ROOT/<split>/<sequence>/<frame>.png      e.g. ROOT/train/2011_09_26_drive_0001_sync/0000000000.png

Frames of a sequence are ordered by file name. A sample is a window of ``context_length``
frames followed by the target frame, ``frames_skip`` frames apart.

Both datasets return dicts with ``context`` (float32 (3, T, H, W) in [0, 1], oldest first),
``target`` (float32 (3, H, W) in [0, 1]) and ``name`` (str, unique per sample).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .images import read_image, resize_image, write_image
from .photos import array_to_tensor, photo_array

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")


def _size_pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    h, w = (int(s) for s in size)
    return (h, w)


class FrameFolderVideo(Dataset):
    """Every window of ``context_length + 1`` frames in ``root/split/<sequence>/``.

    Args:
        root: the dataset folder (holding ``train/``, ``val/``, ``test/``).
        split: sub-folder to read.
        context_length: number of context frames T (the paper uses 3).
        frames_skip: step between the frames of a window (1: consecutive frames).
        size: resize frames to (H, W) (an int means square); ``None`` keeps them (all frames of a
            batch must then have the same size).
        flip: randomly mirror whole windows horizontally (training augmentation, as the paper).
        max_samples: use only the first windows (evenly spaced over the data) for quick runs.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        context_length: int = 3,
        frames_skip: int = 1,
        size: int | Sequence[int] | None = None,
        flip: bool = False,
        max_samples: int | None = None,
    ) -> None:
        if context_length < 1 or frames_skip < 1:
            raise ValueError(f"context_length and frames_skip must be >= 1, got {context_length}, {frames_skip}")
        folder = Path(root) / split
        if not folder.is_dir():
            raise FileNotFoundError(
                f"video folder {folder} does not exist; expected ROOT/{split}/<sequence>/<frame>.png "
                "(see scripts/prepare_kitti.py)"
            )
        self.context_length = context_length
        self.frames_skip = frames_skip
        self.size = _size_pair(size)
        self.flip = flip
        span = context_length * frames_skip  # index distance from the first context frame to the target
        self.sequences: dict[str, list[Path]] = {}
        self.windows: list[tuple[str, int]] = []
        for seq in sorted(p for p in folder.iterdir() if p.is_dir()):
            frames = sorted(p for p in seq.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            self.sequences[seq.name] = frames
            self.windows.extend((seq.name, start) for start in range(len(frames) - span))
        if not self.windows:
            raise ValueError(f"{folder} holds no sequence with at least {span + 1} frames")
        if max_samples is not None and max_samples < len(self.windows):
            picks = np.linspace(0, len(self.windows) - 1, max_samples).round().astype(int)
            self.windows = [self.windows[i] for i in picks]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        seq, start = self.windows[index]
        frames = self.sequences[seq]
        idx = [start + k * self.frames_skip for k in range(self.context_length + 1)]
        images = torch.stack([read_image(frames[i], size=self.size) for i in idx], dim=1)  # (3, T+1, H, W)
        if self.flip and torch.rand(()) < 0.5:
            images = images.flip(-1)
        return {"context": images[:, :-1], "target": images[:, -1], "name": f"{seq}_{frames[start].stem}"}


# ------------------------------------------------------------------------------------------------
# synthetic moving sprites
# ------------------------------------------------------------------------------------------------
#: scikit-image photographs used as backgrounds and as the source of the sprites
BACKGROUND_PHOTOS = ("coffee", "chelsea", "astronaut", "rocket")
SPRITE_PHOTOS = ("astronaut", "chelsea", "coffee", "immunohistochemistry")


def _photo(name: str, size: tuple[int, int], centre_fraction: float = 1.0) -> np.ndarray:
    """A scikit-image photograph (its central square of ``centre_fraction`` of the shorter side, or
    all of it), resized to ``size``: float32 (H, W, 3) in [0, 1]."""
    img = array_to_tensor(photo_array(name))[0]
    if centre_fraction < 1:
        h, w = img.shape[1:]
        c = int(min(h, w) * centre_fraction) // 2
        img = img[:, h // 2 - c : h // 2 + c, w // 2 - c : w // 2 + c]
    return resize_image(img, size).permute(1, 2, 0).numpy()


class MovingSpritesVideo(Dataset):
    """Sprites cut from real photographs moving over a real, slowly panning photograph.

    Sample ``i`` is generated on the fly from ``seed + i`` (the same index always gives the same
    clip): a background crop of a scikit-image photograph that pans by ``pan`` px per frame, and
    ``num_sprites`` round sprites (discs cut from other photographs, with a soft edge) that move on
    straight lines with integer velocities of up to ``max_speed`` px per frame. The target frame is
    the next frame of the same motion, so a predictor has to extrapolate the motion.

    Args:
        length: number of samples.
        size: frame size (square, >= 16).
        context_length: number of context frames T.
        num_sprites, sprite_size, max_speed, pan: scene parameters (sprite_size default: size // 3).
        seed: base seed.
    """

    def __init__(
        self,
        length: int = 256,
        size: int = 32,
        context_length: int = 3,
        num_sprites: int = 2,
        sprite_size: int | None = None,
        max_speed: int = 2,
        pan: int = 1,
        seed: int = 0,
    ) -> None:
        if size < 16:
            raise ValueError(f"size must be >= 16, got {size}")
        self.length = length
        self.size = size
        self.context_length = context_length
        self.num_sprites = num_sprites
        self.sprite_size = sprite_size or max(6, size // 3)
        self.max_speed = max_speed
        self.pan = pan
        self.seed = seed
        frames = context_length + 1
        # The crop window of a clip: the frame plus room to pan `frames` steps either way.
        self._bg_extent = size + 2 * pan * frames
        self._backgrounds = [_photo(n, (2 * self._bg_extent, 2 * self._bg_extent)) for n in BACKGROUND_PHOTOS]
        s = self.sprite_size
        yy, xx = np.mgrid[:s, :s]
        r = np.sqrt((yy - (s - 1) / 2) ** 2 + (xx - (s - 1) / 2) ** 2)
        self._alpha = np.clip((s / 2 - r) / 1.5, 0.0, 1.0)[..., None].astype(np.float32)  # soft-edged disc
        # sprite sources: the central region of each photograph (faces, the cat, the cup)
        self._sprite_sources = [_photo(name, (4 * s, 4 * s), centre_fraction=0.5) for name in SPRITE_PHOTOS]

    def __len__(self) -> int:
        return self.length

    def clip(self, index: int) -> np.ndarray:
        """All T+1 frames of sample ``index`` as a float32 array (T+1, H, W, 3) in [0, 1]."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        rng = np.random.default_rng(self.seed + index)
        n, s, frames = self.size, self.sprite_size, self.context_length + 1
        bg_src = self._backgrounds[rng.integers(len(self._backgrounds))]
        oy, ox = rng.integers(0, bg_src.shape[0] - self._bg_extent + 1, 2)
        direction = rng.choice([-1, 1], 2) * self.pan
        sprites = []
        for _ in range(self.num_sprites):
            src = self._sprite_sources[rng.integers(len(self._sprite_sources))]
            sy, sx = rng.integers(0, src.shape[0] - s, 2)
            speed = rng.integers(-self.max_speed, self.max_speed + 1, 2)
            start = rng.integers(0, n - s, 2)
            sprites.append((src[sy : sy + s, sx : sx + s], start, speed))
        out = np.empty((frames, n, n, 3), np.float32)
        base_y, base_x = oy + self.pan * frames, ox + self.pan * frames
        for t in range(frames):
            y0, x0 = base_y + direction[0] * t, base_x + direction[1] * t
            frame = bg_src[y0 : y0 + n, x0 : x0 + n].copy()
            for patch, start, speed in sprites:
                # bounce off the borders so sprites stay in view
                py, px = (_bounce(int(start[k] + speed[k] * t), n - s) for k in (0, 1))
                region = frame[py : py + s, px : px + s]
                frame[py : py + s, px : px + s] = self._alpha * patch + (1 - self._alpha) * region
            out[t] = frame
        return np.clip(out, 0.0, 1.0)

    def __getitem__(self, index: int) -> dict:
        clip = torch.from_numpy(self.clip(index)).permute(3, 0, 1, 2)  # (3, T+1, H, W)
        return {"context": clip[:, :-1].contiguous(), "target": clip[:, -1].contiguous(),
                "name": f"sprites_{index:06d}"}


def _bounce(p: int, hi: int) -> int:
    """Reflect position ``p`` into [0, hi] (a sprite bouncing off the frame border)."""
    period = 2 * hi
    p = p % period
    return p if p <= hi else period - p


def save_frames(clip: np.ndarray | torch.Tensor, folder: str | os.PathLike) -> Path:
    """Write frames (T, H, W, 3) in [0, 1] as ``folder/0000000000.png, ...`` (the KITTI naming)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(clip.numpy() if isinstance(clip, torch.Tensor) else clip):
        write_image(frame, folder / f"{t:010d}.png")
    return folder
