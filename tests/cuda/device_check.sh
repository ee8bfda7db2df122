#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and nvcc but no network: build here first
#   cmake -S . -B build-cuda -DSPDLAB_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 && cmake --build build-cuda -j
# then run this there (with build-cuda carried). It runs the cuda test suite on the GPU, then under
# compute-sanitizer memcheck and racecheck. Not yet run on a GPU: see kernels/cuda/README.md.
# A side-by-side benchmark against PyTorch (bench/cuda_bench) is not written yet.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=build-cuda/spdlab_tests
[ -x "$bin" ] || { echo "device_check: $bin is missing; build it first (see the top of this script)" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
SPDLAB_NUM_THREADS=4 "$bin" --test-suite=cuda
san=${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer
if [ -x "$san" ]; then
  for tool in memcheck racecheck; do
    echo "device_check: compute-sanitizer --tool $tool"
    "$san" --tool "$tool" --error-exitcode 1 "$bin" --test-suite=cuda --test-case='*float32*,*ViT on the GPU*'
  done
else
  echo "device_check: no compute-sanitizer at $san" >&2
fi
