#!/usr/bin/env bash
# Kill-and-resume check (issue 15): runs `finetune` and `compare` once uninterrupted, then again while SIGKILLing
# them at random moments and resuming after each kill, and requires the final checkpoints, metrics, results.json,
# results.csv, report.md and plots to be byte-identical to the uninterrupted ones, with no stray files left
# (no *.tmp.<pid>, no run directory, no lock held).
#
#   bash tests/reliability/kill_resume.sh [KILLS]        KILLS per command (default 10: 20 kills in all)
# Environment: SPDLAB (default build/spdlab), SIZE=quick for the `compare --quick` sizes (4 optimizers, 10000
# training images, 2000 test images per domain; minutes) instead of the small default (CI); SEED for the kill
# times.
set -euo pipefail
cd "$(dirname "$0")/../.."
kills=${1:-10}
spdlab=$(realpath "${SPDLAB:-build/spdlab}")
init=$(realpath models/pretrained/fmnist_foundation.safetensors)
RANDOM=${SEED:-1}
work=$(mktemp -d /tmp/spdlab_kill_XXXXXX)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
if [ "${SIZE:-small}" = quick ]; then
  ft=(--init "$init" --optim spd --epochs 2 --range 50000:60000 --checkpoint-every 25)
  cmp_args=(--quick --checkpoint-every 25)
else
  ft=(--init "$init" --optim spd --epochs 2 --range 50000:51920 --checkpoint-every 7)
  cmp_args=(--optims adamw,spd --range 50000:50960 --epochs 1 --eval-images 300 --checkpoint-every 4)
fi
ft+=(--out out/finetune/ft.safetensors --metrics out/finetune/ft.jsonl)
cmp_args+=(--init "$init" --out out/compare)

# One command, uninterrupted, in $work/ref; its wall time bounds the kill moments.
reference() {
  local name=$1
  shift
  mkdir -p "$work/ref/out/$name"
  local t0=$(date +%s%N)
  (cd "$work/ref" && "$spdlab" "$@" >/dev/null 2>"$work/$name.ref.log")
  echo $(( ($(date +%s%N) - t0) / 1000000 ))
}

# The same command killed $kills times at random moments (each attempt resumes the last), then run to the end.
killed() {
  local name=$1 ms=$2 resume_dir=$3
  shift 3
  mkdir -p "$work/run/out/$name"
  local k=0 attempts=0
  while [ "$k" -lt "$kills" ]; do
    attempts=$((attempts + 1))
    if [ "$attempts" -gt $((4 * kills + 4)) ]; then
      echo "kill_resume: $name finished before every kill in $attempts attempts; see $work/$name.log" >&2
      exit 1
    fi
    if [ -e "$work/run/$resume_dir/run.json" ]; then
      (cd "$work/run" && exec "$spdlab" "$name" --resume "$resume_dir" >/dev/null 2>>"$work/$name.log") &
    else
      (cd "$work/run" && exec "$spdlab" "$name" "$@" >/dev/null 2>>"$work/$name.log") &
    fi
    local pid=$!
    local delay=$((200 + RANDOM % (ms > 200 ? ms : 201)))
    sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
    if kill -9 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      k=$((k + 1))
    else
      wait "$pid" 2>/dev/null || true  # it finished before the kill: start the comparison run over
      rm -rf "$work/run/out/$name" && mkdir -p "$work/run/out/$name"
    fi
  done
  if [ -e "$work/run/$resume_dir/run.json" ]; then
    (cd "$work/run" && "$spdlab" "$name" --resume "$resume_dir" >/dev/null 2>>"$work/$name.log")
  else
    (cd "$work/run" && "$spdlab" "$name" "$@" >/dev/null 2>>"$work/$name.log")
  fi
  echo "kill_resume: $name: $kills SIGKILLs over $attempts attempts, then resumed to the end"
}

fail=0
ms=$(reference finetune finetune "${ft[@]}")
[ -f "$work/ref/out/finetune/ft.safetensors" ] || { cat "$work/finetune.ref.log" >&2; exit 1; }
echo "kill_resume: finetune uninterrupted: $ms ms"
killed finetune "$ms" out/finetune/ft.safetensors.run "${ft[@]}"
ms=$(reference compare compare "${cmp_args[@]}")
[ -f "$work/ref/out/compare/results.json" ] || { cat "$work/compare.ref.log" >&2; exit 1; }
echo "kill_resume: compare uninterrupted: $ms ms"
killed compare "$ms" out/compare "${cmp_args[@]}"

# Byte-identical outputs (timing.json and the per-run records hold wall times, so they are left out).
for f in $(cd "$work/ref" && find out -type f ! -name timing.json ! -name 'run.json' ! -name lock \
             ! \( -path 'out/compare/*' -name '*-seed*.json' \) | sort); do
  if ! cmp -s "$work/ref/$f" "$work/run/$f"; then
    echo "kill_resume: $f differs from the uninterrupted run" >&2
    fail=1
  fi
done
echo "kill_resume: compared $(cd "$work/ref" && find out -type f ! -name timing.json ! -name run.json ! -name lock \
  ! \( -path 'out/compare/*' -name '*-seed*.json' \) | wc -l) files"
stray=$(cd "$work/run" && find out \( -name '*.tmp.*' -o -name '*.run' \) | sort)
if [ -n "$stray" ]; then
  echo "kill_resume: stray files left: $stray" >&2
  fail=1
fi
if ! diff <(cd "$work/ref" && find out | sort) <(cd "$work/run" && find out | sort) >&2; then
  echo "kill_resume: the resumed run left a different set of files (above)" >&2
  fail=1
fi
[ "$fail" = 0 ] && echo "kill_resume: OK: byte-identical to the uninterrupted runs, nothing stray"
exit "$fail"
