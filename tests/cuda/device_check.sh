#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU, the CUDA toolkit, PyTorch (and timm) but no Debian packages
# and no network. Here, first: bash tests/cuda/pack.sh   (the nvcc build, packed into build-gpu-pack/)
# There, in a copy of this tree with build-gpu-pack carried:   bash tests/cuda/device_check.sh [PACK_DIR]
#
# Steps, each under its own time limit so one that hangs cannot eat the rest (about 8 minutes in all):
#   1. the cuda test suite on the GPU (every op against the CPU and PyTorch's fixtures, gradcheck, the ViT,
#      optimizer replays, the 50-step fine-tune, the allocator, the errors);
#   2. bench/cuda_bench and bench/torch_cuda.py interleaved (ROUNDS, default 3): vit_base_patch16_224 training
#      and inference at batch 64 in fp32 and TF32, and the AdamW/SPD steps on its 86.6M parameters; the table
#      goes to stdout and to $OUT/cuda_bench.md (bench/cuda_table.py);
#   3. compute-sanitizer memcheck and racecheck over the float32 op cases and the ViT on the GPU.
# Logs go to $OUT (the device tool's folder) when it is set, else to PACK_DIR/out. Exit status: the number of
# failed steps.
set -uo pipefail
cd "$(dirname "$0")/../.."
pack=${1:-build-gpu-pack}
out=${OUT:-$pack/out}
rounds=${ROUNDS:-3}
mkdir -p "$out"
[ -x "$pack/spdlab_tests" ] || { echo "device_check: $pack/spdlab_tests is missing; run tests/cuda/pack.sh here first" >&2; exit 1; }
# The shared libraries travel compressed (pack.sh); Python's tarfile unpacks them where xz is not installed.
if [ ! -d "$pack/lib" ] && [ -f "$pack/lib.tar.xz" ]; then
  ${PYTHON:-python3} -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$pack/lib.tar.xz" "$pack"
fi
export LD_LIBRARY_PATH="$PWD/$pack/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SPDLAB_SOURCE_DIR=$PWD SPDLAB_NUM_THREADS=${SPDLAB_NUM_THREADS:-8}
python=${PYTHON:-python3}
failed=0
step() {  # step NAME SECONDS COMMAND...: runs it with a limit, its output to the console and $out/NAME.log
  local name=$1 limit=$2
  shift 2
  echo "=== device_check: $name (limit ${limit}s) ==="
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== device_check: $name: exit $rc after $((SECONDS - t0))s ==="
  [ "$rc" = 0 ] || failed=$((failed + 1))
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
if ldd "$pack/spdlab_tests" "$pack/cuda_bench" | grep 'not found'; then
  echo "device_check: shared libraries missing above; CUDA's come from the toolkit (LD_LIBRARY_PATH)" >&2
  exit 1
fi

step tests 180 "$pack/spdlab_tests" --test-suite=cuda

bench() {
  for ((r = 1; r <= rounds; ++r)); do
    echo "# round $r/$rounds"
    "$pack/cuda_bench" --iters 10 --warmup 3 || echo "# cuda_bench failed in round $r"
    "$python" bench/torch_cuda.py --iters 10 --warmup 3 || echo "# torch_cuda.py failed in round $r"
  done
}
step bench 240 bench
"$python" bench/cuda_table.py "$out/bench.log" --title "cuda_bench, $(date '+%Y-%m-%d'), commit $(
  git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" | tee "$out/cuda_bench.md"

san=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
if [ -x "$san" ]; then
  for tool in memcheck racecheck; do
    step "sanitizer-$tool" 90 "$san" --tool "$tool" --error-exitcode 1 \
      "$pack/spdlab_tests" --test-suite=cuda --test-case='*float32*,*ViT on the GPU*'
  done
else
  echo "device_check: no compute-sanitizer at $san" >&2
  failed=$((failed + 1))
fi
echo "device_check: $failed step(s) failed; logs in $out"
exit "$failed"
