"""Weight files: where they come from (URL + sha256), where they are cached, how to override them.

Resolution order for a file ``name`` (first hit wins):

1. ``weights_dir`` argument of the loader (a folder holding ``name``);
2. the ``GENLOSS_WEIGHTS_DIR`` environment variable (a folder, or several separated by ``os.pathsep``);
3. the cache directory, ``GENLOSS_CACHE_DIR`` or ``~/.cache/genloss`` (``$XDG_CACHE_HOME/genloss``);
4. a download from the file's public URL into the cache, verified against its sha256.

Every file found in 1-3 is verified against its sha256 too (a wrong file raises). When nothing is
found and the download fails (no network, or ``GENLOSS_OFFLINE=1``) a :class:`WeightsUnavailableError`
says what to download and where to put it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ENV_WEIGHTS_DIR = "GENLOSS_WEIGHTS_DIR"
ENV_CACHE_DIR = "GENLOSS_CACHE_DIR"
ENV_OFFLINE = "GENLOSS_OFFLINE"

_PERCEPTUAL_BASE = "https://github.com/SteffenCzolbe/PerceptualSimilarity/raw/master/src/loss/weights/"
_BARRON_BASE = (
    "https://github.com/jonbarron/robust_loss_pytorch/raw/master/robust_loss_pytorch/resources/"
)


class WeightsUnavailableError(RuntimeError):
    """A weight file is neither present locally nor downloadable."""


class ChecksumError(RuntimeError):
    """A weight file's sha256 does not match the expected one."""


@dataclass(frozen=True)
class WeightFile:
    """A downloadable file: its name, public URL, sha256 and a short description."""

    name: str
    url: str
    sha256: str | None
    description: str = ""
    #: other public locations tried in order when ``url`` fails
    mirrors: tuple[str, ...] = field(default_factory=tuple)


def _perceptual(name: str, sha: str, desc: str) -> WeightFile:
    return WeightFile(name, _PERCEPTUAL_BASE + name, sha, desc)


#: every weight file the library knows, by file name
WEIGHT_FILES: dict[str, WeightFile] = {
    f.name: f
    for f in [
        _perceptual("rgb_watson_dct_trial0.pth",
                    "bde40e0bc1912060da45b4487df660450ba91fa44c031f22a144c661d99488ef",
                    "Watson-DCT, RGB, tuned on BAPPS 2AFC"),
        _perceptual("gray_watson_dct_trial0.pth",
                    "6401e9d3a430ac5dac691f93f1b9b61562ce13457a26b4dcb87eea39c5ea7ff4",
                    "Watson-DCT, greyscale, tuned on BAPPS 2AFC"),
        _perceptual("rgb_watson_fft_trial0.pth",
                    "98386c0e0841fc346ab4c7d296788ed0af81f2ca8866a885be4405d03321a717",
                    "Watson-DFT, RGB, tuned on BAPPS 2AFC"),
        _perceptual("gray_watson_fft_trial0.pth",
                    "74fda350525e4660671bc957944d6e9773b3989effc5aa9d2b73eccd5943584e",
                    "Watson-DFT, greyscale, tuned on BAPPS 2AFC"),
        _perceptual("rgb_adaptive_trial0.pth",
                    "3b2d5d28b8468f5e1d119f1fa709199b6c645dc7f58538d939ebc27287fb95d4",
                    "Adaptive robust loss, RGB, 64x64, tuned on BAPPS 2AFC"),
        _perceptual("gray_adaptive_trial0.pth",
                    "db9673847841ebdfa130f9d861e6e8a27426cc4f88e5f8b702639eda7a089667",
                    "Adaptive robust loss, greyscale, 64x64, tuned on BAPPS 2AFC"),
        _perceptual("rgb_pnet_lin_vgg_trial0.pth",
                    "df4bad76bf9d8bca8466f4e34adc12289dbce25c6e040cba3a5152c24cdf3682",
                    "Deeploss-VGG linear layers, RGB, tuned on BAPPS 2AFC"),
        _perceptual("gray_pnet_lin_vgg_trial0.pth",
                    "bbf8ea727bac61aaaefba7fae63a10547c03d4cd5b81a7ba05d8003a1ca96788",
                    "Deeploss-VGG linear layers, greyscale, tuned on BAPPS 2AFC"),
        _perceptual("rgb_pnet_lin_squeeze_trial0.pth",
                    "7f4c84e909231e6eb253f55f8484e5895c2044178fe3316912ef4ebd50dc7b14",
                    "Deeploss-Squeeze linear layers, RGB, tuned on BAPPS 2AFC"),
        _perceptual("gray_pnet_lin_squeeze_trial0.pth",
                    "09edfe8565911f6c275646e1a5a5a04a17997e8175bb79bbc10c6ca3e87e602a",
                    "Deeploss-Squeeze linear layers, greyscale, tuned on BAPPS 2AFC"),
        WeightFile("partition_spline.npz", _BARRON_BASE + "partition_spline.npz",
                   "e60b3f3f55ee53bd72da29dc6ffd8e43024574aff03bf7d0dccc6dc60d78de10",
                   "Barron's spline of the robust loss' log partition function (optional: "
                   "genloss computes its own)"),
    ]
}


def register_weight_file(f: WeightFile) -> WeightFile:
    """Add a file to :data:`WEIGHT_FILES` (used by the flow estimators and the experiments)."""
    WEIGHT_FILES[f.name] = f
    return f


def cache_dir() -> Path:
    """The download cache: ``$GENLOSS_CACHE_DIR``, else ``$XDG_CACHE_HOME/genloss``, else ``~/.cache/genloss``."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "genloss"


def sha256sum(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _search_dirs(weights_dir: str | os.PathLike | None) -> list[Path]:
    dirs: list[Path] = []
    if weights_dir is not None:
        dirs.append(Path(weights_dir).expanduser())
    env = os.environ.get(ENV_WEIGHTS_DIR)
    if env:
        dirs.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p)
    dirs.append(cache_dir())
    return dirs


def _verify(path: Path, spec: WeightFile) -> Path:
    if spec.sha256 is None:
        return path
    digest = sha256sum(path)
    if digest != spec.sha256:
        raise ChecksumError(
            f"{path} has sha256 {digest}, expected {spec.sha256} for {spec.name}; "
            f"delete it and download it again from {spec.url}"
        )
    return path


def _spec(name: str | WeightFile) -> WeightFile:
    if isinstance(name, WeightFile):
        return name
    try:
        return WEIGHT_FILES[name]
    except KeyError:
        raise KeyError(f"unknown weight file {name!r}; known: {sorted(WEIGHT_FILES)}") from None


#: a folder's own list of ``<sha256>  <file name>`` lines, for weights tuned by the user
MANIFEST_NAME = "SHA256SUMS"


def _manifest_hash(folder: Path, name: str) -> str | None:
    """The sha256 that ``folder/SHA256SUMS`` lists for ``name``, if any."""
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return None
    for line in manifest.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == name:
            return parts[0].lower()
    return None


def find_local(name: str | WeightFile, weights_dir: str | os.PathLike | None = None) -> Path | None:
    """The verified local path of a weight file, or ``None`` when it is not present.

    A ``weights_dir`` (argument or environment variable, not the cache) may hold its own
    ``SHA256SUMS`` manifest: a file listed there is verified against the manifest's hash instead
    of the published one. That is how weights tuned with ``genloss train configs/2afc_tune.yaml``
    (which writes the manifest) load by their usual file names.
    """
    spec = _spec(name)
    cache = cache_dir()
    for d in _search_dirs(weights_dir):
        p = d / spec.name
        if p.is_file():
            own = None if d == cache else _manifest_hash(d, spec.name)
            if own is not None:
                return _verify(p, WeightFile(spec.name, spec.url, own, spec.description + " (local manifest)"))
            return _verify(p, spec)
    return None


class IncompleteDownloadError(OSError):
    """A reply ended before its announced size (or its chunked stream ended without its last chunk)."""


#: what a failed attempt at one URL may raise; the next mirror is tried after any of them
_DOWNLOAD_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException, ChecksumError, ValueError)


def download(
    name: str | WeightFile,
    dest_dir: str | os.PathLike | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download a weight file into ``dest_dir`` (default: the cache), verify it, return its path.

    Each attempt writes a temporary file of its own in ``dest_dir`` and renames it to the file's
    name only once it is complete (as many bytes as announced, a chunked stream that ended
    properly) and its sha256 matches (when one is published). A short, cut or stalled reply
    (``timeout`` seconds without data) is an error, the next mirror is tried, and nothing is left
    behind. A lock file serialises processes that download the same file, so the second one
    uses the first one's result instead of downloading again.
    """
    from filelock import FileLock

    spec = _spec(name)
    dest = Path(dest_dir) if dest_dir is not None else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / spec.name
    if os.environ.get(ENV_OFFLINE, "").strip() not in ("", "0", "false", "False"):
        raise WeightsUnavailableError(_offline_message(spec, dest, f"{ENV_OFFLINE} is set"))
    existed = target.is_file()
    lock_path = dest / f".{spec.name}.lock"
    errors = []
    try:
        with FileLock(str(lock_path)):
            if not existed and target.is_file() and _complete_and_verified(target, spec):
                return target  # another process downloaded it while this one waited for the lock
            for url in (spec.url, *spec.mirrors):
                try:
                    _fetch(url, target, spec, timeout, progress)
                    return target
                except _DOWNLOAD_ERRORS as e:
                    errors.append(f"{url}: {e}")
    finally:
        # the lock only matters while downloading; the files are safe without it (unique temporary
        # names, atomic rename), so removing it while another process waits cannot corrupt anything
        with contextlib.suppress(OSError):
            lock_path.unlink()
    raise WeightsUnavailableError(_offline_message(spec, dest, "; ".join(errors)))


def _complete_and_verified(path: Path, spec: WeightFile) -> bool:
    try:
        _verify(path, spec)
    except ChecksumError:
        return False
    return True


def _content_length(headers) -> int | None:
    value = headers.get("Content-Length")
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise IncompleteDownloadError(f"the server sent an invalid Content-Length {value!r}") from None
    if n < 0:
        raise IncompleteDownloadError(f"the server sent an invalid Content-Length {value!r}")
    return n


def _fetch(url: str, target: Path, spec: WeightFile, timeout: float, progress: bool) -> None:
    """One download attempt of ``url`` to ``target`` via a temporary file in the same folder."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = _content_length(resp.headers)
            copied = copy_with_progress(resp, out, total, spec.name, progress)
            if total is not None and copied != total:
                # urllib returns b"" when a connection closes early instead of raising: count the bytes
                raise IncompleteDownloadError(f"the reply ended after {copied} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        if spec.sha256 is not None and sha256sum(tmp_name) != spec.sha256:
            raise ChecksumError(f"downloaded {url} but its sha256 does not match {spec.sha256}")
        os.replace(tmp_name, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_name)


def copy_with_progress(src, dst, total: int | None, label: str, progress: bool, initial: int = 0,
                       chunk_size: int = 1 << 16) -> int:
    """Copy a byte stream in chunks, with a tqdm bar of ``total`` bytes (``initial`` already there).

    Returns the number of bytes copied. A chunked HTTP reply that is cut short raises
    ``http.client.IncompleteRead``, a stalled one the socket's timeout; both propagate.
    """
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=label, leave=False)
        except ImportError:  # pragma: no cover - tqdm is a dependency
            bar = None
    copied = 0
    try:
        while True:
            chunk = src.read(chunk_size)
            if not chunk:
                break
            dst.write(chunk)
            copied += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return copied


def _offline_message(spec: WeightFile, dest: Path, reason: str) -> str:
    return (
        f"Weight file {spec.name!r} ({spec.description}) is not available locally and could not be "
        f"downloaded ({reason}).\n"
        f"Download it from\n    {spec.url}\n"
        f"(sha256 {spec.sha256}) and put it into\n    {dest}\n"
        f"or into a folder that you pass as weights_dir=... or name in the {ENV_WEIGHTS_DIR} "
        f"environment variable. `genloss weights download` fetches every file when online."
    )


def resolve(
    name: str | WeightFile,
    weights_dir: str | os.PathLike | None = None,
    download_if_missing: bool = True,
    progress: bool = True,
) -> Path:
    """The local path of a verified weight file, downloading it into the cache if needed."""
    spec = _spec(name)
    local = find_local(spec, weights_dir)
    if local is not None:
        return local
    if not download_if_missing:
        raise WeightsUnavailableError(_offline_message(spec, cache_dir(), "download disabled"))
    return download(spec, progress=progress)


def load_state_dict(name: str | WeightFile, weights_dir: str | os.PathLike | None = None) -> dict:
    """Resolve a ``.pth`` weight file and load it on the CPU."""
    import torch

    path = resolve(name, weights_dir)
    return torch.load(path, map_location="cpu", weights_only=True)


def status(names: Iterable[str] | None = None, weights_dir: str | os.PathLike | None = None) -> dict[str, Path | None]:
    """For each known file: its verified local path, or ``None`` when it would need a download."""
    out: dict[str, Path | None] = {}
    for n in names if names is not None else sorted(WEIGHT_FILES):
        try:
            out[n] = find_local(n, weights_dir)
        except ChecksumError:
            out[n] = None
    return out
