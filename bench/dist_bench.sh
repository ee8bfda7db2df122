#!/usr/bin/env bash
# Data parallel on this machine (issue 16): what 2 ranks cost and give against 1 process using the same cores.
#   1. allreduce_bench: the all-reduce of vit_tiny_patch16_224's and vit_fmnist_tiny's gradient sets on 2 ranks;
#   2. a fine-tune of the committed foundation model (vit_fmnist_tiny, SPD, batch 64, 156 steps), 2 ranks of 1
#      thread against 1 process of 2 threads, interleaved ROUNDS times: training images/s from the last progress
#      line, medians and the ratio;
#   3. vit_bench's training step of vit-tiny16 on 1 thread (the compute side of the scaling model in README.md).
# Usage: bash bench/dist_bench.sh [ROUNDS]   (default 3; build/ must hold a Release build with MPI)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
spdlab=$(realpath build/spdlab)
init=$(realpath models/pretrained/fmnist_foundation.safetensors)
mpi=(mpirun --oversubscribe -np 2)
[ "$(id -u)" = 0 ] && mpi+=(--allow-run-as-root)
cores=$(nproc)
echo "# all-reduce of a gradient set, 2 ranks"
for arch in vit_tiny_patch16_224 vit_fmnist_tiny; do
  SPDLAB_NUM_THREADS=1 "${mpi[@]}" -x SPDLAB_NUM_THREADS ./build/allreduce_bench --arch "$arch" --rounds 30
done
work=$(mktemp -d /tmp/spdlab_distbench_XXXXXX)
trap 'rm -rf "$work"' EXIT
ft=(finetune --init "$init" --optim spd --epochs 1 --range 50000:60000 --batch-size 64)
rate() { grep -o '[0-9.]* img/s' "$1" | tail -n1 | cut -d' ' -f1; }
echo "# fine-tune throughput (training images/s): 2 ranks x $((cores / 2)) threads vs 1 process x $cores threads"
two=() one=()
for r in $(seq "$rounds"); do
  "${mpi[@]}" "$spdlab" "${ft[@]}" --out "$work/two.safetensors" 2>"$work/two.log" >/dev/null
  "$spdlab" "${ft[@]}" --out "$work/one.safetensors" --threads "$cores" 2>"$work/one.log" >/dev/null
  two+=("$(rate "$work/two.log")")
  one+=("$(rate "$work/one.log")")
  echo "round $r: 2 ranks ${two[-1]} img/s, 1 process ${one[-1]} img/s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
m2=$(median "${two[@]}") m1=$(median "${one[@]}")
echo "{\"bench\":\"dist_finetune\",\"rounds\":$rounds,\"two_ranks_img_s\":$m2,\"one_process_img_s\":$m1,\"ratio\":$(awk -v a="$m2" -v b="$m1" 'BEGIN { printf "%.3f", a / b }')}"
echo "# compute per step: vit-tiny16 training, 1 thread"
SPDLAB_NUM_THREADS=1 ./build/vit_bench --config vit-tiny16 --mode train --iters 5
