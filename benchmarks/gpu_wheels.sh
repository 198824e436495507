#!/usr/bin/env bash
# Downloads, here, the wheels that benchmarks/gpu_checks.sh needs on the lent GPU machine and that its
# image lacks (the peers piq, pytorch-msssim and lpips; genloss itself is imported from src/ there).
# They land in .whl/ (ignored by git); name it in the device tool's `carry`:
#
#   bash benchmarks/gpu_wheels.sh          # here, once
#   run(command="OUT=$OUT bash benchmarks/gpu_checks.sh", carry=[".whl"], timeout_s=600)
#
# The machine's Python is 3.12 (see the device tool's KINDS.md); all three are pure-Python wheels.
set -eu
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
  piq==0.8.0 pytorch-msssim==1.0.0 lpips==0.1.4
ls -l .whl
