"""The ``genloss`` command line: compare images, list losses, manage weights, run experiments and the demo.

Every command has ``--help``. Heavy imports (torch, matplotlib) happen inside the commands, so
``genloss --help`` is instant.
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from . import _env


def _require_cli_extras() -> None:
    """Exit with one line naming the install command when the CLI's own dependencies are missing."""
    import importlib.util

    missing = [m for m in ("typer", "rich", "yaml") if importlib.util.find_spec(m) is None]
    if missing:
        sys.stderr.write(f"error: the genloss command line needs {', '.join(missing)}: "
                         'pip install "genloss[cli]"\n')
        raise SystemExit(1)


try:
    import typer
    from rich.console import Console, RenderableType
    from rich.table import Table
    from typer import Abort as _Abort
except ModuleNotFoundError:  # `genloss` run without the [cli] extra
    _require_cli_extras()
    raise

try:  # typer >= 0.20 vendors its own click: catch the exceptions of the click that typer runs on
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover - older typer on the real click
    from click import exceptions as _click_errors

#: environment variable that makes the CLI show tracebacks (as --debug does)
ENV_DEBUG = _env.DEBUG
_debug = False


def _debugging() -> bool:
    return _debug or _env.flag(ENV_DEBUG)


#: click >= 8.2 reports a bare `genloss` (help shown, no command) as this usage error
_NoArgsIsHelp = getattr(_click_errors, "NoArgsIsHelpError", ())


def _one_line(e: BaseException) -> str:
    """The first line of an error; with its type unless it is one of the plain user errors."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    if first and isinstance(e, (ValueError, OSError, KeyError)):
        return first
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


class _OneLineErrors(typer.core.TyperGroup):
    """The command group, reporting every error as one ``error: ...`` line on stderr.

    Usage errors (a bad option, a missing argument) exit with 2, other failures with 1;
    ``--debug`` or ``GENLOSS_DEBUG=1`` shows the traceback of unexpected errors instead.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        global _debug
        _debug = False
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
            code = code if isinstance(code, int) else 0
        except _NoArgsIsHelp as e:  # bare `genloss`: the help text, click's exit code
            e.show()
            code = e.exit_code
        except _click_errors.UsageError as e:
            hint = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
            _print_error(e.format_message() + hint)
            code = 2
        except _click_errors.ClickException as e:
            _print_error(e.format_message())
            code = e.exit_code
        except _Abort:
            _print_error("aborted")
            code = 130
        except Exception as e:  # noqa: BLE001 - one line for the user; the traceback with --debug
            if _debugging():
                raise
            _print_error(f"{_one_line(e)} (run with --debug or {ENV_DEBUG}=1 for the traceback)")
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


def _print_error(message: str) -> None:
    sys.stderr.write(f"error: {' '.join(message.split())}\n")


app = typer.Typer(
    name="genloss",
    help="Loss functions for image generation: perceptual (Watson, SSIM, deep), robust and "
    "correspondence-wise losses.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_OneLineErrors,
)
weights_app = typer.Typer(
    help="Download, locate and verify the weight files of the tuned losses.", no_args_is_help=True
)
app.add_typer(weights_app, name="weights")

out = Console()
err = Console(stderr=True)

def _version(value: bool) -> None:
    if value:
        from genloss import __version__

        sys.stdout.write(f"genloss {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help=f"show the traceback of an unexpected error (or set {ENV_DEBUG}=1)")
    ] = False,
) -> None:
    """Loss functions for image generation: perceptual (Watson, SSIM, deep), robust and correspondence-wise losses."""
    global _debug
    _debug = debug


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def _fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` on stderr and return the exit exception (``raise _fail(...)``)."""
    _print_error(message)
    return typer.Exit(code)


def _check_folder(path: Path | None, option: str) -> None:
    """Exit 2 naming ``option`` and ``path`` unless ``path`` (when given) is an existing folder."""
    if path is None or path.is_dir():
        return
    what = "is a file, not a folder" if path.exists() else "does not exist"
    raise _fail(f"{option} {path} {what}; give the folder that holds the weight files")


def _missing_env_dirs() -> list[Path]:
    """The entries of ``GENLOSS_WEIGHTS_DIR`` that are not folders (mistyped: skipped by the search)."""
    value = os.environ.get(_env.WEIGHTS_DIR) or ""
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p and not Path(p).expanduser().is_dir()]


def _warn_missing_env_dirs() -> list[str]:
    """A warning on stderr for each entry of ``GENLOSS_WEIGHTS_DIR`` that is not a folder; returns them."""
    warnings = []
    for d in _missing_env_dirs():
        what = "is a file, not a folder" if d.exists() else "does not exist"
        warnings.append(f"{_env.WEIGHTS_DIR} names {d}, which {what}: no weight file is looked for there "
                        "(mistyped?)")
    for w in warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    return warnings


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


class ColorspaceChoice(str, Enum):
    RGB = "RGB"
    LA = "LA"


# --------------------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------------------


@dataclass
class Metric:
    """A loss built for ``compare``, or the reason it could not be built."""

    name: str
    module: Any = None
    unavailable: str | None = None
    #: per pair: why the metric could not be computed on it (e.g. image too small)
    skipped: dict[str, str] = field(default_factory=dict)
    #: for a loss built per image size (an untuned Adaptive loss has parameters per pixel): builds it for
    #: (H, W); ``module`` is then ``None`` and :meth:`module_for` builds each size once
    build_for_size: Callable[[tuple[int, int]], Any] | None = None
    by_size: dict[tuple[int, int], Any] = field(default_factory=dict)

    def module_for(self, size: tuple[int, int]) -> Any:
        """The loss for images of ``size`` (H, W), or the exception that building it raised."""
        if self.build_for_size is None:
            return self.module
        if size not in self.by_size:
            try:
                self.by_size[size] = self.build_for_size(size)
            except Exception as e:  # noqa: BLE001 - reported as the reason of the pairs of that size
                self.by_size[size] = e
        return self.by_size[size]


#: the largest image ``compare`` decodes (64 Mpx, e.g. 8192 x 8192): a header may declare any size
MAX_IMAGE_PIXELS = 1 << 26


def _open_image(path: Path):
    """``PIL.Image.open`` (header only) with its size checked against :data:`MAX_IMAGE_PIXELS`."""
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the size is checked below, with W x H
    try:
        im = Image.open(path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path} is not an image PIL can read ({e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    w, h = im.size
    if w * h > MAX_IMAGE_PIXELS:
        im.close()
        raise ValueError(f"{path} declares {w}x{h} pixels ({w * h / 1e6:.0f} Mpx), more than the "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx that genloss compare decodes; downscale it first")
    return im


def load_image(path: Path, resize: int | None = None):
    """An image file as float32 (1, 3, H, W) in [0, 1] (RGB; alpha dropped; 16-bit files scaled by their depth)."""
    from PIL import Image

    from genloss.data.images import read_image, resize_image

    _open_image(path).close()  # existence, format and declared size, before decoding anything
    try:
        t = read_image(path, "RGB")[None]
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # truncated or corrupt data
        raise ValueError(f"{path} is not an image PIL can read ({e})") from None
    if resize is not None:
        t = resize_image(t, (resize, resize))
    return t


def image_pairs(a: Path, b: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """The (name, path_a, path_b) pairs to compare: one for two files, matching names for two folders.

    Returns the pairs and warnings about files present in only one of the folders.
    """
    if a.is_dir() != b.is_dir() and a.exists() and b.exists():
        raise ValueError(f"give two files or two folders, got {'folder' if a.is_dir() else 'file'} {a} "
                         f"and {'folder' if b.is_dir() else 'file'} {b}")
    for p in (a, b):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
    if not a.is_dir():
        return [(a.name if a.name == b.name else f"{a.name} vs {b.name}", a, b)], []

    def images(d: Path) -> dict[str, Path]:
        return {p.name: p for p in sorted(d.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}

    ia, ib = images(a), images(b)
    common = sorted(set(ia) & set(ib))
    if not common:
        raise ValueError(f"the folders {a} and {b} have no image files with matching names "
                         f"({len(ia)} and {len(ib)} images)")
    warnings = [f"{n} is only in {a}" for n in sorted(set(ia) - set(ib))]
    warnings += [f"{n} is only in {b}" for n in sorted(set(ib) - set(ia))]
    return [(n, ia[n], ib[n]) for n in common], warnings


def check_device(device: str) -> str:
    """``device`` if torch has it on this machine, else a ``ValueError`` naming the option and the fix."""
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"--device {device!r} is not a torch device ({str(e).splitlines()[0]}); "
                         "use cpu, cuda, cuda:N or mps") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif d.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif d.type not in ("cpu", "cuda", "mps"):
        try:
            torch.empty(1, device=d)
        except Exception as e:  # noqa: BLE001 - any backend's failure means: not usable here
            raise ValueError(f"--device {device} is not available on this machine "
                             f"({str(e).splitlines()[0]}); use --device cpu") from None
    return device


def check_output_file(path: Path) -> None:
    """Raise a ``ValueError`` unless ``path`` can be written as a file (checked before any computation)."""
    if path.is_dir():
        raise ValueError(f"-o {path} is a folder; give a file name, e.g. -o {path / 'scores.json'}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"-o {path}: {folder} is a file, not a folder")
    try:  # a real probe: permissions, read-only filesystems, quotas
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(f"-o {path}: cannot write into {folder} ({e.strerror or e})") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"-o {path}: the file exists and is not writable")


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder, so a failure leaves no half file.

    A new file gets the usual mode (umask), a replaced one keeps its mode (see :mod:`genloss._files`).
    """
    from genloss._files import write_text

    write_text(path, text)


def build_metrics(names: list[str], colorspace: str, weights_dir: Path | None, device: str,
                  pretrained: bool = True) -> list[Metric]:
    """Build each loss (``pretrained``, deterministic); a loss that cannot be built records why."""
    import genloss
    from genloss.registry import make_loss
    from genloss.weights import ChecksumError, WeightsUnavailableError

    metrics = []
    for name in names:
        common = {"colorspace": colorspace, "pretrained": pretrained, "deterministic": True, "weights_dir": weights_dir}
        if not pretrained and "image_size" in genloss.loss_info(name).options():
            # untuned, it allocates its parameters for one image size (C, H, W): built per size of the pairs
            def build(size: tuple[int, int], name: str = name, common: dict = common) -> Any:
                return make_loss(name, {**common, "image_size": (3, *size)}).to(device).eval()

            metrics.append(Metric(name, build_for_size=build))
            continue
        try:
            module = make_loss(name, common)
            metrics.append(Metric(name, module.to(device).eval()))
        except WeightsUnavailableError as e:
            # every file still missing (a deep loss' ImageNet backbone too) and how to provide them
            note = genloss.loss_info(name).missing_note(colorspace, weights_dir, pretrained, e)
            metrics.append(Metric(name, unavailable=note or str(e).splitlines()[0]))
        except ChecksumError as e:
            metrics.append(Metric(name, unavailable=f"bad weight file: {e}"))
        except Exception as e:  # noqa: BLE001 - one broken loss must not hide the others' values
            metrics.append(Metric(name, unavailable=f"could not be built: {type(e).__name__}: {e}"))
    return metrics


def compute_rows(metrics: list[Metric], pairs: list[tuple[str, Path, Path]], resize: int | None,
                 device: str, progress: bool) -> list[dict[str, Any]]:
    """One row per pair: ``{"pair", "a", "b", "values": {metric: float | None}}``."""
    import torch
    from tqdm.auto import tqdm

    rows = []
    for name, pa, pb in tqdm(pairs, desc="pairs", unit="pair", disable=not progress or len(pairs) < 2,
                             file=sys.stderr):
        x, y = load_image(pa, resize).to(device), load_image(pb, resize).to(device)
        if x.shape != y.shape:
            raise ValueError(
                f"{pa} is {x.shape[-1]}x{x.shape[-2]} pixels but {pb} is {y.shape[-1]}x{y.shape[-2]}; "
                "the images must have the same size (use --resize N to resize both to N x N)"
            )
        values: dict[str, float | None] = {}
        for m in metrics:
            module = None if m.unavailable else m.module_for((x.shape[-2], x.shape[-1]))
            if isinstance(module, Exception):
                values[m.name] = None
                m.skipped[name] = (f"could not be built for {x.shape[-1]}x{x.shape[-2]} images: "
                                   f"{type(module).__name__}: {module}")
                continue
            if module is None:
                values[m.name] = None
                continue
            try:
                with torch.no_grad():
                    values[m.name] = float(module(x, y))
            except (ValueError, TypeError) as e:  # e.g. MS-SSIM needs >= 161 px
                values[m.name] = None
                m.skipped[name] = str(e)
        rows.append({"pair": name, "a": str(pa), "b": str(pb), "values": values})
    return rows


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    if v == 0 or (1e-3 <= abs(v) < 1e6):
        return f"{v:.6g}"
    return f"{v:.4e}"


def _na_notes(rows: list[dict[str, Any]], metrics: list[Metric]) -> list[tuple[str, list[str], str]]:
    """Why each n/a cell is n/a: ``(loss, pairs, reason)``, one entry per loss and distinct reason."""
    notes: list[tuple[str, list[str], str]] = []
    pairs = [r["pair"] for r in rows]
    for m in metrics:
        if m.unavailable:
            notes.append((m.name, pairs, m.unavailable))
            continue
        by_reason: dict[str, list[str]] = {}
        for pair in pairs:
            if pair in m.skipped:
                by_reason.setdefault(m.skipped[pair], []).append(pair)
        notes.extend((m.name, ps, reason) for reason, ps in by_reason.items())
    return notes


def _row_notes(row: dict[str, Any], metrics: list[Metric]) -> str:
    """The CSV ``notes`` cell: ``loss: reason`` for every n/a value of the row, separated by `` | ``."""
    return " | ".join(f"{m.name}: {m.unavailable or m.skipped[row['pair']]}" for m in metrics
                      if row["values"][m.name] is None and (m.unavailable or row["pair"] in m.skipped))


#: what ``compare`` computes, said in its output: A is judged against the reference B
ORDER = "loss(input=A, target=B): A is the image judged, B the reference"


def render_compare(rows: list[dict[str, Any]], metrics: list[Metric], fmt: OutputFormat,
                   settings: dict[str, Any]) -> str | RenderableType:
    """The result as a rich renderable (``table``), a CSV string or a JSON string.

    Every n/a value comes with its reason: the ``note`` column of a one-pair table, numbered notes
    below a table of folders, the ``notes`` column of the CSV, ``unavailable``/``skipped`` in JSON.
    """
    from rich.console import Group
    from rich.text import Text

    names = [m.name for m in metrics]
    problems = {m.name: m.unavailable for m in metrics if m.unavailable}
    skipped = {m.name: m.skipped for m in metrics if m.skipped}
    if fmt is OutputFormat.json:
        doc = {
            "settings": {**settings, "order": ORDER},
            "metrics": names,
            "pairs": [
                {**{k: r[k] for k in ("pair", "a", "b")},
                 "values": {k: (v if v is None or math.isfinite(v) else str(v)) for k, v in r["values"].items()}}
                for r in rows
            ],
            "unavailable": problems,
            "skipped": skipped,
        }
        return json.dumps(doc, indent=2)
    if fmt is OutputFormat.csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["pair", "a", "b", *names, "notes"])
        for r in rows:
            w.writerow([r["pair"], r["a"], r["b"], *("" if r["values"][n] is None else repr(r["values"][n])
                                                      for n in names), _row_notes(r, metrics)])
        return buf.getvalue()
    if len(rows) == 1:
        # the header above the table, not its title: a title is folded to the table's width
        header = Text(f"A (judged):    {rows[0]['a']}\nB (reference): {rows[0]['b']}", style="italic")
        table = Table()
        table.add_column("loss", style="bold")
        table.add_column("value", justify="right")
        table.add_column("note", overflow="fold")
        for m in metrics:
            v = rows[0]["values"][m.name]
            note = m.unavailable or m.skipped.get(rows[0]["pair"], "")
            table.add_row(m.name, _fmt(v), note, style="dim" if v is None else None)
        return Group(header, table)
    folder_a, folder_b = Path(rows[0]["a"]).parent, Path(rows[0]["b"]).parent
    header = Text(f"{len(rows)} pairs\nA (judged):    {folder_a}{os.sep}\nB (reference): {folder_b}{os.sep}",
                  style="italic")
    table = Table()
    table.add_column("pair", style="bold")
    for n in names:
        table.add_column(n, justify="right")
    notes = _na_notes(rows, metrics)
    number = {(loss, pair): i for i, (loss, pairs, _) in enumerate(notes, 1) for pair in pairs}
    for r in rows:
        cells = [_fmt(r["values"][n]) + (f" ({number[n, r['pair']]})" if (n, r["pair"]) in number else "")
                 for n in names]
        table.add_row(r["pair"], *cells)
    if not notes:
        return Group(header, table)
    lines = Text()
    lines.append("n/a:", style="bold")
    for i, (loss, pairs, reason) in enumerate(notes, 1):
        which = "every pair" if len(pairs) == len(rows) else ", ".join(pairs)
        lines.append(f"\n({i}) {loss}, {which}: {reason}", style="")
    return Group(header, table, lines)


#: the smallest --resize (one 8 x 8 block of the Watson losses)
MIN_RESIZE = 8


def _check_resize(value: int | None) -> int | None:
    # checked here rather than with typer's min=: its type column "<int range> [x>=8]" squeezed the help
    # column of `compare --help` at 80 columns until the name of the weights folder variable was cut (…)
    if value is not None and value < MIN_RESIZE:
        raise typer.BadParameter(f"{value} is smaller than {MIN_RESIZE} pixels")
    return value


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="the image judged (a prediction, a compressed or generated image: "
                                           "the loss' input), or a folder of them")],
    b: Annotated[Path, typer.Argument(help="the reference image (the ground truth: the loss' target), or a "
                                           "folder with reference images of the same names")],
    loss: Annotated[
        list[str] | None, typer.Option("--loss", "-l", help="loss to compute (repeatable; default: all)")
    ] = None,
    colorspace: Annotated[
        ColorspaceChoice, typer.Option(help="RGB, or LA (greyscale: luma of the RGB images)")
    ] = ColorspaceChoice.RGB,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="table, csv or json")] = OutputFormat.table,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write the result (csv/json/table text) to this file")
    ] = None,
    weights_dir: Annotated[
        Path | None, typer.Option(help="folder with the tuned weight files (else GENLOSS_WEIGHTS_DIR, cache)")
    ] = None,
    resize: Annotated[int | None, typer.Option(callback=_check_resize, help="resize both images to N x N pixels "
                                               f"first (N >= {MIN_RESIZE})")] = None,
    strict: Annotated[
        bool, typer.Option(help="fail (exit 1) when a loss is unavailable instead of showing n/a")
    ] = False,
    pretrained: Annotated[bool, typer.Option(help="use the tuned weights (--no-pretrained: untuned defaults)")] = True,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda")] = "cpu",
) -> None:
    """Compute every loss of an image A against a reference image B (or of same-named images of two folders).

    Each value is loss(input=A, target=B): A is the image judged (a prediction, a compressed or
    generated image), B the reference (the original, the ground truth). The order matters: the
    Watson losses are not symmetric, so swapping A and B gives other values. Images are read with
    PIL, converted to RGB in [0, 1] and must have the same size (or use --resize). Each loss is
    built with its tuned weights (pretrained) and deterministic=True. A loss whose weights are
    missing, or that cannot be computed on a pair, is shown as n/a with the reason (the note column,
    numbered notes below a table of folders, the CSV's notes column); --strict turns that into an
    error.

    Examples:

        genloss compare photo_jpeg.png photo.png

        genloss compare photo_jpeg.png photo.png -l L2 -l Watson-DFT --format json

        genloss compare outputs/ targets/ --format csv -o scores.csv
    """
    import genloss

    try:
        # canonical names, in the order given, without duplicates
        names = list(dict.fromkeys(genloss.loss_info(n).name for n in loss)) if loss else genloss.list_losses()
    except ValueError as e:
        raise _fail(str(e)) from None
    _check_folder(weights_dir, "--weights-dir")
    _warn_missing_env_dirs()
    try:
        check_device(device)
        if output is not None:
            check_output_file(output)
        pairs, warnings = image_pairs(a, b)
        for _, pa, pb in pairs:  # headers only: a bad file fails before any loss is built
            for p in (pa, pb):
                _open_image(p).close()
    except (FileNotFoundError, ValueError) as e:
        raise _fail(str(e)) from None
    for w in warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)
    # stdout carries the result only: whatever the losses print while loading (torch hub, libraries) goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        metrics = build_metrics(names, colorspace.value, weights_dir, device, pretrained)
        try:
            rows = compute_rows(metrics, pairs, resize, device, progress=True)
        except (FileNotFoundError, ValueError) as e:
            raise _fail(str(e)) from None
    settings = {"colorspace": colorspace.value, "pretrained": pretrained, "deterministic": True,
                "resize": resize, "reduction": "sum"}
    rendered = render_compare(rows, metrics, fmt, settings)
    if output is not None:
        if not isinstance(rendered, str):
            file_console = Console(file=io.StringIO(), width=160, no_color=True)
            file_console.print(rendered)
            text = file_console.file.getvalue()
        else:
            text = rendered
        write_text_atomically(output, text)
        err.print(f"wrote {output}", highlight=False)
    elif not isinstance(rendered, str):
        out.print(rendered)
    else:
        # plain text for machines: no rich markup or wrapping
        sys.stdout.write(rendered if rendered.endswith("\n") else rendered + "\n")
    missing = [m for m in metrics if m.unavailable]
    if missing and fmt is not OutputFormat.table:
        for m in missing:
            err.print(f"[yellow]unavailable:[/] {m.name}: {m.unavailable}", highlight=False, soft_wrap=True)
    if strict and (missing or any(m.skipped for m in metrics)):
        names_bad = ", ".join(m.name for m in metrics if m.unavailable or m.skipped)
        raise _fail(f"--strict: not every loss could be computed ({names_bad})", code=1)


# --------------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------------


@app.command()
def losses(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    family: Annotated[str | None, typer.Option(help="only losses of this family (e.g. watson)")] = None,
) -> None:
    """List the registered losses with their family, aliases, weight files and description.

    On a terminal: a table. Piped: one tab-separated line per loss, nothing cut to the console width.
    --json adds each loss' tuned weight files per colour space and its ImageNet backbone files.

    Examples:

        genloss losses

        genloss losses --family watson --json
    """
    import genloss

    try:
        names = genloss.list_losses(family)
    except ValueError as e:  # an unknown family: the message lists the families
        raise _fail(str(e)) from None
    entries = []
    for name in names:
        info = genloss.loss_info(name)
        entries.append({
            "name": info.name,
            "family": info.family,
            "aliases": list(info.aliases),
            "weight_files": {cs: list(files) for cs, files in info.weight_files.items()},
            "backbone_files": list(info.backbone_files),
            "description": info.description,
        })
    if as_json:
        sys.stdout.write(json.dumps(entries, indent=2) + "\n")
        return
    if not out.is_terminal:  # piped: one tab-separated line per loss, nothing cut to a console width
        sys.stdout.write("name\tfamily\taliases\ttuned weights\tdescription\n")
        for e in entries:
            sys.stdout.write("\t".join([e["name"], e["family"], ", ".join(e["aliases"]),
                                        "yes" if e["weight_files"] else "-", " ".join(e["description"].split())])
                             + "\n")
        return
    table = Table(title="genloss losses", title_justify="left")
    widest = max(len(e["name"]) for e in entries)
    for col, kw in (("name", {"style": "bold", "no_wrap": True, "min_width": widest}), ("family", {}),
                    ("aliases", {}), ("tuned weights", {}), ("description", {"overflow": "fold", "ratio": 1})):
        table.add_column(col, **kw)
    for e in entries:
        table.add_row(e["name"], e["family"], ", ".join(e["aliases"]),
                      "yes" if e["weight_files"] else "-", e["description"])
    out.print(table)


# --------------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------------


def _weight_names(names: list[str] | None, all_files: bool = False) -> list[str]:
    """Weight file names from file names or loss names (a loss expands to its files of every colour space).

    Without names: the small tuned weights (``genloss.hub.default_files``), or with ``all_files`` every
    published file (``genloss.hub.published_files``); a file that is not published only by its name
    (or its loss' name).
    """
    import genloss
    from genloss.hub import WEIGHT_FILES, default_files, published_files

    if not names:
        return sorted(published_files()) if all_files else default_files()
    files: list[str] = []
    for n in names:
        if n in WEIGHT_FILES:
            files.append(n)
            continue
        try:
            info = genloss.loss_info(n)
        except ValueError:
            raise ValueError(f"{n!r} is neither a weight file nor a loss name; weight files: "
                             f"{', '.join(sorted(WEIGHT_FILES))}") from None
        if not info.weight_files:
            raise ValueError(f"loss {info.name!r} uses no weight files")
        files.extend(f for fs in info.weight_files.values() for f in fs)
    return list(dict.fromkeys(files))


def _search_dirs(extra: Path | None, spec: Any = None) -> list[tuple[str, Path]]:
    """Where weight files are looked for, in order, with a label for each folder (any file, or ``spec``'s:
    torchvision's files are also looked for in ``GENLOSS_BACKBONE_DIR`` and torch's hub cache)."""
    from genloss import weights as W

    labels = []
    if extra is not None:
        labels.append("--dir")
    labels += [W.ENV_WEIGHTS_DIR] * len([p for p in (os.environ.get(W.ENV_WEIGHTS_DIR) or "").split(os.pathsep) if p])
    labels.append("cache")
    if spec is not None and spec.torch_hub:
        if os.environ.get(W.ENV_BACKBONE_DIR):
            labels.append(W.ENV_BACKBONE_DIR)
        labels.append("torch hub cache")
    dirs = W.search_dirs(extra, spec)
    return list(zip(labels, dirs, strict=True))


def _where(path: Path, extra: Path | None, spec: Any) -> str:
    """The label of the searched folder that holds ``path`` (``--dir``, ``GENLOSS_WEIGHTS_DIR``, ``cache``, ...)."""
    return next((label for label, d in _search_dirs(extra, spec) if d == path.parent), str(path.parent))


def _shadowing(name: str, dest: Path, extra: Path | None) -> tuple[str, Path] | None:
    """A copy of ``name`` in a folder searched before ``dest``: the losses load that one, not ``dest``'s."""
    from genloss import weights as W

    for label, d in _search_dirs(extra, W.WEIGHT_FILES[name]):
        if d == dest:
            return None
        if (d / name).is_file():
            return label, d / name
    return None


@weights_app.command("download")
def weights_download(
    names: Annotated[list[str] | None, typer.Argument(help="weight files or loss names (default: the published "
                                                           "tuned weights)")] = None,
    all_files: Annotated[bool, typer.Option("--all", help="every published file of the table, incl. ImageNet "
                                                         "backbones (VGG16: 528 MB), flow networks and toy "
                                                         "assets")] = False,
    dir: Annotated[Path | None, typer.Option("--dir", help="download into this folder instead of the cache")] = None,
    force: Annotated[bool, typer.Option(help="download again even when a valid file is present")] = False,
) -> None:
    """Download weight files (with progress), checking their size and sha256.

    Without arguments: the tuned weights that the authors published, ten files of Watson-DCT/DFT,
    Adaptive and Deeploss-VGG/Squeeze (small: 239 kB in all). Watson-VGG's tuned files
    (rgb_/gray_watson_vgg_trial0.pth) are not published, so they are left out (and out of --all): a
    download by name is tried and is expected to fail; put a copy from the authors into a folder named
    by GENLOSS_WEIGHTS_DIR instead. The large files (ImageNet backbones of Deeploss/Watson-VGG, RAFT,
    PWC-Net, the toy experiment's images) by name or with --all. Files already present and valid (in
    --dir, GENLOSS_WEIGHTS_DIR, the cache, or for torchvision's files torch's hub cache) are not
    downloaded: each is listed with the folder it is in. The files to download and their sizes are
    shown before anything is fetched; they go into the cache, or into --dir.
    Offline (no network or GENLOSS_OFFLINE=1) each file gets a message saying where to download it
    from and where to put it; the exit code is then 1.

    Examples:

        genloss weights download

        genloss weights download Watson-DFT --dir ./weights

        genloss weights download vgg16-397923af.pth
    """
    from genloss import weights as W
    from genloss.hub import UNPUBLISHED_NOTE

    try:
        files = _weight_names(names, all_files)
    except ValueError as e:
        raise _fail(str(e)) from None
    if dir is not None and dir.exists() and not dir.is_dir():
        raise _fail(f"--dir {dir} is a file, not a folder; give the folder to download into (created if needed)")
    _warn_missing_env_dirs()
    dest = dir if dir is not None else W.cache_dir()
    dest_label = "--dir" if dir is not None else "the cache"
    # a --dir that does not exist yet holds nothing; the download creates it
    search_in = dir if dir is not None and dir.is_dir() else None
    present, todo = _split_present(files, search_in, force)
    for name, path in present:
        where = _where(path, search_in, W.WEIGHT_FILES[name])
        out.print(f"{name}: [green]present[/] in {where}: {path} (not downloaded)", highlight=False, soft_wrap=True)
    if not todo:
        out.print(f"nothing to download: all {len(files)} file(s) are present", highlight=False)
        return
    _print_download_list(todo, f"{dest_label} {dest}")
    for name in todo:
        if not W.WEIGHT_FILES[name].published:
            err.print(f"[yellow]note:[/] {name} is {UNPUBLISHED_NOTE}; trying the URL the paper's code expects "
                      f"({W.WEIGHT_FILES[name].url})", highlight=False, soft_wrap=True)
    failed = []
    for i, name in enumerate(todo, 1):
        prefix = f"[{i}/{len(todo)}] {name}"
        spec = W.WEIGHT_FILES[name]
        try:
            path = W.download(name, dest_dir=dest, progress=True)
        except (W.WeightsUnavailableError, W.ChecksumError, OSError) as e:
            reason = str(e).splitlines()[0]
            if spec.published:
                fix = (f"get it from {spec.url}\n    (sha256 {spec.sha256 or 'not published'}) and put it into "
                       f"{dest}")
            else:
                fix = (f"it is {UNPUBLISHED_NOTE}: put a copy from the authors into {dest}\n    or into a "
                       f"folder named by {W.ENV_WEIGHTS_DIR}")
            err.print(f"{prefix}: [red]not downloaded[/] - {reason}\n    {fix}", highlight=False, soft_wrap=True)
            failed.append(name)
            continue
        check = "sha256 ok" if spec.sha256 else f"no published sha256 ({spec.hash_note})"
        out.print(f"{prefix}: [green]downloaded[/] into {dest_label}: {path} ({check})", highlight=False,
                  soft_wrap=True)
        first = _shadowing(name, dest, dir)
        if first is not None:  # --force, or a corrupt copy: the search order still finds the other file first
            err.print(f"[yellow]note:[/] {first[0]} holds another {name}, {first[1]}, which is searched before "
                      f"{dest_label}: the losses load that one (delete or replace it to use the download)",
                      highlight=False, soft_wrap=True)
    if failed:
        raise _fail(f"{len(failed)} of {len(todo)} weight files could not be downloaded; put them into {dest} "
                    f"or into a folder named by {W.ENV_WEIGHTS_DIR}", code=1)


def _split_present(files: list[str], extra: Path | None, force: bool) -> tuple[list[tuple[str, Path]], list[str]]:
    """The files already present and valid somewhere in the search order (with their path), and the others.

    With ``force`` every file is downloaded again. A corrupt copy is reported and its file downloaded.
    """
    from genloss import weights as W

    present, todo = [], []
    for name in files:
        try:
            local = None if force else W.find_local(name, extra)
        except W.ChecksumError as e:
            err.print(f"[yellow]{name}: present but corrupt, downloading again[/] ({e})", highlight=False,
                      soft_wrap=True)
            local = None
        if local is None:
            todo.append(name)
        else:
            present.append((name, local))
    return present, todo


def _print_download_list(files: list[str], into: str) -> None:
    """The files about to be downloaded and their sizes, before anything is fetched."""
    from genloss.hub import WEIGHT_FILES, human_size

    unknown = [n for n in files if WEIGHT_FILES[n].size is None]
    sizes = [human_size(sum(WEIGHT_FILES[n].size or 0 for n in files))] if len(unknown) < len(files) else []
    if unknown:  # no exact size in the table: their approximate sizes are in the list below
        sizes.append(f"{len(unknown)} of approximate size")
    out.print(f"{len(files)} file(s) to download into {into}: {' + '.join(sizes)}", highlight=False, soft_wrap=True)
    for name in files:
        out.print(f"  {name:40s} {WEIGHT_FILES[name].size_text:>9s}", highlight=False)


@weights_app.command("path")
def weights_path(
    dir: Annotated[Path | None, typer.Option("--dir", help="also look in this folder (first)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print the cache folder, the search order and, for every file of the table, where it is found.

    The search order: --dir, the folders of GENLOSS_WEIGHTS_DIR, the cache, then a download into the
    cache; torchvision's files are also found in GENLOSS_BACKBONE_DIR and torch's hub cache.

    Example:

        GENLOSS_WEIGHTS_DIR=/data/weights genloss weights path
    """
    from genloss import weights as W

    _check_folder(dir, "--dir")
    warnings = _warn_missing_env_dirs()
    dirs = _search_dirs(dir)
    status: dict[str, dict[str, Any]] = {}
    for name, spec in sorted(W.WEIGHT_FILES.items()):
        entry: dict[str, Any] = {"size": spec.size, "size_text": spec.size_text, "sha256": spec.sha256,
                                 "used_by": spec.used_by, "url": spec.url, "published": spec.published}
        try:
            path = W.find_local(name, dir)
            entry.update(status="present" if path else "missing", path=str(path) if path else None)
        except W.ChecksumError as e:
            entry.update(status="corrupt", path=None, error=str(e))
        status[name] = entry
    if as_json:
        doc = {"cache_dir": str(W.cache_dir()),
               "search": [{"source": s, "dir": str(d), "exists": d.is_dir()} for s, d in dirs],
               "offline": os.environ.get(W.ENV_OFFLINE, ""), "warnings": warnings, "files": status}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    out.print(f"cache dir: {W.cache_dir()}", highlight=False)
    flagged = set(_missing_env_dirs())
    out.print("search order: " + " -> ".join(f"{d} ({s}{', [red]does not exist[/]' if d in flagged else ''})"
                                             for s, d in dirs) + " -> download", highlight=False)
    table = Table(show_header=True)
    table.add_column("file", style="bold", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("used by", overflow="fold")
    table.add_column("path", overflow="fold")
    colours = {"present": "green", "missing": "yellow", "corrupt": "red"}
    for name, s in status.items():
        where = s["path"] or s.get("error") or ("-" if s["published"] else "not published: a copy from the authors "
                                                "goes into a weights folder")
        table.add_row(name, s["size_text"], f"[{colours[s['status']]}]{s['status']}[/]", s["used_by"], where)
    out.print(table)
    n_missing = sum(s["status"] != "present" for s in status.values())
    if n_missing:
        out.print(f"{n_missing} file(s) missing: `genloss weights download` fetches the tuned weights when online "
                  f"(--all or names for the others), or set {W.ENV_WEIGHTS_DIR} to a folder that holds them. "
                  "Watson-VGG's tuned files are not published: put a copy from the authors into such a folder.",
                  highlight=False)


@weights_app.command("verify")
def weights_verify(
    dir: Annotated[Path | None, typer.Option("--dir", help="also check this folder")] = None,
) -> None:
    """Check every file of the table present in any searched folder (exit 1 on a mismatch).

    Checks the sha256 where published, else the sha256 prefix in torchvision's file names and the
    known size. A folder's own SHA256SUMS (written for weights you tuned yourself) takes precedence
    over the published hash, as when the files are loaded.
    """
    from dataclasses import replace

    from genloss import weights as W

    _check_folder(dir, "--dir")
    warnings = _warn_missing_env_dirs()
    bad = checked = 0
    cache = W.cache_dir()
    for name, spec in sorted(W.WEIGHT_FILES.items()):
        for d in W.search_dirs(dir, spec):
            p = d / name
            if not p.is_file():
                continue
            own = W._manifest_hash(d, name) if d != cache else None
            checked += 1
            try:
                W.verify(p, replace(spec, sha256=own) if own else spec)
            except W.ChecksumError as e:
                bad += 1
                out.print(f"[red]MISMATCH[/] {p}: {str(e).splitlines()[0]}", highlight=False, soft_wrap=True)
                continue
            how = "sha256" if (own or spec.sha256) else ("sha256 prefix" if spec.sha256_prefix else
                                                         "size" if spec.size else "no hash published")
            colour = "green" if how != "no hash published" else "yellow"
            out.print(f"[{colour}]ok[/] ({how}) {p}", highlight=False, soft_wrap=True)
    if checked == 0:
        out.print("no weight files found" + (f" ({W.ENV_WEIGHTS_DIR} names a folder that does not exist, see the "
                                             "warning above)" if warnings else "")
                  + "; see `genloss weights path`", highlight=False)
    if bad:
        raise _fail(f"{bad} weight file(s) failed their check: delete and download them again", code=1)


# --------------------------------------------------------------------------------------------------
# experiments, benchmark, demo
# --------------------------------------------------------------------------------------------------


def _print_summary(summary: Any) -> None:
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, float) and not math.isfinite(v):
            return None  # strict JSON has no NaN/Inf
        if isinstance(v, (str, int, float, bool)) or v is None:
            return v
        if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:  # numpy / torch scalars
            return plain(v.item())
        return str(v)

    sys.stdout.write(json.dumps(plain(summary), indent=2) + "\n")


def _run_experiment(kind: str, config: Path, overrides: list[str] | None) -> None:
    from genloss import experiments
    from genloss.experiments.common import CheckpointError
    from genloss.experiments.config import ConfigError
    from genloss.weights import ChecksumError, WeightsUnavailableError

    for o in overrides or []:
        if "=" not in o:
            raise _fail(f"override {o!r} must look like key.sub=value")
    if not config.is_file():
        raise _fail(f"config file {config} does not exist")
    try:
        # stdout carries the JSON summary only: progress, tables and library messages go to stderr
        with contextlib.redirect_stdout(sys.stderr):
            summary = getattr(experiments, kind)(config, list(overrides or []))
    except ConfigError as e:
        raise _fail(str(e)) from None
    except CheckpointError as e:
        raise _fail(f"{kind} failed: {e} (the file was left as it is)", code=1) from None
    except (WeightsUnavailableError, ChecksumError) as e:
        # a user error: the whole message, which says where to get the file and where to put it
        raise _fail(f"{kind} failed: {e}", code=1) from None
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise _fail(f"{kind} failed: {_one_line(e)}", code=1) from None
    _print_summary(summary)


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML config with an 'experiment:' key")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="key.sub=value overrides (values parsed as YAML)")
    ] = None,
) -> None:
    """Train the experiment a config describes and print its summary (JSON).

    Overrides are key.sub=value with YAML values. The summary is all that goes to stdout; progress and
    whatever the experiment prints go to stderr. Re-running the same command resumes from the last
    checkpoint.

    Example:

        genloss train --config configs/video_smoke.yaml trainer.max_steps=10
    """
    _run_experiment("train", config, overrides)


@app.command("test")
def test_cmd(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML config with an 'experiment:' key")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="key.sub=value overrides (values parsed as YAML)")
    ] = None,
) -> None:
    """Evaluate the experiment a config describes and print its metrics (JSON).

    Overrides are key.sub=value with YAML values. The metrics are all that goes to stdout; the tables
    and messages of the experiment go to stderr.

    Example:

        genloss test --config configs/2afc_eval_smoke.yaml eval.colorspaces=[RGB]
    """
    _run_experiment("test", config, overrides)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def bench(ctx: typer.Context) -> None:
    """Runtime benchmark of the losses against peer implementations (arguments: see genloss bench --help).

    Example:

        genloss bench --quick --losses L1 SSIM Watson-DFT --colorspaces RGB
    """
    from genloss.experiments import runtime

    try:
        code = runtime.main(list(ctx.args))
    except SystemExit as e:  # argparse's --help and usage errors
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    raise typer.Exit(code or 0)


@app.command()
def demo(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="folder for index.html and the plots")
    ] = Path("genloss-demo"),
    quick: Annotated[
        bool, typer.Option(help="a smaller run (< 1 min): fewer photographs, strengths and steps")
    ] = False,
    open_browser: Annotated[bool, typer.Option("--open", help="open the report in a web browser")] = False,
    weights_dir: Annotated[Path | None, typer.Option(help="folder with the tuned weight files")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Run the demo on built-in photographs and write an HTML report (index.html + PNG plots).

    The report shows (a) every loss against five distortions (blur, noise, JPEG, shift,
    brightness) of increasing strength, (b) one image fitted by gradient descent to randomly
    shifted copies of a photograph, once per loss, with the sharpness each loss keeps, and (c) a
    correspondence-wise (CorrWise) alignment of a photograph pair with known motion.

    The photographs ship with scikit-image. The tuned weights are read from --weights-dir,
    GENLOSS_WEIGHTS_DIR or the cache; when online, missing ones are downloaded into the cache (the
    RGB files, about 130 KB) and so are torchvision's ImageNet backbones, unless torch's hub cache has
    them: SqueezeNet 1.1 (5 MB) and VGG16 (528 MB, for Deeploss-VGG and Watson-VGG, shown in every
    run, --quick included). Offline (GENLOSS_OFFLINE=1) losses without their weights run untuned or
    are skipped, and the report says which. Timings in the report are wall-clock on this machine, for
    comparison between losses only. --quick: under a minute on a CPU. Watson-VGG's tuned weights
    are not published: without a copy from the authors in a weights folder it runs untuned.

    Examples:

        genloss demo --open

        GENLOSS_WEIGHTS_DIR=/data/weights genloss demo --output report/
    """
    from genloss.demo import run_demo

    existing = output
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == output else f"is inside {existing}, a file"
        raise _fail(f"--output {output} {where}, not a folder; give a folder for index.html and the plots "
                    f"(created if needed)")
    _check_folder(weights_dir, "--weights-dir")
    _warn_missing_env_dirs()
    report = run_demo(output, quick=quick, weights_dir=weights_dir, seed=seed, progress=True)
    out.print(f"report written to {report.index} in {report.seconds:.1f} s", highlight=False)
    for note in report.notes:
        out.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    if open_browser:
        import webbrowser

        webbrowser.open(report.index.resolve().as_uri())


def _one_line_paragraphs(doc: str) -> str:
    """A command's docstring as Typer's rich help needs it: each prose paragraph on one line, indented
    blocks (the examples) line by line.

    Typer's rich mode keeps every line break of a help text and then wraps the lines to the terminal,
    so a paragraph wrapped at 100 columns in the source came out with breaks mid-sentence at 80
    ("... the same size (or use" / "--resize). ..."). One line per paragraph lets rich wrap it whole.
    """
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if p.startswith(" ") else " ".join(p.split()) for p in paragraphs)


def _keep_paragraphs(*apps: typer.Typer) -> None:
    """Give every command of ``apps`` its docstring (or ``help=``) as :func:`_one_line_paragraphs`."""
    for a in apps:
        for info in a.registered_commands:
            doc = info.help or inspect.getdoc(info.callback)
            if doc:
                info.help = _one_line_paragraphs(doc)


_keep_paragraphs(app, weights_app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``genloss`` script."""
    app(args=argv, prog_name="genloss")


if __name__ == "__main__":  # pragma: no cover
    main()
