#!/usr/bin/env bash
# Every GPU check and benchmark in one run, for a machine with CUDA (e.g. the device tool's H200; first
# run benchmarks/gpu_wheels.sh here and carry .whl, see there).
# Logs go to $OUT (default ./gpu-logs). Each step is time-boxed (about 580 s in all, under one device
# call) so that one slow step cannot use up the machine; the summary at the end says which steps failed.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_checks.sh
#
# DEVICE=cpu QUICK=1 runs the same steps on the CPU with tiny settings, to check the plumbing before a
# GPU is lent (tests/test_runtime_bench.py does this); QUICK=1 alone keeps the device and shrinks the runs.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-logs}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
mkdir -p "$OUT"
export GENLOSS_SHARED=${GENLOSS_SHARED:-$(cd .. && pwd)/shared}
# the lent machine's image names its interpreter python3; the steps below (run through timeout) call python.
# A wrapper, not a symbolic link: python3 is a virtual environment's, which a link elsewhere would leave.
if ! command -v python >/dev/null; then
  mkdir -p /tmp/genloss-bin && printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" >/tmp/genloss-bin/python \
    && chmod +x /tmp/genloss-bin/python && export PATH=/tmp/genloss-bin:$PATH
fi
# On the lent machine: the peers from the wheels carried in .whl (benchmarks/gpu_wheels.sh) and genloss
# from this checkout's src/ (its image has torch and genloss' other dependencies, not genloss).
if [ -d .whl ]; then
  python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/genloss-site \
    .whl/*.whl && export PYTHONPATH=/tmp/genloss-site${PYTHONPATH:+:$PYTHONPATH}
fi
python -c "import genloss" 2>/dev/null || export PYTHONPATH=$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}
if [ "$QUICK" = 1 ]; then
  paper=(--iterations 2 --losses L1 Watson-DCT --batch 2 --size 16)
  iter=(--losses L1 SSIM Watson-DCT --batch 2 --size 16 --repeats 1)
  ssim=(--sizes 64 --rounds 1 --min-time 0.01)
  flows=(--quick --methods coarse2fine --sizes 64)
  compiled=(--losses L1 --batch 2 --size 16 --repeats 1 --compile)
  cw_compiled=(--help)  # compiling coarse2fine takes minutes on a CPU: the plumbing check stops at the options
else
  paper=(--colorspaces RGB) iter=(--memory) ssim=() flows=()
  # the route to 0.5 ms per Watson iteration: the whole forward + backward compiled and replayed as CUDA graphs
  # (Watson first: the rows are saved case by case, and a step cut by its time limit keeps those done)
  compiled=(--losses Watson-DCT Watson-DFT SSIM L1 L2 --colorspaces RGB --compile reduce-overhead)
  # CorrWise(L1) with the default flow, compiled whole and replayed as CUDA graphs (issue 11: <= 3 ms at 64x64 b32)
  cw_compiled=(--quick --methods coarse2fine --sizes 64 --compile reduce-overhead)
fi
status=()
step() {  # step NAME SECONDS COMMAND...
  local name=$1 secs=$2; shift 2
  echo "== $name: $*" | tee -a "$OUT/summary.txt"
  if timeout "$secs" "$@" >"$OUT/$name.log" 2>&1; then status+=("ok    $name"); else status+=("FAIL  $name (rc $?)"); fi
  tail -n 30 "$OUT/$name.log"
}
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')" \
  | tee "$OUT/device.txt"
# 1. correctness on CUDA: the contract suite's CUDA tests (CPU vs CUDA, no host synchronisation, CUDA-graph
#    capture) and CorrWise's
step cuda-tests 120 python -m pytest -q -x -k "cuda or CUDA" tests/test_contract.py tests/test_corrwise.py
# 2. the paper's runtime experiment: 500 SGD iterations, genloss vs peers (and --original if GENLOSS_ORIGINAL_REPO)
step bench-paper 100 python -m genloss.experiments.runtime --paper --device "$DEVICE" --repeats 1 \
  --json "$OUT/bench-paper.json" "${paper[@]}"
# 3. per-iteration timings and memory of every loss (fwd + bwd, 128 x C x 64 x 64)
step bench-iter 100 python benchmarks/runtime.py --device "$DEVICE" --json "$OUT/bench-iter.json" "${iter[@]}"
# 4. the same under torch.compile (checked against the eager value first; compilation is not timed)
step bench-compile 120 python benchmarks/runtime.py --device "$DEVICE" --json "$OUT/bench-compile.json" "${compiled[@]}"
# 5. SSIM scaling against piq / pytorch-msssim at 64 .. 2048 px
step ssim-scaling 50 python benchmarks/ssim_scaling.py --device "$DEVICE" "${ssim[@]}"
# 6. CorrWise: flow estimators, time and end-point error
step corrwise 40 python benchmarks/corrwise.py --device "$DEVICE" "${flows[@]}"
# 7. the default flow's CorrWise compiled (its own end-point error beside the eager one)
step corrwise-compile 50 python benchmarks/corrwise.py --device "$DEVICE" "${cw_compiled[@]}"
printf '%s\n' "${status[@]}" | tee -a "$OUT/summary.txt"
