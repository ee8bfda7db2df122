#!/usr/bin/env bash
# bench/run.sh: builds the benchmarks (Release, in build/), runs spdlab and PyTorch interleaved (A B A B ...)
# and prints a markdown report of medians with spdlab/PyTorch ratios, the date and the machine.
# Not a test: it takes tens of minutes on a small machine; run it on an otherwise idle one.
#
#   bash bench/run.sh [ROUNDS]          ROUNDS interleaved rounds per config x mode (default 5)
#
# Environment knobs: ITERS (10) and WARMUP (2) per process; CONFIGS ("vit-fmnist vit-tiny16");
# MODES ("train infer eval"); eval (the study's evaluation at its batch of 500, against PyTorch's inference at
# 500) runs for EVAL_CONFIGS ("vit-fmnist") with EVAL_ITERS (3) and EVAL_WARMUP (1), each iteration 2 batches;
# TORCH_SETUPS ("default one-thread all-threads passive chunks ddp", and one-thread-avx512 passive-avx512
# chunks-avx512 ddp-avx512 on a CPU with AVX-512; chunks, inference side by side, only for infer and eval; ddp,
# one process per core under DistributedDataParallel, only for train); PYTHON (/usr/bin/python3);
# BUILD_DIR (build); JOBS (nproc) for the build; SKIP_BUILD=1 reuses an existing build;
# SKIP_OPTIM=1 / SKIP_MATMUL=1 skip those benches.
# Raw lines go to $BUILD_DIR/bench-<stamp>.log, the report to stdout and $BUILD_DIR/bench-<stamp>.md.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${1:-5}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "usage: bash bench/run.sh [ROUNDS]" >&2; exit 2; }
ITERS=${ITERS:-10}
WARMUP=${WARMUP:-2}
CONFIGS=${CONFIGS:-"vit-fmnist vit-tiny16"}
MODES=${MODES:-"train infer eval"}
EVAL_CONFIGS=${EVAL_CONFIGS:-"vit-fmnist"}
EVAL_ITERS=${EVAL_ITERS:-3}
EVAL_WARMUP=${EVAL_WARMUP:-1}
# On a CPU with AVX-512, PyTorch also runs with OpenBLAS's and its own AVX-512 kernels (torch_vit.py's -avx512
# setups), which Debian's builds do not pick by themselves on Zen 4 and 5: PyTorch's fastest setup must include them.
DEFAULT_SETUPS="default one-thread all-threads passive chunks ddp"
grep -qw avx512f /proc/cpuinfo 2>/dev/null &&
  DEFAULT_SETUPS+=" one-thread-avx512 passive-avx512 chunks-avx512 ddp-avx512"
TORCH_SETUPS=${TORCH_SETUPS:-$DEFAULT_SETUPS}
PYTHON=${PYTHON:-/usr/bin/python3}
BUILD=${BUILD_DIR:-$ROOT/build}
[[ "$BUILD" = /* ]] || BUILD=$ROOT/$BUILD

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null || exit 1
  cmake --build "$BUILD" -j"${JOBS:-$(nproc)}" --target vit_bench optim_bench matmul_bench >/dev/null || {
    echo "run.sh: build failed; rerun: cmake --build $BUILD --target vit_bench" >&2
    exit 1
  }
fi

STAMP=$(date +%Y%m%d-%H%M%S)
LOG=$BUILD/bench-$STAMP.log
REPORT=$BUILD/bench-$STAMP.md
ERR=$BUILD/bench-$STAMP.err
: >"$LOG"
: >"$ERR"
note() { echo "# note: $*" >>"$LOG"; echo "run.sh: $*" >&2; }

# Machine and version facts, for the report's header.
{
  echo "# date: $(date '+%Y-%m-%d %H:%M %Z')"
  echo "# nproc: $(nproc)"
  echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: *//')"
  echo "# mem: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# commit: $(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(
    [[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ]] && echo ' (with uncommitted changes)')"
  echo "# rounds: $ROUNDS"
  echo "# iters: $ITERS"
  echo "# warmup: $WARMUP"
} >>"$LOG"

# PyTorch is optional: without it the report has spdlab's numbers only and says so.
TORCH=1
if ! TV=$("$PYTHON" -c 'import torch; print(torch.__version__, torch.get_num_threads())' 2>>"$ERR"); then
  TORCH=0
  note "PyTorch is not importable with $PYTHON; running spdlab only"
else
  echo "# torch: ${TV% *}" >>"$LOG"
  # "default" duplicates a setup when torch's own choice is 1 thread or every core; skip the duplicate.
  DEFAULT_THREADS=${TV##* }
  SETUPS=""
  for s in $TORCH_SETUPS; do
    if [[ $s == default && $DEFAULT_THREADS == 1 && " $TORCH_SETUPS " == *" one-thread "* ]]; then
      note "torch's default is 1 thread here, the same as one-thread; skipping default"
    elif [[ $s == default && $DEFAULT_THREADS == "$(nproc)" && " $TORCH_SETUPS " == *" all-threads "* ]]; then
      note "torch's default is $DEFAULT_THREADS threads here, the same as all-threads; skipping default"
    else
      SETUPS+="$s "
    fi
  done
fi

# Runs one benchmark process and appends its result line (or a failure note) to the log.
run_one() {
  local label=$1
  shift
  local out
  if out=$("$@" 2>>"$ERR"); then
    out=$(grep -E '^(spdlab|torch) ' <<<"$out" | tail -n1)
    if [[ -n "$out" ]]; then
      echo "$out" >>"$LOG"
      echo "  $out" >&2
      return
    fi
  fi
  note "$label failed (stderr in $ERR)"
}

for cfg in $CONFIGS; do
  for mode in $MODES; do
    iters=$ITERS warmup=$WARMUP
    if [[ $mode == eval ]]; then
      [[ " $EVAL_CONFIGS " == *" $cfg "* ]] || continue
      iters=$EVAL_ITERS warmup=$EVAL_WARMUP
    fi
    for ((r = 1; r <= ROUNDS; ++r)); do
      echo "run.sh: $cfg $mode round $r/$ROUNDS" >&2
      args=(--mode "$mode" --config "$cfg" --iters "$iters" --warmup "$warmup")
      run_one "spdlab $cfg $mode" "$BUILD/vit_bench" "${args[@]}"
      if [[ $TORCH == 1 ]]; then
        for s in $SETUPS; do
          [[ $s == chunks* && $mode == train ]] && continue  # chunks side by side is an inference setup
          [[ $s == ddp* && $mode != train ]] && continue     # and data parallel a training one
          run_one "torch $cfg $mode $s" "$PYTHON" "$ROOT/bench/torch_vit.py" "${args[@]}" --threads-setup "$s"
        done
      fi
    done
  done
done

# The optimizer and matmul benches print tables of their own; they run once and are copied verbatim.
section() {
  local name=$1
  shift
  echo "run.sh: $name" >&2
  echo "## section: $name" >>"$LOG"
  "$@" >>"$LOG" 2>>"$ERR" || note "$name failed (stderr in $ERR)"
  echo "## end" >>"$LOG"
}
if [[ "${SKIP_OPTIM:-0}" != 1 ]]; then
  section optim_bench "$BUILD/optim_bench"
  [[ $TORCH == 1 ]] && section torch_optim "$PYTHON" "$ROOT/bench/torch_optim.py"
fi
[[ "${SKIP_MATMUL:-0}" != 1 ]] && section matmul_bench "$BUILD/matmul_bench"

# Aggregation: medians over rounds per (runner, setup, config, mode); ratios against torch's fastest setup.
if ! command -v python3 >/dev/null; then
  echo "run.sh: no python3 to aggregate with; the raw lines:" >&2
  cat "$LOG"
  exit 0
fi
python3 - "$LOG" >"$REPORT" <<'EOF'
import re
import statistics
import sys

lines = open(sys.argv[1]).read().splitlines()
facts, notes, runs, sections, current = {}, [], {}, {}, None
for line in lines:
    if current is not None:
        if line == "## end":
            current = None
        else:
            sections[current].append(line)
    elif line.startswith("## section: "):
        current = line[len("## section: "):]
        sections[current] = []
    elif line.startswith("# note: "):
        notes.append(line[len("# note: "):])
    elif line.startswith("# "):
        key, _, value = line[2:].partition(": ")
        facts[key] = value
    elif line.startswith(("spdlab ", "torch ")):
        runner, config, mode, *kv = line.split()
        kv = dict(item.split("=", 1) for item in kv)
        setup = kv.get("setup", "")
        runs.setdefault((runner, setup, config, mode), []).append(kv)


def med(rows, key):
    return statistics.median(float(r[key]) for r in rows)


print(f"### Results: {facts.get('date', '?')}\n")
print(f"- machine: {facts.get('nproc', '?')} cores, {facts.get('cpu', '?')}, {facts.get('mem', '?')} RAM "
      f"(load average at start: {facts.get('load', '?')})")
isa = next((rows[0].get("isa", "?") for (r, _, _, _), rows in runs.items() if r == "spdlab"), "?")
print(f"- spdlab commit {facts.get('commit', '?')} (CPU kernels: {isa}); "
      f"PyTorch {facts.get('torch', 'not available')}")
print(f"- medians over {facts.get('rounds', '?')} interleaved rounds (A B A B ...); each process reports the "
      f"median of {facts.get('iters', '?')} timed iterations after {facts.get('warmup', '?')} warm-up ones")
for n in notes:
    print(f"- note: {n}")
print()

keys = sorted({(c, m) for (_, _, c, m) in runs}, key=lambda k: (k[0], k[1] != "train"))
print("| config | mode | batch | spdlab img/s | spdlab GFLOP/s (network / executed) | torch best img/s (setup) | speed ratio "
      "| spdlab peak RSS MB | torch peak RSS MB | RSS ratio |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for config, mode in keys:
    sp = runs.get(("spdlab", "", config, mode))
    torch_rows = {s: rows for (r, s, c, m), rows in runs.items() if r == "torch" and c == config and m == mode}
    best = max(torch_rows, key=lambda s: med(torch_rows[s], "img_per_s")) if torch_rows else None
    batch = (sp or (torch_rows[best] if best else [{}]))[0].get("batch", "?")
    cells = [config, mode, batch]
    gf = f"{med(sp, 'gflops'):.1f}" if sp else "-"
    if sp and all("gflops_exec" in r for r in sp):
        gf += f" / {med(sp, 'gflops_exec'):.1f}"
    cells += [f"{med(sp, 'img_per_s'):.1f}", gf] if sp else ["failed", "-"]
    if best:
        tb = torch_rows[best]
        cells.append(f"{med(tb, 'img_per_s'):.1f} ({best})")
        cells.append(f"{med(sp, 'img_per_s') / med(tb, 'img_per_s'):.2f}x" if sp else "-")
    else:
        cells += ["-", "-"]
    cells.append(f"{med(sp, 'peak_rss_mb'):.0f}" if sp else "-")
    if best:
        cells.append(f"{med(torch_rows[best], 'peak_rss_mb'):.0f}")
        cells.append(f"{med(sp, 'peak_rss_mb') / med(torch_rows[best], 'peak_rss_mb'):.2f}" if sp else "-")
    else:
        cells += ["-", "-"]
    print("| " + " | ".join(cells) + " |")
print("\nSpeed ratio = spdlab img/s / the fastest PyTorch setup's img/s (issue 17's targets: at least 2.0x "
      "training, 2.5x inference). RSS ratio = spdlab / that setup's peak RSS (target while training: at most 0.4). "
      "infer = spdlab's models::logits (a batch's chunks side by side on the CPU) against PyTorch's model(x), or "
      "in its chunks setups the same side by side; train's ddp setups are PyTorch's data parallel, one process "
      "per core. eval = the study's evaluation at its batch size (spdlab: "
      "loader, preprocessing, forward, argmax; PyTorch: forward and argmax on ready tensors), per batch; its "
      "iterations are EVAL_ITERS, not the ones below. "
      "GFLOP/s counts the whole network's products (the issue's count, as for PyTorch); 'executed' counts what "
      "spdlab runs, whose last block computes the class token's row only.\n")

print("<details><summary>Every runner and setup</summary>\n")
print("| config | mode | runner | setup | threads | median ms | min ms | img/s | GFLOP/s | peak RSS MB | "
      "libraries' RSS MB | rounds |")
print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for (runner, setup, config, mode), rows in sorted(runs.items(), key=lambda kv: (kv[0][2], kv[0][3] != "train",
                                                                                kv[0][0] != "spdlab", kv[0][1])):
    print(f"| {config} | {mode} | {runner} | {setup or '-'} | {rows[0].get('threads', '?')} | "
          f"{med(rows, 'median_ms'):.1f} | {min(float(r['min_ms']) for r in rows):.1f} | "
          f"{med(rows, 'img_per_s'):.1f} | {med(rows, 'gflops'):.1f} | {med(rows, 'peak_rss_mb'):.0f} | "
          f"{med(rows, 'base_rss_mb'):.0f} | {len(rows)} |")
print("\n</details>\n")


def table_rows(text, pattern):
    out = {}
    for line in text:
        m = re.match(pattern, line)
        if m:
            out.setdefault(m.group(1).strip(), []).append(m.groups()[1:])
    return out


if "optim_bench" in sections:
    ours = table_rows(sections["optim_bench"], r"^(.{26}) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+)")
    theirs = table_rows(sections.get("torch_optim", []), r"^(.{26}) +(\d+) +([\d.]+) +([\d.]+)")
    floor = float(ours["floor (32 B/param)"][0][0]) if "floor (32 B/param)" in ours else None
    adamw = [(float(ms), f"{name}, {t} threads") for name in ("adamw", "adamw foreach")
             for t, ms, _ in theirs.get(name, [])]
    if floor:
        print("Optimizer step on vit_tiny_patch16_224's parameters (ms, median):\n")
        print("| step | ms | x floor |")
        print("|---|---:|---:|")
        print(f"| fused-loop floor (32 B/param) | {floor:.2f} | 1.00 |")
        for name in ("adamw", "spd"):
            if name in ours:
                ms = float(ours[name][0][0])
                print(f"| spdlab {name} | {ms:.2f} | {ms / floor:.2f} |")
        if adamw:
            ms, how = min(adamw)
            print(f"| torch AdamW, fastest ({how}) | {ms:.2f} | {ms / floor:.2f} |")
        print("\nTargets: spdlab spd within 1.3x of the floor; the floor at least 2x faster than torch AdamW.\n")

for name in ("optim_bench", "torch_optim", "matmul_bench"):
    if name in sections:
        print(f"<details><summary>{name} output</summary>\n\n```")
        print("\n".join(sections[name]))
        print("```\n\n</details>\n")
EOF
cat "$REPORT"
echo "run.sh: raw lines in $LOG, report in $REPORT" >&2
