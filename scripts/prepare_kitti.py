#!/usr/bin/env python
"""Turn KITTI raw drives into the folder-of-frames layout of the video prediction experiment.

Input: the KITTI raw data as downloaded (``SOURCE/2011_09_26/2011_09_26_drive_0001_sync/image_03/data/*.png``)
and the split files ``splits_train.txt``, ``splits_val.txt``, ``splits_test.txt`` (comma-separated
drive names, the PredNet splits used by the CorrWise paper).

Output: ``TARGET/<split>/<drive>/<frame>.png``, each frame resized to ``--height`` (keeping the
aspect ratio) and centre-cropped to ``--width``: 375x1242 -> 256x848 -> 256x512 with the defaults,
as the paper's preprocessing. Read it with ``genloss.data.video.FrameFolderVideo`` (config
``data.kind: frames``, ``data.root: TARGET``).

Drives named in a split file but missing from SOURCE are listed at the end and the script exits
with status 1 (the others are still converted); existing output frames are skipped, so an
interrupted run can be restarted.

    python scripts/prepare_kitti.py --source /data/kitti_raw --target data/kitti_512 --splits path/to/kitti-splits
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def read_split(path: Path) -> list[str]:
    """Drive names of a split file (comma- or newline-separated)."""
    text = path.read_text().replace("\n", ",")
    return [name.strip() for name in text.split(",") if name.strip()]


def resize_and_crop(im, height: int, width: int):
    """Resize a PIL image to ``height`` keeping its aspect ratio, then centre-crop to ``width``."""
    from PIL import Image

    w, h = im.size
    new_w = max(width, round(w * height / h))
    im = im.resize((new_w, height), Image.BICUBIC)
    left = (new_w - width) // 2
    return im.crop((left, 0, left + width, height))


def convert_drive(source: Path, drive: str, out: Path, height: int, width: int, camera: str, progress: bool) -> int:
    """Convert one drive; returns the number of frames written (0 when the drive is missing)."""
    from PIL import Image
    from tqdm.auto import tqdm

    frames_dir = source / drive[:10] / drive / camera / "data"
    if not frames_dir.is_dir():
        return 0
    frames = sorted(p for p in frames_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in tqdm(frames, desc=drive, leave=False, disable=not progress):
        dest = out / (path.stem + ".png")
        if dest.is_file():
            written += 1
            continue
        with Image.open(path) as im:
            resize_and_crop(im.convert("RGB"), height, width).save(dest)
        written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, type=Path, help="KITTI raw root (holds 2011_09_26/, ...)")
    parser.add_argument("--target", required=True, type=Path, help="output folder")
    parser.add_argument("--splits", required=True, type=Path, help="folder with splits_{train,val,test}.txt")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--camera", default="image_03", help="camera folder (the paper uses image_03)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    missing = []
    for split in SPLITS:
        split_file = args.splits / f"splits_{split}.txt"
        if not split_file.is_file():
            print(f"error: split file {split_file} not found", file=sys.stderr)
            return 2
        drives = read_split(split_file)
        total = 0
        for drive in drives:
            n = convert_drive(args.source, drive, args.target / split / drive, args.height, args.width,
                              args.camera, not args.no_progress)
            if n == 0:
                missing.append(f"{split}: {drive}")
            total += n
        print(f"{split}: {len(drives)} drives, {total} frames -> {args.target / split}")
    if missing:
        print("drives not found under --source (download them from the KITTI raw data page):\n  "
              + "\n  ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
