"""The Watson paper's runtime experiment, with peer implementations timed side by side.

For every loss: a batch of 128 x C x 64 x 64 images (C = 3 for RGB, 1 for LA), forward + backward
with respect to the prediction, time per iteration (median over repeats, after warm-up) and peak
memory. In the same run the peers that compute the same quantity are timed on the same batch:

* SSIM: ``piq.ssim`` and ``pytorch_msssim.ssim``; MS-SSIM: ``piq.multi_scale_ssim`` and
  ``pytorch_msssim.ms_ssim`` (on 16 x 3 x 192 x 192: 5-scale MS-SSIM needs > 160 px);
* Deeploss-VGG / Deeploss-Squeeze: the ``lpips`` package with the same backbone (random backbone
  weights on both sides when the ImageNet weights are not available offline);
* L1 / L2: ``torch.nn.L1Loss`` / ``MSELoss`` (sum);
* Watson-DCT / Watson-DFT: ``piq.ssim`` (targets: :data:`WATSON_CPU_RATIO`) and, with
  ``--original PATH`` (a clone of the paper's repository), the paper's own implementation.

``--compile [MODE ...]`` adds our losses under ``torch.compile(fullgraph=True, mode=MODE)`` as
further implementations (``ours+compile``, ``ours+compile:reduce-overhead``, ...), each checked
against the eager value on the benchmark batch before it is timed; compilation happens in the
warm-up and is not timed. ``reduce-overhead`` replays the whole forward and backward as CUDA graphs.
Our losses run in training mode, as a new module and the paper's experiment do (the Watson
losses then shift both images by a random offset); ``--eval`` times them in eval mode.

Implementations are timed round-robin (one iteration each, in turn). The ratio column is each
implementation's time / the fastest peer's: <= 1.0 means at least as fast. Times vary between
machines and runs; compare the ratios, which are measured in the same process minutes apart. Peak
memory is ``torch.cuda.max_memory_allocated`` on CUDA; on CPU it is the peak growth of the resident
memory during one forward + backward (sampled every ms from /proc, Linux), measured in a fresh
subprocess per case (``--memory``), since the CPU allocator keeps no statistics. """

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import _env

#: the paper's GPU figures (shared paper-results: seconds for 500 iterations, MB), for reference
PAPER_GPU = {
    ("L1", "RGB"): (0.37, 24), ("L2", "RGB"): (0.31, 24), ("SSIM", "RGB"): (8.73, 114),
    ("Watson-DCT", "RGB"): (13.92, 100), ("Watson-DFT", "RGB"): (16.16, 115),
    ("Deeploss-VGG", "RGB"): (56.79, 2215), ("Deeploss-Squeeze", "RGB"): (14.14, 547),
    ("Adaptive", "RGB"): (8.72, 132), ("L1", "LA"): (0.38, 8), ("L2", "LA"): (0.34, 8),
    ("SSIM", "LA"): (5.55, 38), ("Watson-DCT", "LA"): (3.37, 35), ("Watson-DFT", "LA"): (4.40, 39),
    ("Deeploss-VGG", "LA"): (56.88, 2208), ("Deeploss-Squeeze", "LA"): (14.07, 541),
    ("Adaptive", "LA"): (8.56, 125),
}

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Case:
    """One loss in one colour space: our implementation and the peers computing the same quantity."""

    loss: str
    colorspace: str
    shape: tuple[int, int, int, int]
    peers: dict[str, Callable[[], LossFn]] = field(default_factory=dict)


def _ours(name: str, colorspace: str, weights_dir: str | None, size: int = 64, eval_mode: bool = False) -> LossFn:
    """Our loss as the paper's experiment runs it: tuned (or untrained and frozen), in training mode
    (Watson's random shift) unless ``eval_mode``."""
    loss = _ours_module(name, colorspace, weights_dir, size)
    return loss.eval() if eval_mode else loss


def _ours_module(name: str, colorspace: str, weights_dir: str | None, size: int) -> torch.nn.Module:
    from genloss.registry import make_loss
    from genloss.weights import WeightsUnavailableError

    kw: dict = {"colorspace": colorspace}
    if name in _BACKBONE_FILES:  # a random backbone when the ImageNet one is not available offline
        kw["pretrained_backbone"] = _imagenet_available(name)
    try:
        return make_loss(name, {"pretrained": True, "weights_dir": weights_dir}, **kw)
    except WeightsUnavailableError:
        # Timing does not depend on the tuned values: fall back to the untrained parameters, frozen
        # as the tuned ones are (trainable parameters would time the slower path that also
        # computes their gradients, which the paper's experiment does not).
        loss = make_loss(name, {"pretrained": False, "image_size": (3, size, size)}, **kw)
        return loss.freeze() if hasattr(loss, "freeze") else loss


#: the torchvision ImageNet backbone file of each loss that has one
_BACKBONE_FILES = {"Deeploss-VGG": "vgg16-397923af.pth", "Deeploss-Squeeze": "squeezenet1_1-b8a52dc0.pth",
                   "Watson-VGG": "vgg16-397923af.pth"}


def _imagenet_available(name: str) -> bool:
    """Whether torchvision's ImageNet backbone of a loss is in the local torch hub cache."""
    return (Path(torch.hub.get_dir()) / "checkpoints" / _BACKBONE_FILES[name]).is_file()


def _peers(name: str, colorspace: str) -> dict[str, Callable[[], LossFn]]:
    peers: dict[str, Callable[[], LossFn]] = {}
    if name in ("SSIM", "Watson-DCT", "Watson-DFT"):
        peers["piq.ssim"] = lambda: _piq_ssim
        if name == "SSIM":
            peers["pytorch_msssim.ssim"] = lambda: _pm_ssim
    elif name == "MS-SSIM":
        peers["piq.multi_scale_ssim"] = lambda: _piq_msssim
        peers["pytorch_msssim.ms_ssim"] = lambda: _pm_msssim
    elif name == "L1":
        peers["torch.nn.L1Loss"] = lambda: torch.nn.L1Loss(reduction="sum")
    elif name == "L2":
        peers["torch.nn.MSELoss"] = lambda: torch.nn.MSELoss(reduction="sum")
    elif name.startswith("Deeploss"):
        net = "vgg" if name.endswith("VGG") else "squeeze"
        peers[f"lpips({net})"] = lambda: _lpips(net, _imagenet_available(name))
    return peers


def _piq_ssim(x, y):
    import piq

    return 1 - piq.ssim(x, y, data_range=1.0)


def _pm_ssim(x, y):
    import pytorch_msssim

    return 1 - pytorch_msssim.ssim(x, y, data_range=1.0)


def _piq_msssim(x, y):
    import piq

    return 1 - piq.multi_scale_ssim(x, y, data_range=1.0)


def _pm_msssim(x, y):
    import pytorch_msssim

    return 1 - pytorch_msssim.ms_ssim(x, y, data_range=1.0)


def _lpips(net: str, imagenet: bool) -> LossFn:
    import lpips

    model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=not imagenet, verbose=False).eval()
    for p in model.parameters():
        p.requires_grad_(False)

    def fn(x, y):
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        return model(x, y, normalize=True).sum()

    return fn


def _original(repo: str, name: str, colorspace: str, eval_mode: bool = False) -> LossFn:
    """The paper's own LossProvider from a local clone (``--original``), as the paper runs it."""
    src = Path(repo) / "src" / "loss"
    if not src.is_dir():
        raise FileNotFoundError(f"{src} not found: --original must point at a clone of the paper's repository")
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))
    if not hasattr(torch, "rfft"):  # removed from PyTorch; the documented equivalent
        torch.rfft = lambda x, signal_ndim: torch.view_as_real(torch.fft.rfft2(x))  # type: ignore[attr-defined]
    try:
        import robust_loss  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        # Only its Adaptive loss needs these extra dependencies (torch_dct, pkg_resources); stub it
        # so the other losses of the original can still be timed.
        import types

        sys.modules["robust_loss"] = types.SimpleNamespace(RobustLoss=None)  # type: ignore[assignment]
    from loss_provider import LossProvider  # type: ignore[import-not-found]

    paper_name = {"Watson-DFT": "Watson-fft", "Watson-DCT": "Watson-dct", "Deeploss-VGG": "Deeploss-vgg",
                  "Deeploss-Squeeze": "Deeploss-squeeze"}.get(name, name)
    loss = LossProvider().get_loss_function(paper_name, colorspace, image_size=(3, 64, 64))
    return loss.eval() if eval_mode and isinstance(loss, torch.nn.Module) else loss


def cases(losses: list[str], colorspaces: list[str], batch: int, size: int) -> list[Case]:
    out = []
    for cs in colorspaces:
        c = 3 if cs == "RGB" else 1
        for name in losses:
            shape = (batch, c, size, size)
            if name == "MS-SSIM":
                shape = (max(1, batch // 8), c, 192, 192)
            out.append(Case(name, cs, shape, _peers(name, cs)))
    return out


def time_losses(fns: dict[str, LossFn], shape, device: str, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds of one forward + backward (w.r.t. the prediction) per implementation.

    The implementations are timed round-robin on the same batch (one iteration each, in turn), so
    a noisy machine, cache state or frequency scaling affects all of them alike.
    """
    g = torch.Generator().manual_seed(0)
    target = torch.rand(shape, generator=g).to(device)
    pred0 = (target + 0.1 * torch.randn(shape, generator=g).to(device)).clamp(0, 1)
    fns = {k: _to_device(f, device) for k, f in fns.items()}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for label, fn in fns.items():
            pred = pred0.clone().requires_grad_(True)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn(pred, target).backward()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= warmup:
                times[label].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def time_loss(fn: LossFn, shape, device: str, repeats: int, warmup: int = 2) -> float:
    """Median seconds of one forward + backward of a single implementation."""
    return time_losses({"fn": fn}, shape, device, repeats, warmup)["fn"]


class _RssSampler:
    """Peak resident memory growth (MB) while a block runs, sampled from /proc every millisecond.

    ``ru_maxrss`` cannot be reset and is dominated by the import of torch; large tensors are
    mmapped by the allocator and returned on free, so the current RSS tracks them well.
    """

    def __init__(self, interval: float = 1e-3) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = False

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> _RssSampler:
        import threading

        self.base = self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def paper_experiment(fn: LossFn, target: torch.Tensor, iterations: int = 500, seed: int = 0) -> tuple[float, float]:
    """The Watson paper's runtime experiment for one loss: reconstruct ``target`` from noise.

    As the paper's ``src/runtime/runtime_experiment.py``: a parameter ``torch.randn(target.shape)``
    passed through a sigmoid is optimised with SGD (lr 1e-4) for ``iterations`` steps of forward +
    backward + step. Returns (seconds for the whole run, peak memory growth in MB: CUDA's allocator
    statistics, or the resident-memory sampler on the CPU).
    """
    device = target.device
    g = torch.Generator().manual_seed(seed)
    recon = torch.nn.Parameter(torch.randn(target.shape, generator=g).to(device))
    opt = torch.optim.SGD([recon], lr=1e-4)
    fn = _to_device(fn, device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.max_memory_allocated(device)
    sampler = _RssSampler() if not cuda else None
    if sampler is not None:
        sampler.__enter__()
    t0 = time.perf_counter()
    for _ in range(iterations):
        opt.zero_grad(set_to_none=True)
        fn(torch.sigmoid(recon), target).backward()
        opt.step()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    if cuda:
        memory = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        sampler.__exit__(None, None, None)
        memory = sampler.growth_mb
    return seconds, memory


#: the losses the paper's own code has without extra dependencies (its Adaptive needs torch_dct)
ORIGINAL_LOSSES = ("L1", "L2", "SSIM", "Watson-DCT", "Watson-DFT", "Deeploss-VGG", "Deeploss-Squeeze")


def _implementations(case: Case, args: argparse.Namespace) -> dict[str, Callable[[], LossFn]]:
    """Builders of every implementation timed for ``case``: ours, the peers, the paper's code (``--original``)."""
    impls: dict[str, Callable[[], LossFn]] = {
        "ours": lambda: _ours(case.loss, case.colorspace, args.weights_dir, case.shape[-1], args.eval)}
    for mode in getattr(args, "compile", None) or ():
        impls[compiled_label(mode)] = lambda mode=mode: _compiled(
            _ours(case.loss, case.colorspace, args.weights_dir, case.shape[-1], args.eval), mode)
    impls.update(case.peers)
    if args.original and case.loss in ORIGINAL_LOSSES:
        impls["original"] = lambda: _original(args.original, case.loss, case.colorspace, args.eval)
    return impls


#: the ``torch.compile`` modes ``--compile`` accepts (``reduce-overhead`` captures CUDA graphs on a GPU)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compiled_label(mode: str) -> str:
    """The implementation label of our loss under ``torch.compile(mode=mode)``."""
    return "ours+compile" if mode == "default" else f"ours+compile:{mode}"


def is_ours(label: str) -> bool:
    """Whether an implementation label is genloss' own loss (eager or compiled), not a peer or the paper's code."""
    return label == "ours" or label.startswith("ours+")


def compile_fullgraph(fn, mode: str):
    """``torch.compile(fn, fullgraph=True, mode=mode)`` (``'default'``: no mode): a graph break is an
    error, not a slow path. Shared by this benchmark and ``benchmarks/corrwise.py``."""
    return torch.compile(fn, fullgraph=True, mode=None if mode == "default" else mode)


def _compiled(fn: LossFn, mode: str) -> LossFn:
    """``torch.compile(fn, fullgraph=True, mode=mode)``, checked against eager code before it is timed.

    The check is the first call, which also compiles. It makes the same call as the timed ones
    (gradient enabled, the module in the mode it is timed in). It compares the value with eager
    code's, and the gradient with float64 eager code's: no further off than float32 eager code's.
    So a compiled loss that computes another number does not enter the table as a faster one.

    Compiled code draws other random numbers than eager code (the Watson losses' random shift in
    training mode). So it is compiled with inductor's ``fallback_random``, and all calls start from
    one seed, in a forked RNG that the benchmark's own stream does not see. The graph keeps that
    setting, which for the Watson shift's two random integers costs nothing measurable. Under
    ``reduce-overhead`` the result lives in a CUDA graph's memory that the next replay overwrites,
    so it is cloned first.
    """
    compiled = compile_fullgraph(fn, mode)
    checked = False

    def value_and_grad(f: LossFn, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        x = x.detach().clone().requires_grad_(True)
        value = f(x, y)
        (grad,) = torch.autograd.grad(value, x)
        return value.detach().clone(), grad.clone()

    def check(x: torch.Tensor, y: torch.Tensor) -> None:
        import torch._inductor.config as inductor_config

        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), inductor_config.patch(fallback_random=True):
            got, got_grad = value_and_grad(compiled, x, y)
            want, want_grad = value_and_grad(fn, x, y)
            exact, exact_grad = value_and_grad(fn, x.double(), y.double())
        got, got_grad, want, want_grad = (t.double() for t in (got, got_grad, want, want_grad))
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-6):
            raise RuntimeError(f"torch.compile(mode={mode!r}) gives {got.tolist()}, eager {want.tolist()}")
        # The gradient is held to eager code's own accuracy (against float64 eager code), not to eager
        # float32's digits: Watson-DFT's phase gradients depend on float32 rounding by up to ~10% of
        # the largest gradient there, in compiled and eager code alike.
        scale = float(exact_grad.abs().max())
        eager_error = float((want_grad - exact_grad).abs().max())
        error = float((got_grad - exact_grad).abs().max())
        if error > 2 * eager_error + 1e-5 * scale:
            raise RuntimeError(f"torch.compile(mode={mode!r}) gives another gradient: largest error {error:.3g} "
                               f"against float64 eager code (float32 eager code: {eager_error:.3g}), largest "
                               f"gradient {scale:.3g}")

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nonlocal checked
        if not checked:
            check(x, y)
            checked = True
        return compiled(x, y)

    run.module = fn  # type: ignore[attr-defined]  # for .to(device), see _to_device
    return run


def _to_device(fn: LossFn, device) -> LossFn:
    """Moves a loss module (or the module under a compiled loss) to ``device``; returns the callable."""
    module = getattr(fn, "module", fn)
    if isinstance(module, torch.nn.Module):
        module.to(device)
    return fn


def _save(rows: list[dict], args: argparse.Namespace) -> None:
    """Writes the rows so far to ``--json`` after every case, so that a run stopped by a time limit
    (a lent GPU is lent for minutes) keeps what it measured."""
    if getattr(args, "json_out", None):
        Path(args.json_out).write_text(json.dumps(rows, indent=2))


def _row(case: Case) -> dict:
    return {"loss": case.loss, "colorspace": case.colorspace, "shape": "x".join(map(str, case.shape)),
            "times": {}, "memory": {}, "errors": {}}


def _error_text(e: Exception) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:120]


def run_paper(args: argparse.Namespace) -> list[dict]:
    """``genloss bench --paper``: the paper's experiment per loss, ours vs the paper's code vs peers.

    Implementations of one case take turns (round-robin over ``--repeats`` rounds of a whole run
    each), so machine noise affects all alike; the median run time is reported.
    """
    import genloss

    losses = args.losses or [n for n in genloss.list_losses() if n != "MS-SSIM"]
    device = torch.device(args.device)
    rows = []
    for case in cases(losses, args.colorspaces, args.batch, args.size):
        g = torch.Generator().manual_seed(0)
        target = torch.rand(case.shape, generator=g).to(device)
        row = {**_row(case), "iterations": args.iterations}
        built: dict[str, LossFn] = {}
        for label, make in _implementations(case, args).items():
            try:
                fn = make()
                paper_experiment(fn, target, iterations=1)  # fails early if it cannot run; warms up
                built[label] = fn
            except Exception as e:  # a missing optional peer must not stop the benchmark
                row["errors"][label] = _error_text(e)
        runs: dict[str, list[float]] = {k: [] for k in built}
        for _ in range(args.repeats):
            for label, fn in built.items():
                seconds, memory = paper_experiment(fn, target, iterations=args.iterations)
                runs[label].append(seconds)
                if device.type == "cuda":
                    # On the CPU the resident-memory growth of a run in this process is masked by the
                    # memory earlier runs left to the allocator (it showed 0 MB for the first one), so
                    # none is reported: the per-iteration benchmark's --memory measures each case in a
                    # fresh process.
                    row["memory"][label] = max(row["memory"].get(label, 0.0), memory)
        row["times"] = {k: statistics.median(v) for k, v in runs.items()}
        rows.append(row)
        _save(rows, args)
    return rows


def format_paper_table(rows: list[dict], device: str) -> str:
    """Seconds for the whole run (``iterations`` steps) and peak MB, with ratios ours / each other."""
    lines = []
    head = (f"{'loss':<17} {'cs':<3} {'implementation':<40} {'seconds':>9} {'MB':>8} {'ours/this':>10} "
            f"{'paper GPU s':>11}")
    lines += [head, "-" * len(head)]
    for r in rows:
        ours = r["times"].get("ours")
        paper = PAPER_GPU.get((r["loss"], r["colorspace"]))
        for i, (label, t) in enumerate(r["times"].items()):
            ratio = f"{ours / t:.2f}" if ours and label != "ours" else ""
            lines.append(f"{_case_cells(r, i == 0, shape=False)}{label:<40} "
                         f"{t:>9.4g} {_fmt_mb(r['memory'].get(label)):>8} {ratio:>10} "
                         f"{(f'{paper[0]:.2f}' if paper and i == 0 else ''):>11}")
        lines += _error_lines(r, shape=False)
    note = ("(paper GPU s: the published figures on the authors' GPU, for orientation only; compare the ratios, "
            f"measured side by side on {device} in this run)")
    if not device.startswith("cuda"):
        note += ("\n(MB: CUDA only; for CPU peak memory run the per-iteration benchmark with --memory, one fresh "
                 "process per case)")
    return "\n".join([*lines, note])


def _peak_memory(spec: dict, device: str) -> float:
    """Peak memory (MB) of one case, in a fresh process so earlier cases do not mask it."""
    if device.startswith("cuda"):
        fn = _build(spec)
        time_loss(fn, tuple(spec["shape"]), device, repeats=1, warmup=0)  # lazy state, compilation
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.max_memory_allocated()
        time_loss(fn, tuple(spec["shape"]), device, repeats=1, warmup=0)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    # A fixed mmap threshold makes glibc return every large freed block at once, so the resident
    # size follows the live tensors (its default threshold adapts and keeps freed blocks mapped).
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run([sys.executable, "-m", "genloss.experiments.runtime", "--child", json.dumps(spec)],
                         capture_output=True, text=True, timeout=600, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr else "memory probe failed")
    return float(out.stdout.strip().splitlines()[-1])


def _build(spec: dict) -> LossFn:
    kind, name, cs = spec["kind"], spec["loss"], spec["colorspace"]
    if kind == "ours":
        return _ours(name, cs, spec.get("weights_dir"), spec["shape"][-1], spec.get("eval", False))
    if kind.startswith("ours+compile"):
        mode = kind.partition(":")[2] or "default"
        return _compiled(_ours(name, cs, spec.get("weights_dir"), spec["shape"][-1], spec.get("eval", False)), mode)
    if kind == "original":
        return _original(spec["original"], name, cs, spec.get("eval", False))
    return _peers(name, cs)[kind]()


def _child(spec_json: str) -> None:
    spec = json.loads(spec_json)
    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    fn = _build(spec)
    shape = tuple(spec["shape"])
    g = torch.Generator().manual_seed(0)
    target = torch.rand(shape, generator=g)
    pred = (target + 0.1 * torch.randn(shape, generator=g)).clamp(0, 1).requires_grad_(True)
    # build lazy state before measuring; a compiled loss at the full size (another size would recompile)
    warm = slice(None) if spec["kind"].startswith("ours+compile") else slice(1)
    fn(pred[warm], target[warm]).backward()
    pred.grad = None
    with _RssSampler() as sampler:
        fn(pred, target).backward()
    print(sampler.growth_mb)


def run(args: argparse.Namespace) -> list[dict]:
    import genloss

    losses = args.losses or [n for n in genloss.list_losses()]
    rows = []
    todo = cases(losses, args.colorspaces, args.batch, args.size)
    try:
        from tqdm.auto import tqdm

        todo_iter = tqdm(todo, desc="runtime", leave=False)
    except ImportError:  # pragma: no cover
        todo_iter = todo
    for case in todo_iter:
        row = _row(case)
        built: dict[str, LossFn] = {}
        for label, make in _implementations(case, args).items():
            try:
                fn = make()
                time_loss(fn, case.shape, args.device, repeats=1, warmup=0)  # fails early if it cannot run
                built[label] = fn
                if args.memory:
                    spec = {"kind": label, "loss": case.loss, "colorspace": case.colorspace,
                            "shape": list(case.shape), "weights_dir": args.weights_dir,
                            "original": args.original, "threads": torch.get_num_threads(), "eval": args.eval}
                    row["memory"][label] = _peak_memory(spec, args.device)
            except Exception as e:  # a missing optional peer must not stop the benchmark
                row["errors"][label] = _error_text(e)
        if built:
            row["times"] = time_losses(built, case.shape, args.device, args.repeats)
        rows.append(row)
        _save(rows, args)
    return rows


def format_table(rows: list[dict]) -> str:
    """One line per implementation: ms per iteration, peak MB, and time / the fastest peer's time."""
    lines = []
    head = (f"{'loss':<17} {'cs':<3} {'batch':<14} {'implementation':<40} {'ms':>9} {'MB':>8} "
            f"{'/fastest peer':>13} {'paper GPU ms':>12}")
    lines += [head, "-" * len(head)]
    for r in rows:
        peers = _peer_times(r)
        best = min(peers.values()) if peers else None
        paper = PAPER_GPU.get((r["loss"], r["colorspace"]))
        paper_ms = f"{paper[0] / 500 * 1e3:.1f}" if paper else ""
        for i, (label, t) in enumerate(r["times"].items()):
            first = i == 0
            ratio = f"{t / best:.2f}" if best and label != "original" else ""
            lines.append(f"{_case_cells(r, first, shape=True)}{label:<40} {t * 1e3:>9.1f} "
                         f"{_fmt_mb(r['memory'].get(label)):>8} {ratio:>13} {paper_ms if first else '':>12}")
        lines += _error_lines(r, shape=True)
    return "\n".join(lines)


def _case_cells(r: dict, first: bool, shape: bool) -> str:
    """The case's columns of a table line (loss, colour space and, with ``shape``, the batch shape):
    filled on the case's first line, blank below it."""
    cells = f"{r['loss'] if first else '':<17} {r['colorspace'] if first else '':<3} "
    return cells + (f"{r['shape'] if first else '':<14} " if shape else "")


def _error_lines(r: dict, shape: bool) -> list[str]:
    """One ``unavailable`` line per implementation that could not run; the first names the case when
    no timed line above does."""
    return [f"{_case_cells(r, i == 0 and not r['times'], shape)}{label:<40} unavailable: {err}"
            for i, (label, err) in enumerate(r["errors"].items())]


def _peer_times(row: dict) -> dict[str, float]:
    """The peers' times of a result row: neither ours (eager or compiled) nor the paper's code."""
    return {k: v for k, v in row["times"].items() if not is_ours(k) and k != "original"}


def _fmt_mb(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f}"


#: Watson-DCT/DFT time as a fraction of piq SSIM's on the CPU, to keep (issue 11's RGB figures);
#: other colour spaces keep the earlier 0.3. The ratio still depends on the machine: the code the
#: issue measured (f68b40b) gives 0.19x and 0.34x on the 2-core development machine, so whether a
#: change kept the ratio is measured against that revision there (benchmarks/against_revision.py).
WATSON_CPU_RATIO = {("Watson-DCT", "RGB"): 0.10, ("Watson-DFT", "RGB"): 0.17}
WATSON_CPU_RATIO_DEFAULT = 0.3
#: Watson-DCT/DFT RGB on a GPU: seconds per iteration (issue 11: 0.5 ms on an H200)
WATSON_GPU_SECONDS = 0.5e-3
#: the batch and image size those Watson targets were set for (the paper's 128 x C x 64 x 64): on other
#: sizes the ratio to piq's SSIM and the time per iteration are printed, not judged
WATSON_TARGET_BATCH, WATSON_TARGET_SIZE = 128, 64


def _at_watson_target_size(shape: str) -> bool:
    n, _, h, w = (int(v) for v in shape.split("x"))
    return n == WATSON_TARGET_BATCH and h == w == WATSON_TARGET_SIZE


def targets(rows: list[dict], device: str = "cpu") -> list[str]:
    """The issue's targets, checked on this run: ours <= the fastest peer; Watson on the CPU at most
    :data:`WATSON_CPU_RATIO` x piq SSIM, on a GPU (RGB) at most 0.5 ms per iteration (these two at the
    paper's 128 x C x 64 x 64 only; other sizes get a ``NOTE`` line with the figure). One verdict per
    variant of ours (eager, and each ``--compile`` mode), each against the same peers."""
    out = []
    for r in rows:
        peers = _peer_times(r)
        if not peers:
            continue
        for label in filter(is_ours, r["times"]):
            out += _verdicts(r, label, peers, device)
    return out


def _verdicts(r: dict, label: str, peers: dict[str, float], device: str) -> list[str]:
    ours = r["times"][label]
    name = f"{r['loss']} {r['colorspace']}" + ("" if label == "ours" else f" {label}")
    out = []
    # (Watson's targets hold for the paper's batch and size; elsewhere a NOTE line gives the figure)
    at_size = _at_watson_target_size(r["shape"])
    paper = f"{WATSON_TARGET_BATCH}xCx{WATSON_TARGET_SIZE}x{WATSON_TARGET_SIZE}"

    def judged(ok: bool, figure: str, target: str) -> str:
        if at_size:
            return f"{'PASS' if ok else 'MISS'} {name}: {figure} (target {target})"
        return f"NOTE {name}: {figure} at {r['shape']} (the target {target} is for {paper})"

    if r["loss"].startswith("Watson") and device.startswith("cuda") and r["colorspace"] == "RGB":
        out.append(judged(ours <= WATSON_GPU_SECONDS, f"{ours * 1e3:.2f} ms per iteration",
                          f"<= {WATSON_GPU_SECONDS * 1e3:.1f} ms on an H200"))
    elif r["loss"].startswith("Watson"):
        limit = WATSON_CPU_RATIO.get((r["loss"], r["colorspace"]), WATSON_CPU_RATIO_DEFAULT)
        if "piq.ssim" in peers:
            ratio = ours / peers["piq.ssim"]
            out.append(judged(ratio <= limit, f"{ratio:.2f}x piq SSIM", f"<= {limit}"))
    else:
        best = min(peers, key=peers.get)
        ratio = ours / peers[best]
        out.append(f"{'PASS' if ratio <= 1.0 else 'MISS'} {name}: {ratio:.2f}x the fastest peer {best} "
                   "(target <= 1.0)")
    memory = r["memory"]
    if "original" in memory and label in memory:
        ok = memory[label] <= memory["original"] * 1.05 + 1
        out.append(f"{'PASS' if ok else 'MISS'} {name}: peak memory {memory[label]:.0f} MB vs original "
                   f"{memory['original']:.0f} MB")
    return out


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def _canonical_names(names: list[str]) -> list[str]:
    """The registered names of ``--losses`` (any case, aliases such as 'mse'), so that the peers of each
    are found; an unknown name is an error (exit 2), not a row of "unavailable" and exit code 0."""
    import genloss
    from genloss.registry import loss_info

    out, unknown = [], []
    for name in names:
        try:
            out.append(loss_info(name).name)
        except (KeyError, ValueError):
            unknown.append(name)
    if unknown:
        parser().error(f"unknown loss(es) {', '.join(map(repr, unknown))}; registered: "
                       f"{', '.join(genloss.list_losses())}")
    return out


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's help text, wrapped without breaking words at their hyphens.

    argparse wraps with textwrap's default ``break_on_hyphens=True``, which cut the mode name
    ``max-autotune-no-cudagraphs`` into ``max-`` / ``autotune-no-cudagraphs`` at 80 columns.
    """

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genloss bench", description=__doc__.split("\n\n")[0],
                                formatter_class=_HelpFormatter)
    p.add_argument("--losses", nargs="*", help="losses to time (default: every registered loss)")
    p.add_argument("--colorspaces", nargs="*", default=["RGB", "LA"], choices=["RGB", "LA"],
                   help="colour spaces to time (default: both)")
    p.add_argument("--batch", type=int, default=128, help="images per batch (default: 128, the paper's)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default: 64, the paper's)")
    p.add_argument("--repeats", type=int, default=7, help="timed iterations per implementation (median)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--memory", action="store_true", help="also measure peak memory (one subprocess per case on CPU)")
    p.add_argument("--original", default=os.environ.get(_env.ORIGINAL_REPO),
                   help="path to a clone of SteffenCzolbe/PerceptualSimilarity to time the paper's code")
    p.add_argument("--weights-dir", default=None, help="folder with the tuned weight files")
    p.add_argument("--json", dest="json_out", default=None, help="also write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="batch 16, 3 repeats (a smoke run)")
    p.add_argument("--paper", action="store_true",
                   help="the paper's runtime experiment: --iterations SGD steps reconstructing a batch from noise, "
                        "whole-run time and peak memory per implementation (--repeats rounds, round-robin)")
    p.add_argument("--iterations", type=int, default=500, help="SGD steps per run with --paper (the paper: 500)")
    p.add_argument("--compile", nargs="*", choices=COMPILE_MODES, metavar="MODE", default=None,
                   help="also time our losses under torch.compile(fullgraph=True, mode=MODE), each checked against "
                        "the eager value first; no MODE: 'default'. 'reduce-overhead' captures CUDA graphs on a "
                        f"GPU. Modes: {', '.join(COMPILE_MODES)}")
    p.add_argument("--eval", action="store_true",
                   help="time our losses (and the paper's) in eval mode: no random shift in the Watson losses. "
                        "Default: training mode, as the paper's experiment and a new module")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.child:
        _child(args.child)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compile == []:
        args.compile = ["default"]
    if args.losses:
        args.losses = _canonical_names(args.losses)
    if args.quick:
        args.batch, args.repeats = 16, 3
        if args.paper:
            args.iterations, args.repeats = 20, 1
    if args.paper:
        rows = run_paper(args)
        print(f"torch {torch.__version__}, device {_device_name(args.device)}, {torch.get_num_threads()} threads, "
              f"the paper's runtime experiment: {args.iterations} SGD iterations, median of {args.repeats} run(s)")
        print(format_paper_table(rows, args.device))
        _save(rows, args)
        return 0
    rows = run(args)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"forward + backward per iteration (median of {args.repeats})")
    print(format_table(rows))
    print()
    for line in targets(rows, args.device):
        print(line)
    _save(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
