"""CorrWise benchmark: time of each flow estimator and of CorrWise(L1) (forward + backward), and end-point error.

For every available flow method (the classical 'coarse2fine', 'dis', 'farneback' always; 'raft', 'raft-small',
'pwcnet' when registered) and three settings (64x64 batch 32, 128x128 batch 8, 256x256 batch 4) it measures,
in one run and interleaved (round-robin over methods, so a busy shared machine slows all of them alike):

* ``flow ms``: the flow estimate alone (``torch.no_grad``), one call on the batch;
* ``corrwise ms``: ``CorrWise(nn.L1Loss(), flow=method)`` forward + backward to the prediction;
* ratios of both against DIS and of CorrWise against Farneback, side by side;
* end-point error (pixels, mean over four scikit-image photographs, interior: border of size/8 excluded)
  on the four synthetic motions of ``genloss.corrwise.synthetic`` (integer and sub-pixel translation,
  small affine, smooth random field; magnitudes scale with the size).

Learned estimators whose weights are not available are timed with random weights (said in the table);
their end-point error is then not meaningful and not shown.

    python benchmarks/corrwise.py [--quick] [--methods coarse2fine,dis] [--sizes 64,128] [--threads 2]
                                  [--device cuda] [--compile reduce-overhead]

``--compile MODE`` adds ``<method>+compile`` rows for the PyTorch estimators: the estimator and the
whole CorrWise(L1) under ``torch.compile(fullgraph=True, mode=MODE)``, with their own end-point error,
so that a compiled flow is compared at the same accuracy.

On CUDA the images and the PyTorch estimators live on the GPU (OpenCV's still run on the CPU and copy
their flow over) and every timed call is bracketed by CUDA events, with one ``torch.cuda.synchronize``
after the end event, outside the timed region.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from genloss import CorrWise
from genloss.corrwise import get_flow, list_flows
from genloss.corrwise.synthetic import MOTIONS, end_point_error, synthetic_pair
from genloss.data.photos import load_photos
from genloss.experiments.runtime import COMPILE_MODES, compile_fullgraph

SETTINGS = {64: 32, 128: 8, 256: 4}  # size -> batch
OPENCV = ("dis", "farneback")
# Compiled rows (--compile): each image size (and on the CPU each batch size, see docs/corrwise.md)
# compiles once, in the warm-up and end-point-error calls, not in the timed ones.
CLASSICAL = ["coarse2fine", "dis", "farneback"]
LEARNED = ["raft", "raft-small", "pwcnet"]
PHOTOS = ["astronaut", "coffee", "chelsea", "camera"]


def build(name: str) -> tuple[nn.Module, str]:
    """The estimator and a note ('' or 'random weights')."""
    try:
        return get_flow(name), ""
    except Exception as e:  # noqa: BLE001 - missing weights (offline) or any loading error: time random weights
        if name not in LEARNED:
            raise
        print(f"  {name}: pretrained weights unavailable ({type(e).__name__}); timing random weights")
        return get_flow(name, weights=None), "random weights"


def timed(fn: Callable[..., object], *args: object, device: torch.device = torch.device("cpu")) -> float:
    """Milliseconds of ``fn(*args)``: wall clock on the CPU, CUDA events (no sync inside the region) on a GPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # start from an idle device: earlier work is not timed
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*args)
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t) * 1000


def flow_only(est: nn.Module, target: torch.Tensor, pred: torch.Tensor) -> None:
    with torch.no_grad():
        est(target, pred)


def corrwise(loss: nn.Module, pred: torch.Tensor, target: torch.Tensor) -> None:
    p = pred.clone().requires_grad_()
    loss(p, target).backward()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats (3 instead of 7)")
    ap.add_argument("--methods", default=None, help="comma-separated flow names (default: every available one)")
    ap.add_argument("--sizes", default="64,128,256", help="comma-separated sizes among 64,128,256")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    ap.add_argument("--compile", default=None, metavar="MODE", choices=COMPILE_MODES,
                    help="also time each PyTorch estimator and its CorrWise(L1) under torch.compile(fullgraph=True, "
                         "mode=MODE) as '<method>+compile', with its own end-point error ('reduce-overhead': "
                         "CUDA graphs on a GPU)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    available = list_flows()
    methods = args.methods.split(",") if args.methods else [m for m in CLASSICAL + LEARNED if m in available]
    for m in methods:
        if m not in available:
            raise SystemExit(f"unknown flow method {m!r}; available: {', '.join(available)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    repeats = 3 if args.quick else 7
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {where}; repeats {repeats} (median)")

    estimators = {m: build(m) for m in methods}
    for est, _ in estimators.values():
        est.to(device)
    compiled = {}  # '<method>+compile' -> the method it compiles
    if args.compile:
        for m in [m for m in methods if m not in OPENCV]:  # OpenCV's estimators run outside PyTorch
            est, note = estimators[m]
            estimators[f"{m}+compile"] = (compile_fullgraph(est, args.compile), note)
            compiled[f"{m}+compile"] = m
        methods += list(compiled)
    rows = []
    for size in sizes:
        batch = SETTINGS[size]
        photos = load_photos(PHOTOS, size + size // 2).to(device)
        pairs = {k: synthetic_pair(photos, k, size) for k in MOTIONS}
        epe: dict[str, dict[str, float]] = {}
        for m, (est, note) in estimators.items():
            if note:
                continue
            with torch.no_grad():
                epe[m] = {k: end_point_error(est(a, b), t, size // 8).mean().item() for k, (a, b, t) in pairs.items()}
        # timing batch: the four photographs' sub-pixel pairs, repeated to the batch size
        a, b, _ = pairs["subpixel"]
        reps = -(-batch // a.shape[0])
        target, pred = a.repeat(reps, 1, 1, 1)[:batch], b.repeat(reps, 1, 1, 1)[:batch]
        losses = {m: CorrWise(nn.L1Loss(), flow=est) for m, (est, _) in estimators.items() if m not in compiled}
        # compiled whole (the wrapper, the flow, the warp and the loss in one graph), from the eager estimator
        losses.update({c: compile_fullgraph(CorrWise(nn.L1Loss(), flow=estimators[m][0]), args.compile)
                       for c, m in compiled.items()})

        times: dict[str, dict[str, list[float]]] = {m: {"flow": [], "cw": []} for m in methods}
        for m in methods:  # warm-up (first calls allocate and pick kernels)
            flow_only(estimators[m][0], target, pred)
            corrwise(losses[m], pred, target)
        for _ in range(repeats):
            for m in methods:
                times[m]["flow"].append(timed(flow_only, estimators[m][0], target, pred, device=device))
                times[m]["cw"].append(timed(corrwise, losses[m], pred, target, device=device))
        for m in methods:
            rows.append((size, batch, m, statistics.median(times[m]["flow"]), statistics.median(times[m]["cw"]),
                         epe.get(m), estimators[m][1]))

    dis_time = {(r[0]): (r[3], r[4]) for r in rows if r[2] == "dis"}
    fb_time = {(r[0]): r[4] for r in rows if r[2] == "farneback"}
    head = (f"{'size':>4} {'batch':>5} {'method':<20} {'flow ms':>9} {'corrwise ms':>11} {'flow/DIS':>8} "
            f"{'cw/DIS':>7} {'cw/Farn':>7} " + " ".join(f"{k[:8]:>8}" for k in MOTIONS) + f" {'EPE mean':>8}  note")
    print("\nTime per call (median) and end-point error in pixels (interior, mean over 4 photographs)")
    print(head)
    print("-" * len(head))
    for size, batch, m, tf, tc, e, note in rows:
        ref = dis_time.get(size)
        rf = f"{tf / ref[0]:8.2f}" if ref else f"{'-':>8}"
        rc = f"{tc / ref[1]:7.2f}" if ref else f"{'-':>7}"
        rc += f" {tc / fb_time[size]:7.2f}" if size in fb_time else f" {'-':>7}"
        errs = " ".join(f"{e[k]:8.3f}" for k in MOTIONS) + f" {statistics.mean(e.values()):8.3f}" if e else \
            " ".join(f"{'n/a':>8}" for _ in MOTIONS) + f" {'n/a':>8}"
        print(f"{size:>4} {batch:>5} {m:<20} {tf:9.1f} {tc:11.1f} {rf} {rc} {errs}  {note}")


if __name__ == "__main__":
    main()
