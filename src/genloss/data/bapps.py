"""BAPPS 2AFC data (Zhang et al., CVPR 2018): download, extraction and a loader of the triplets.

Layout of one category folder (what the official archives unpack to, e.g. ``2afc/val/cnn``)::

    ref/000000.png    reference patch (64x64 RGB)
    p0/000000.png     first distorted patch
    p1/000000.png     second distorted patch
    judge/000000.npy  fraction of the human raters who found p1 closer to ref (float in [0, 1])

Splits and categories of the 2AFC set:

* ``train``: ``traditional``, ``cnn``, ``mix``
* ``val``: ``traditional``, ``cnn``, ``superres``, ``deblur``, ``color``, ``frameinterp``

The archives are served by the BAPPS authors without published checksums, so :func:`download_bapps`
cannot verify a hash; it checks the HTTP size of the download and then the structure of what was
extracted (every expected category, matching ref/p0/p1/judge files, judgments in [0, 1]) with
:func:`verify_bapps`. Downloads resume with HTTP ``Range`` requests after an interruption.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import os
import re
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..weights import copy_with_progress
from .images import read_image
from .photos import photo_array

_BASE_URL = "https://people.eecs.berkeley.edu/~rich.zhang/projects/2018_perceptual/dataset/"

#: the official archives of the 2AFC data, by split (the URLs of the paper's download script)
BAPPS_URLS: dict[str, str] = {
    "train": _BASE_URL + "twoafc_train.tar.gz",
    "val": _BASE_URL + "twoafc_val.tar.gz",
}

#: categories of each split, in the order of the papers' tables
BAPPS_CATEGORIES: dict[str, tuple[str, ...]] = {
    "train": ("traditional", "cnn", "mix"),
    "val": ("traditional", "cnn", "superres", "deblur", "frameinterp", "color"),
}

#: accepted spellings of category names -> folder name
_CATEGORY_ALIASES = {"colorization": "color", "colourization": "color", "colour": "color",
                     "super-resolution": "superres", "superresolution": "superres",
                     "frame-interpolation": "frameinterp", "video-deblurring": "deblur"}

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")
_PARTS = ("ref", "p0", "p1")


class BAPPSError(RuntimeError):
    """The BAPPS data is missing, incomplete or malformed."""


def normalize_category(name: str) -> str:
    """Folder name of a category (``'colorization'`` -> ``'color'``; ``'val/cnn'`` stays ``'val/cnn'``)."""
    head, _, tail = name.rpartition("/")
    tail = _CATEGORY_ALIASES.get(tail.lower(), tail.lower())
    return f"{head}/{tail}" if head else tail


# ------------------------------------------------------------------------------------------------
# download
# ------------------------------------------------------------------------------------------------
def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    progress: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest + '.part'`` with an HTTP Range request.

    A finished download is renamed from ``.part`` to ``dest`` only once the number of bytes matches
    the size the server announced and a chunked reply ended with its last chunk, so an interrupted
    run leaves a ``.part`` file that the next call continues. A ``.part`` that does not fit the
    remote file (larger than it, or a reply for another range) is discarded and the download
    starts over; so is one when the server ignores ``Range`` (reply 200 instead of 206). A lock
    file serialises processes downloading the same ``dest``. A stall of ``timeout`` seconds is an error.

    Returns:
        the path of the complete file. An existing ``dest`` is returned without a request.
    """
    from filelock import FileLock

    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock_path = dest.with_name(f".{dest.name}.lock")
    try:
        with FileLock(str(lock_path)):
            if dest.is_file():  # another process finished it while this one waited
                return dest
            return _download_part(url, dest, progress, timeout, chunk_size)
    finally:
        with contextlib.suppress(OSError):  # the files are safe without it: .part and rename are per dest
            lock_path.unlink()


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a ``Content-Range: bytes A-B/N`` (or ``bytes */N``) header."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    return start, (int(m.group(2)) if m.group(2) != "*" else None)


def _download_part(url: str, dest: Path, progress: bool, timeout: float, chunk_size: int,
                   may_restart: bool = True) -> Path:
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # range not satisfiable: the .part is complete, or larger than the file
            _, total = _content_range(e.headers.get("Content-Range"))
            if total == offset:
                os.replace(part, dest)
                return dest
            part.unlink()  # stale: larger than (or not comparable with) the remote file
            if may_restart:
                return _download_part(url, dest, progress, timeout, chunk_size, may_restart=False)
        raise BAPPSError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise BAPPSError(
            f"downloading {url} failed ({e}); download it by hand and put it at {dest} "
            f"(a partial file at {part} is resumed)"
        ) from e
    with response:
        status = getattr(response, "status", 200)
        if offset and status == 206:
            start, _ = _content_range(response.headers.get("Content-Range"))
            if start != offset:  # not the continuation of our .part: start over
                response.close()
                part.unlink()
                if may_restart:
                    return _download_part(url, dest, progress, timeout, chunk_size, may_restart=False)
                raise BAPPSError(f"{url} answered a Range request for byte {offset} with bytes from {start}")
        elif offset:
            offset = 0  # the server sent the whole file: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None and length.strip().isdigit() else None
        try:
            with open(part, "ab" if offset else "wb") as out:
                copy_with_progress(response, out, total, dest.name, progress, initial=offset, chunk_size=chunk_size)
        except (OSError, http.client.HTTPException) as e:  # a stall (timeout) or a chunked reply cut short
            raise BAPPSError(f"download of {url} broke off at {part.stat().st_size} bytes ({e or type(e).__name__}); "
                             "run again to resume") from e
    size = part.stat().st_size
    if total is not None and size != total:
        raise BAPPSError(f"download of {url} stopped at {size} of {total} bytes; run again to resume")
    os.replace(part, dest)
    return dest


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike, progress: bool = True) -> Path:
    """Extract a ``.tar``/``.tar.gz`` into ``dest``, refusing members that would land outside it.

    A truncated or corrupted archive raises a :class:`BAPPSError` naming it.
    """
    try:
        return _extract(archive, dest, progress)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise BAPPSError(f"archive {archive} is truncated or corrupt ({e or type(e).__name__})") from e


def _extract(archive: str | os.PathLike, dest: str | os.PathLike, progress: bool) -> Path:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            target = (root / m.name).resolve()
            if root not in target.parents and target != root:
                raise BAPPSError(f"archive member {m.name!r} would be extracted outside {dest}")
            if m.issym() or m.islnk():
                raise BAPPSError(f"archive member {m.name!r} is a link; refusing to extract it")
        if progress:
            from tqdm.auto import tqdm

            members = tqdm(members, desc=f"extracting {Path(archive).name}", unit="file")
        # Python >= 3.12 has a safe extraction filter; older versions rely on the checks above.
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        for m in members:
            tar.extract(m, dest, **kw)
    return dest


def download_bapps(
    root: str | os.PathLike,
    splits: Sequence[str] = ("train", "val"),
    *,
    keep_archives: bool = False,
    progress: bool = True,
    urls: dict[str, str] | None = None,
) -> Path:
    """Download and extract the BAPPS 2AFC splits into ``root/2afc/<split>/<category>``.

    Args:
        root: data folder; archives are stored in it while downloading.
        splits: any of ``'train'`` (~150k triplets) and ``'val'`` (~36k triplets).
        keep_archives: keep the ``.tar.gz`` files after extraction.
        urls: replace :data:`BAPPS_URLS` (a mirror, or a local server in tests).

    Returns:
        the ``root/2afc`` folder. Splits that already pass :func:`verify_bapps` are skipped.
    """
    root = Path(root)
    urls = {**BAPPS_URLS, **(urls or {})}
    out = root / "2afc"
    for split in splits:
        if split not in BAPPS_CATEGORIES:
            raise ValueError(f"unknown BAPPS split {split!r}; expected one of {sorted(BAPPS_CATEGORIES)}")
        try:
            verify_bapps(out, [split])
            continue  # already there
        except BAPPSError:
            pass
        archive = download_file(urls[split], root / Path(urls[split]).name, progress=progress)
        # The archives hold <split>/<category>/... at their top level.
        try:
            extract_archive(archive, out, progress=progress)
        except BAPPSError as e:
            # no checksum is published: an archive that does not extract is never kept as complete
            archive.unlink(missing_ok=True)
            raise BAPPSError(f"{e}; it was deleted, run again to download it anew") from e
        verify_bapps(out, [split])
        if not keep_archives:
            archive.unlink()
    return out


# ------------------------------------------------------------------------------------------------
# layout and verification
# ------------------------------------------------------------------------------------------------
def _stems(folder: Path, extensions: Iterable[str]) -> dict[str, Path]:
    ext = tuple(extensions)
    return {p.stem: p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in ext}


@dataclass(frozen=True)
class Triplet:
    """File paths of one 2AFC judgment."""

    ref: Path
    p0: Path
    p1: Path
    judge: Path


def list_triplets(folder: str | os.PathLike) -> list[Triplet]:
    """The triplets of one category folder, sorted by file name; raises if the folder is malformed.

    Files are matched by name across ``ref``/``p0``/``p1``/``judge`` (the original loader sorted
    each folder independently, which pairs wrong files silently when one file is missing).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BAPPSError(f"BAPPS category folder {folder} does not exist")
    sets = {}
    for part in (*_PARTS, "judge"):
        sub = folder / part
        if not sub.is_dir():
            raise BAPPSError(f"{folder} has no {part}/ folder; expected ref/, p0/, p1/ and judge/")
        sets[part] = _stems(sub, (".npy",) if part == "judge" else IMAGE_EXTENSIONS)
    names = set(sets["ref"])
    for part, files in sets.items():
        if set(files) != names:
            missing = sorted(names - set(files))[:5]
            extra = sorted(set(files) - names)[:5]
            raise BAPPSError(
                f"{folder}/{part} does not match ref/: missing {missing}, unexpected {extra} (first 5 shown)"
            )
    if not names:
        raise BAPPSError(f"{folder} holds no triplets")
    return [Triplet(*(sets[p][n] for p in (*_PARTS, "judge"))) for n in sorted(names)]


def verify_bapps(root: str | os.PathLike, splits: Sequence[str] = ("val",), check_judgments: bool = True) -> dict:
    """Check that ``root/<split>/<category>`` exists for every category and is well formed.

    Returns:
        ``{"val/cnn": number_of_triplets, ...}``. Raises :class:`BAPPSError` naming the problem.
    """
    root = Path(root)
    counts = {}
    for split in splits:
        for cat in BAPPS_CATEGORIES[split]:
            triplets = list_triplets(root / split / cat)
            if check_judgments:
                # a cheap sample: the first, middle and last judgment
                for t in (triplets[0], triplets[len(triplets) // 2], triplets[-1]):
                    load_judgment(t.judge)
            counts[f"{split}/{cat}"] = len(triplets)
    return counts


def load_judgment(path: str | os.PathLike) -> float:
    """The human judgment stored in a ``judge/*.npy`` file: fraction preferring p1, in [0, 1]."""
    value = np.load(path).astype(np.float64).reshape(-1)
    if value.size != 1:
        raise BAPPSError(f"{path} holds {value.size} values, expected one judgment")
    j = float(value[0])
    if not 0.0 <= j <= 1.0:
        raise BAPPSError(f"{path} holds the judgment {j}, expected a fraction in [0, 1]")
    return j


# ------------------------------------------------------------------------------------------------
# dataset
# ------------------------------------------------------------------------------------------------
class TwoAFCDataset(Dataset):
    """2AFC triplets of one or several category folders.

    Args:
        root: the ``2afc`` folder (holding ``train/`` and ``val/``), or any folder holding the
            category folders named in ``categories``.
        categories: ``'val/cnn'``-style paths relative to ``root`` (or plain category names with
            ``split``); default: every category of ``split``.
        split: used for plain category names and for the default categories.
        load_size: resize patches to this size (the papers use 64); ``None`` keeps them.

    Items are dicts with ``ref``, ``p0``, ``p1`` (float32 tensors (3, H, W) in [0, 1]), ``judge``
    (float32 scalar tensor: fraction of humans preferring p1) and ``category`` (str).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        categories: Sequence[str] | str | None = None,
        split: str = "val",
        load_size: int | None = 64,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise BAPPSError(
                f"BAPPS folder {self.root} does not exist; download it with "
                "`python -m genloss.data.bapps --root DATA` or genloss.data.bapps.download_bapps()"
            )
        if categories is None:
            if split not in BAPPS_CATEGORIES:
                raise ValueError(f"unknown split {split!r}; expected one of {sorted(BAPPS_CATEGORIES)}")
            categories = BAPPS_CATEGORIES[split]
        if isinstance(categories, str):
            categories = [categories]
        self.load_size = load_size
        self.items: list[tuple[Triplet, str]] = []
        self.categories: list[str] = []
        for cat in categories:
            rel = normalize_category(cat if "/" in cat else f"{split}/{cat}")
            self.categories.append(rel)
            self.items.extend((t, rel) for t in list_triplets(self.root / rel))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        t, cat = self.items[index]
        return {
            "ref": read_image(t.ref, shorter_side=self.load_size),
            "p0": read_image(t.p0, shorter_side=self.load_size),
            "p1": read_image(t.p1, shorter_side=self.load_size),
            "judge": torch.tensor(load_judgment(t.judge), dtype=torch.float32),
            "category": cat,
        }


# ------------------------------------------------------------------------------------------------
# a small synthetic set in the BAPPS layout (tests, smoke configs, demos)
# ------------------------------------------------------------------------------------------------
#: photographs of scikit-image used as references
SYNTHETIC_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
#: distortions of the synthetic set and how strongly the simulated raters perceive them
#: (fine grain is perceived much less than its pixel error suggests; colour casts more)
SYNTHETIC_DISTORTIONS = {"noise": 0.3, "blur": 1.0, "color": 1.0}


def _distort(ref: np.ndarray, kind: str, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Apply a distortion of ``strength`` in [0, 1] to an HxWx3 float image in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    if kind == "noise":  # fine, high-frequency grain
        out = ref + rng.normal(0.0, 0.2 * strength, ref.shape)
    elif kind == "blur":
        out = gaussian_filter(ref, sigma=(2.0 * strength, 2.0 * strength, 0)) if strength > 0 else ref
    elif kind == "color":  # a smooth colour cast: low frequency, large pixel error per unit strength
        direction = rng.normal(size=3)
        out = ref + 0.25 * strength * direction / np.linalg.norm(direction)
    else:
        raise ValueError(f"unknown distortion {kind!r}; expected one of {sorted(SYNTHETIC_DISTORTIONS)}")
    return np.clip(out, 0.0, 1.0)


def make_synthetic_bapps(
    root: str | os.PathLike,
    categories: dict[str, int] | None = None,
    *,
    size: int = 32,
    mixed: Sequence[str] = (),
    raters: int = 5,
    temperature: float = 0.05,
    seed: int = 0,
) -> Path:
    """Write a small 2AFC set in the BAPPS layout, with real photographs and simulated judgments.

    References are random ``size`` x ``size`` crops of scikit-image photographs. ``p0``/``p1`` are
    distortions of the reference (:data:`SYNTHETIC_DISTORTIONS`) with random strengths. Each rater
    prefers p1 with probability ``sigmoid((v0 - v1) / temperature)``, where ``v = gain * strength``
    is the perceived strength; the judgment is the fraction of ``raters`` preferring p1.

    In a normal category both patches get the same kind of distortion, so any sensible distance
    agrees with the raters. In the categories named in ``mixed`` the two patches get *different*
    kinds (grain vs. blur/colour cast), and the raters' gains disagree with pixel errors: a metric has
    to learn how visible each kind is (as a tuned perceptual metric does).

    Args:
        root: output folder; categories are written to ``root/<category>`` (e.g. ``'val/cnn'``).
        categories: ``{"val/traditional": 64, ...}`` number of triplets per category (default:
            16 per validation category).
        size: patch size in pixels.

    Returns:
        ``root``.
    """
    from PIL import Image

    root = Path(root)
    if categories is None:
        categories = {f"val/{c}": 16 for c in BAPPS_CATEGORIES["val"]}
    photos = [photo_array(name) / 255.0 for name in SYNTHETIC_PHOTOS]
    kinds = sorted(SYNTHETIC_DISTORTIONS)
    rng = np.random.default_rng(seed)
    for cat, n in categories.items():
        folder = root / normalize_category(cat)
        for part in (*_PARTS, "judge"):
            (folder / part).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            photo = photos[rng.integers(len(photos))]
            # crop 2x the patch size and downsample: patches of natural detail at a small size
            crop = 2 * size
            y, x = rng.integers(0, photo.shape[0] - crop), rng.integers(0, photo.shape[1] - crop)
            ref = photo[y : y + crop, x : x + crop].reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
            if cat in mixed:
                k0, k1 = rng.choice(["noise", rng.choice(["blur", "color"])], 2, replace=False)
            else:
                k0 = k1 = kinds[rng.integers(len(kinds))]
            s0, s1 = rng.uniform(0.1, 1.0, 2)
            v0, v1 = SYNTHETIC_DISTORTIONS[k0] * s0, SYNTHETIC_DISTORTIONS[k1] * s1
            p_prefer_p1 = 1.0 / (1.0 + np.exp(-(v0 - v1) / temperature))
            judge = rng.binomial(raters, p_prefer_p1) / raters
            images = {"ref": ref, "p0": _distort(ref, k0, s0, rng), "p1": _distort(ref, k1, s1, rng)}
            for part, im in images.items():
                Image.fromarray(np.round(im * 255).astype(np.uint8)).save(folder / part / f"{i:06d}.png")
            np.save(folder / "judge" / f"{i:06d}.npy", np.array([judge], dtype=np.float32))
    return root


def _main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Download and extract the BAPPS 2AFC data set.")
    parser.add_argument("--root", required=True, help="data folder; the data lands in ROOT/2afc/<split>/<category>")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=sorted(BAPPS_CATEGORIES))
    parser.add_argument("--keep-archives", action="store_true")
    args = parser.parse_args(argv)
    out = download_bapps(args.root, args.splits, keep_archives=args.keep_archives)
    for name, n in verify_bapps(out, args.splits).items():
        print(f"{name}: {n} triplets")


if __name__ == "__main__":  # pragma: no cover
    _main()
