#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan, in build-fuzz/) and runs each for SECONDS (default 60),
# starting from the committed seeds in tests/fuzz/corpus/<target>/ (new inputs go to a scratch copy, so the
# repository is untouched). Prints executions per second, coverage and corpus size per target; fails on any
# crash, leak, sanitizer report or timeout, and leaves the reproducer in build-fuzz/findings/<target>/.
#
#   bash tests/fuzz/run.sh [SECONDS] [TARGET...]        targets: safetensors json idx image flags
# FUZZ_SEED (default 1) fixes libFuzzer's mutation sequence, so a CI run does not pass or fail by chance;
# FUZZ_SEED=0 draws a new one each run (for long runs that should explore new ground).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors json idx image flags)
bash examples/setup.sh clang libomp-dev libclang-rt-14-dev >/dev/null
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPDLAB_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_C_COMPILER=clang >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}") >build-fuzz/build.log 2>&1 || {
  tail -n 40 build-fuzz/build.log >&2
  exit 1
}
failed=0
printf '%-12s %8s %10s %8s %8s %8s  %s\n' target seconds execs exec/s cov ft corpus
for t in "${targets[@]}"; do
  scratch=build-fuzz/corpus/$t findings=build-fuzz/findings/$t
  rm -rf "$scratch" "$findings"
  mkdir -p "$scratch" "$findings"
  cp tests/fuzz/corpus/"$t"/* "$scratch"/
  log=build-fuzz/fuzz_$t.log
  # One process, no forking: -max_total_time bounds it; 2 GiB RSS and 30 s per input are findings. (A legal
  # 8192x8192 image takes seconds to decode under ASan on a busy 2-core machine; 30 s is a hang.)
  if ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
     OMP_NUM_THREADS=1 SPDLAB_NUM_THREADS=1 \
     ./build-fuzz/fuzz_"$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 -max_len=65536 \
       -artifact_prefix="$findings"/ -print_final_stats=1 -seed="${FUZZ_SEED:-1}" "$scratch" >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed=1
  fi
  line=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n1 || true)
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  cov=$(grep -oE 'cov: [0-9]+' <<<"$line" | grep -oE '[0-9]+' || echo "?")
  ft=$(grep -oE 'ft: [0-9]+' <<<"$line" | grep -oE '[0-9]+' || echo "?")
  corp=$(grep -oE 'corp: [0-9]+/[0-9a-zA-Z]+' <<<"$line" | cut -d' ' -f2 || echo "?")
  printf '%-12s %8s %10s %8s %8s %8s  %s %s\n' "$t" "$seconds" "$execs" "$rate" "$cov" "$ft" "$corp" "$status"
  if [ "$status" != ok ]; then
    echo "tests/fuzz/run.sh: $t found a problem; the end of $log:" >&2
    tail -n 40 "$log" >&2
  fi
done
exit "$failed"
