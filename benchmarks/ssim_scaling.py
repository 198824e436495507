"""How SSIM's forward + backward time grows with the image size: genloss against piq and pytorch-msssim.

    python benchmarks/ssim_scaling.py                               # CPU, 2 threads, 64..2048 px
    python benchmarks/ssim_scaling.py --device cuda --sizes 256 1024 4096
    python benchmarks/ssim_scaling.py --filters --sizes 32 64 96 128 192   # banded vs tiled crossover

Every implementation is timed in the same run, round-robin (one measurement of each per round, so
machine noise hits all alike), and the median over rounds is reported with the ratio
genloss / fastest peer. One measurement is forward + backward (gradient for the input only) of a
1 - SSIM loss averaged over the batch, repeated until ``--min-time`` has passed.

What is compared (the closest common quantity; the values are printed so one can see they differ):

* genloss ``SSIMLoss``: 11x11 Gaussian (sigma 1.5), zero-padded "same" filtering (the Watson paper's
  SSIM map has the image's size), separable filter.
* ``piq.ssim(downsample=False)``: same window, *valid* filtering, a 2-D 11x11 depthwise convolution;
  its default ``downsample=True`` would first shrink large images, a different quantity.
* ``pytorch_msssim.ssim``: same window, *valid* filtering, separable depthwise convolutions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from genloss.losses import ssim as ssim_module

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _genloss(filter_side: int | None = None) -> Loss:
    loss = ssim_module.SSIMLoss(reduction="mean")

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if filter_side is None:
            return loss(x, y)
        saved, ssim_module.BANDED_MAX_SIDE = ssim_module.BANDED_MAX_SIDE, filter_side
        try:
            return loss(x, y)
        finally:
            ssim_module.BANDED_MAX_SIDE = saved

    return run


def _piq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    import piq

    return 1 - piq.ssim(x, y, data_range=1.0, downsample=False)


def _pytorch_msssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    import pytorch_msssim

    return 1 - pytorch_msssim.ssim(x, y, data_range=1.0)


def implementations(filters: bool) -> dict[str, Loss]:
    """The losses to time: genloss and its peers, or (``filters``) genloss' two filter paths."""
    if filters:
        return {"genloss-banded": _genloss(1 << 30), "genloss-tiled": _genloss(0)}
    impls: dict[str, Loss] = {"genloss": _genloss()}
    for name, fn, module in (("piq", _piq, "piq"), ("pytorch_msssim", _pytorch_msssim, "pytorch_msssim")):
        try:
            __import__(module)
        except ImportError:
            print(f"({module} not installed: skipped)")
            continue
        impls[name] = fn
    return impls


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Loss, x: torch.Tensor, y: torch.Tensor, min_time: float) -> float:
    """Seconds per forward + backward, averaged over as many calls as fit in ``min_time``."""
    calls, start = 0, time.perf_counter()
    while True:
        x.grad = None
        fn(x, y).backward()
        calls += 1
        _sync(x.device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls


def bench_size(impls: dict[str, Loss], size: int, args: argparse.Namespace) -> dict[str, list[float]]:
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(size)
    y = torch.rand(args.batch, 3, size, size, generator=g).to(device)
    x = (y + 0.1 * torch.randn(y.shape, generator=g).to(device)).clamp(0, 1).requires_grad_(True)
    values = {name: float(fn(x, y).detach()) for name, fn in impls.items()}  # also the warm-up
    print(f"{size:>5} px values: " + ", ".join(f"{k} {v:.6f}" for k, v in values.items()))
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(args.rounds):
        for name, fn in impls.items():
            times[name].append(time_once(fn, x, y, args.min_time))
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 2048], help="image sides (square)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5, help="round-robin repetitions; the median is reported")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per measurement")
    p.add_argument("--filters", action="store_true", help="time genloss' banded and tiled filters instead of peers")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    impls = implementations(args.filters)
    print(f"SSIM forward+backward, batch {args.batch} x 3 channels, {args.device}, {args.threads} threads, "
          f"median of {args.rounds} round-robin rounds")
    if not args.filters:
        print("genloss: zero-padded 'same' filter (paper); piq (downsample=False, 2-D kernel) and pytorch_msssim "
              "(separable): valid filter -- same window, values differ by the border treatment")
    names = list(impls)
    base, peers = names[0], names[1:]
    print(f"{'size':>5} " + " ".join(f"{n:>16}" for n in names) + f" {'ratio':>8}")
    for size in args.sizes:
        times = bench_size(impls, size, args)
        med = {n: statistics.median(t) for n, t in times.items()}
        ratio = med[base] / min(med[n] for n in peers) if peers else float("nan")
        print(f"{size:>5} " + " ".join(f"{med[n] * 1e3:>14.2f}ms" for n in names) + f" {ratio:>7.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
