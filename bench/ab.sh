#!/usr/bin/env bash
# bench/ab.sh: two builds of spdlab side by side (A B A B ...), for a change that must not cost speed: the
# vit_bench training step and forward on both configs, and the SPD and AdamW optimizer steps. Prints per
# config x mode the median img/s of each build over the rounds and the ratio B / A, then the optimizer steps.
# Not a test; run it on an otherwise idle machine.
#
#   bash bench/ab.sh A_DIR B_DIR [ROUNDS]    each DIR holds vit_bench and optim_bench (default 5 rounds)
#
# e.g. build the previous commit in a worktree, then: bash bench/ab.sh /tmp/old-build build 5
set -euo pipefail
A=${1:?usage: bash bench/ab.sh A_DIR B_DIR [ROUNDS]}
B=${2:?usage: bash bench/ab.sh A_DIR B_DIR [ROUNDS]}
ROUNDS=${3:-5}
for d in "$A" "$B"; do
  for p in vit_bench optim_bench; do
    [[ -x "$d/$p" ]] || { echo "ab.sh: $d/$p is missing; build it with --target $p" >&2; exit 2; }
  done
done
LOG=$(mktemp)
echo "# ab.sh: A=$A B=$B rounds=$ROUNDS $(date '+%Y-%m-%d %H:%M %Z'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  echo "ab.sh: round $r/$ROUNDS" >&2
  for cfg in vit-fmnist vit-tiny16; do
    for mode in train infer; do
      for side in A B; do
        dir=$A
        [[ $side == B ]] && dir=$B
        line=$("$dir/vit_bench" --mode "$mode" --config "$cfg" --iters 10 --warmup 2)
        echo "$side $cfg $mode $(echo "$line" | grep -o 'img_per_s=[0-9.]*' | cut -d= -f2)" >>"$LOG"
      done
    done
  done
  for side in A B; do
    dir=$A
    [[ $side == B ]] && dir=$B
    for o in adamw spd; do
      ms=$("$dir/optim_bench" --steps 20 --warmup 3 --only "$o" | awk -v o="$o" '$1 == o {print $2}')
      echo "$side optim $o $ms" >>"$LOG"
    done
  done
done
python3 - "$LOG" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    side, a, b, v = line.split()
    rows.setdefault((a, b), {}).setdefault(side, []).append(float(v))
print("| config | mode | A median | B median | B / A | A rounds | B rounds |")
print("|---|---|---:|---:|---:|---|---|")
for (a, b), d in rows.items():
    ma, mb = statistics.median(d["A"]), statistics.median(d["B"])
    unit = "ms/step" if a == "optim" else "img/s"
    fmt = lambda xs: " ".join(f"{x:.1f}" if unit == "img/s" else f"{x:.2f}" for x in xs)
    print(f"| {a} | {b} ({unit}) | {ma:.2f} | {mb:.2f} | {mb / ma:.3f} | {fmt(d['A'])} | {fmt(d['B'])} |")
PY
rm -f "$LOG"
