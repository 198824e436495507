"""The one resolver of downloadable files (the table of files is :mod:`genloss.hub`).

Resolution order for a file ``name`` (first hit wins):

1. ``weights_dir`` argument of the loader (a folder holding ``name``);
2. the ``GENLOSS_WEIGHTS_DIR`` environment variable (a folder, or several separated by ``os.pathsep``);
3. the cache directory, ``GENLOSS_CACHE_DIR`` or ``~/.cache/genloss`` (``$XDG_CACHE_HOME/genloss``);
   for torchvision's files also ``GENLOSS_BACKBONE_DIR`` and torchvision's cache
   (``$TORCH_HOME/hub/checkpoints``);
4. a download from the file's public URL (then its mirrors) into the cache, with a progress bar.

Every file found or downloaded is verified: against its sha256, or where none is published against
the sha256 prefix in its name and its known size (a wrong file raises :class:`ChecksumError`). When nothing is
found and the download fails (no network, or ``GENLOSS_OFFLINE=1``) a :class:`WeightsUnavailableError`
says what to download and where to put it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from . import _env, _files
from .hub import UNPUBLISHED_NOTE, WEIGHT_FILES, WeightFile

ENV_WEIGHTS_DIR = _env.WEIGHTS_DIR
ENV_CACHE_DIR = _env.CACHE_DIR
ENV_OFFLINE = _env.OFFLINE
ENV_BACKBONE_DIR = _env.BACKBONE_DIR

__all__ = [
    "WEIGHT_FILES",
    "ChecksumError",
    "WeightFile",
    "WeightsUnavailableError",
    "cache_dir",
    "download",
    "find_local",
    "load_state_dict",
    "missing_note",
    "resolve",
    "search_dirs",
    "sha256sum",
    "verify",
    "status",
]


class WeightsUnavailableError(RuntimeError):
    """A weight file is neither present locally nor downloadable.

    Attributes:
        name: the missing file's name (as in :data:`WEIGHT_FILES`), when known: callers that build
            several files (a loss' tuned weights and its ImageNet backbone) can say which one is missing.
    """

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class ChecksumError(RuntimeError):
    """A weight file's sha256 (or size) does not match the expected one."""


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


def search_dirs(weights_dir: str | os.PathLike | None, spec: WeightFile | None = None) -> list[Path]:
    """Folders searched for a file, in order: ``weights_dir``, ``$GENLOSS_WEIGHTS_DIR``, the cache,
    and for torchvision's files also ``$GENLOSS_BACKBONE_DIR`` and torchvision's own cache."""
    dirs: list[Path] = []
    if weights_dir is not None:
        if not Path(weights_dir).expanduser().is_dir():
            raise FileNotFoundError(f"weights_dir {str(weights_dir)!r} is not a folder")
        dirs.append(Path(weights_dir).expanduser())
    env = os.environ.get(ENV_WEIGHTS_DIR)
    if env:
        dirs.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p)
    dirs.append(cache_dir())
    if spec is not None and spec.torch_hub:
        if os.environ.get(ENV_BACKBONE_DIR):
            dirs.append(Path(os.environ[ENV_BACKBONE_DIR]).expanduser())
        dirs.append(_torch_hub_checkpoints())
    return dirs


def _torch_hub_checkpoints() -> Path:
    """torchvision's download cache, ``$TORCH_HOME/hub/checkpoints`` (read without importing torch)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch"
    )
    return Path(home).expanduser() / "hub" / "checkpoints"


def verify(path: Path, spec: WeightFile) -> Path:
    """Check a file's size (when the table knows it) and sha256 (full, or the published prefix)."""
    if spec.size is not None and spec.sha256 is None and path.stat().st_size != spec.size:
        raise ChecksumError(
            f"{path} has {path.stat().st_size} bytes, expected {spec.size} for {spec.name}; "
            f"delete it and download it again from {spec.url}"
        )
    if spec.sha256 is None:
        if spec.sha256_prefix and not sha256sum(path).startswith(spec.sha256_prefix):
            raise ChecksumError(
                f"{path}'s sha256 does not start with {spec.sha256_prefix} as its published name says; "
                f"delete it and download it again from {spec.url}"
            )
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
    for d in search_dirs(weights_dir, spec):
        p = d / spec.name
        if p.is_file():
            own = None if d == cache else _manifest_hash(d, spec.name)
            if own is not None:
                return verify(p, WeightFile(spec.name, spec.url, own, spec.description + " (local manifest)"))
            return verify(p, spec)
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
    if _env.offline():  # before creating any folder: offline, nothing is written
        raise WeightsUnavailableError(_offline_message(spec, dest, f"{ENV_OFFLINE} is set"), spec.name)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / spec.name
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
    raise WeightsUnavailableError(_offline_message(spec, dest, "; ".join(errors)), spec.name)


def _complete_and_verified(path: Path, spec: WeightFile) -> bool:
    try:
        verify(path, spec)
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
    # created with the usual mode (umask), not mkstemp's 0600; a replaced file keeps its own mode
    fd, tmp_name = _files.create_temporary(target, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = _content_length(resp.headers)
            copied = copy_with_progress(resp, out, total, spec.name, progress)
            if total is not None and copied != total:
                # urllib returns b"" when a connection closes early instead of raising: count the bytes
                raise IncompleteDownloadError(f"the reply ended after {copied} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        try:  # sha256, or the published prefix and the table's size
            verify(Path(tmp_name), spec)
        except ChecksumError as e:
            raise ChecksumError(f"downloaded {url} but it is not the expected file: {e}") from None
        _files.replace(tmp_name, target)
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
    digest = spec.sha256 or f"not published: {spec.hash_note}"  # the table gives a reason for every missing hash
    also = ""
    if spec.torch_hub:
        also = f", or {ENV_BACKBONE_DIR}, or torchvision's cache {_torch_hub_checkpoints() / spec.name}"
    if not spec.published:  # no public URL: a download cannot work, say where the file must come from
        return (
            f"Weight file {spec.name!r} ({spec.description}, {spec.size_text}) is not available locally and could "
            f"not be downloaded ({reason}).\n"
            f"It is {UNPUBLISHED_NOTE}. Put a copy from the authors into a folder that you pass as "
            f"weights_dir=... or name in the {ENV_WEIGHTS_DIR} environment variable, or into\n    {dest}\n"
            f"(the paper's code expects it at {spec.url})."
        )
    return (
        f"Weight file {spec.name!r} ({spec.description}, {spec.size_text}) is not available locally and could "
        f"not be downloaded ({reason}).\n"
        f"Download it from\n    {spec.url}\n"
        f"(sha256 {digest}) and put it into\n    {dest}\n"
        f"or into a folder that you pass as weights_dir=... or name in the {ENV_WEIGHTS_DIR} "
        f"environment variable{also}. `genloss weights download {spec.name}` fetches it when online."
    )


def missing_note(names: Sequence[str], backbones: Collection[str] = ()) -> str:
    """One line saying which files are missing and how to provide them (for a loss that could not be built).

    ``backbones``: which of ``names`` are a loss' ImageNet backbone (named so: a user who fetched the
    tuned weights may not know that the loss needs a second, large file). A file that is not
    published (Watson-VGG's tuned weights) is not offered for download: the line says to put a copy
    from the authors into a weights folder.
    """

    def label(name: str) -> str:
        spec = WEIGHT_FILES.get(name)
        if spec is None:
            return name
        if name in backbones:
            return f"{name} (torchvision's ImageNet backbone, {spec.size_text})"
        if not spec.published:
            return f"{name} (tuned weights, not published)"
        return f"{name} (tuned weights)" if spec.default else f"{name} ({spec.size_text})"

    listed = [label(n) for n in names]
    text = "missing " + (", ".join(listed[:-1]) + " and " + listed[-1] if len(listed) > 1 else listed[0])
    known = [n for n in names if n in WEIGHT_FILES and WEIGHT_FILES[n].published]
    unpublished = [n for n in names if n in WEIGHT_FILES and not WEIGHT_FILES[n].published]
    if known:
        text += f": run `genloss weights download {' '.join(known)}` when online,"
        text += f" or put {'them' if len(known) > 1 else 'it'} into a folder named by {ENV_WEIGHTS_DIR}"
    elif len(unpublished) < len(names):  # files outside the table
        text += f": put {'them' if len(names) > 1 else 'it'} into a folder named by {ENV_WEIGHTS_DIR}"
    if any(WEIGHT_FILES[n].torch_hub for n in known):
        text += f" (torchvision's files also into {ENV_BACKBONE_DIR} or torch's hub cache {_torch_hub_checkpoints()})"
    if unpublished:
        text += (f"{';' if len(unpublished) < len(names) else ':'} {' and '.join(unpublished)} "
                 f"{'is' if len(unpublished) == 1 else 'are'} not published by the authors and cannot be "
                 f"downloaded: put a copy from the authors into a folder named by {ENV_WEIGHTS_DIR} "
                 "(or passed as weights_dir / --weights-dir)")
    return text


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
        raise WeightsUnavailableError(_offline_message(spec, cache_dir(), "download disabled"), spec.name)
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
