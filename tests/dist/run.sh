#!/usr/bin/env bash
# Data parallel under mpirun (issue 16), 2 ranks on this machine (oversubscribed where it has fewer cores):
#   1. SGD, 100 steps: the 2-rank parameters within 1e-6 relative of one process's on the same global batch;
#   2. SPD, 100 steps: the per-layer firing decisions of every step identical to one process's; two 2-rank runs
#      bit-identical (checkpoint and metrics); the replicas' own check (parameters and SPD counts equal on every
#      rank) ran in each;
#   3. eval on 2 ranks prints exactly one process's accuracies; a small compare study completes on 2 ranks, writes
#      the files one process writes, scores the pre-trained model exactly as one process does, and its SPD run's
#      per-tensor firing counts equal one process's; with --split runs (each rank trains whole runs) its
#      results.json, results.csv and report.md are byte-identical to one process's at the same thread count;
#   4. SIGKILL of rank 1: the job ends within 60 s, rank 0 says why, and --resume on 2 ranks ends with the bits of
#      the uninterrupted run;
#   5. a rank that hangs (SIGSTOP) with SPDLAB_DIST_TIMEOUT=5: rank 0 reports it and every rank ends within 60 s;
#   6. refusals: a command that runs in one process, and a global batch smaller than the ranks;
#   7. where a CUDA build (build-cuda/spdlab, or SPDLAB_CUDA) and 2 GPUs are present: SGD on 2 GPUs through NCCL
#      within 1e-5 of 1 GPU (else it says why it is skipped).
# Usage: bash tests/dist/run.sh   (SPDLAB: the tool, default build/spdlab; KEEP=1 keeps the work directory)
set -euo pipefail
cd "$(dirname "$0")/../.."
spdlab=$(realpath "${SPDLAB:-build/spdlab}")
init=$(realpath models/pretrained/fmnist_foundation.safetensors)
command -v mpirun >/dev/null || { echo "tests/dist: no mpirun: apt-get install openmpi-bin libopenmpi-dev" >&2; exit 1; }
work=$(mktemp -d /tmp/spdlab_dist_XXXXXX)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
root=$PWD
cd "$work"
mpi=(mpirun --oversubscribe -np 2)
[ "$(id -u)" = 0 ] && mpi+=(--allow-run-as-root)  # Open MPI refuses root without it (CI runs as root)
ft=(--init "$init" --epochs 1 --range 50000:51600 --batch-size 16)  # 100 steps of 16 images
fail() { echo "tests/dist: $*" >&2; exit 1; }
now() { date +%s.%N; }
# The pid of rank $1 among this test's spdlab processes.
rank_pid() {
  local p
  for p in $(pgrep -f "$spdlab finetune" || true); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1"; then echo "$p"; return; fi
  done
}
# Whether two checkpoints hold the same tensors bit for bit (their metadata, which records the command, may differ).
same_tensors() {
  "$spdlab" inspect "$1" --diff "$2" | tail -n1 | grep -qE "^diff: ([0-9]+) tensors, \1 identical"
}
wait_for_file() {
  local i
  for i in $(seq 600); do [ -e "$1" ] && return 0; sleep 0.1; done
  fail "waited 60 s for $1"
}

echo "tests/dist: 1. SGD, 2 ranks against 1 process"
"${mpi[@]}" "$spdlab" finetune "${ft[@]}" --optim sgd --out sgd2.safetensors 2>sgd2.log
"$spdlab" finetune "${ft[@]}" --optim sgd --out sgd1.safetensors 2>/dev/null
grep -q "data parallel over 2 ranks (mpi): 8 images per rank (up to), global batch 16" sgd2.log ||
  fail "the per-rank and global batch were not printed (sgd2.log)"
line=$("$spdlab" inspect sgd2.safetensors --diff sgd1.safetensors | tail -n1)
echo "  $line"
rel=$(sed -E 's/.*largest relative difference ([0-9.e+-]+).*/\1/' <<<"$line")
awk -v r="$rel" 'BEGIN { exit !(r < 1e-6) }' || fail "SGD: 2 ranks differ from 1 process by $rel (> 1e-6)"

echo "tests/dist: 2. SPD: the same decisions as 1 process; 2-rank runs bit-identical"
"${mpi[@]}" "$spdlab" finetune "${ft[@]}" --optim spd --out spd2.safetensors --metrics spd2.jsonl 2>/dev/null
mkdir again
(cd again && "${mpi[@]}" "$spdlab" finetune "${ft[@]}" --optim spd --out spd2.safetensors --metrics spd2.jsonl 2>/dev/null)
"$spdlab" finetune "${ft[@]}" --optim spd --out spd1.safetensors --metrics spd1.jsonl 2>/dev/null
cmp spd2.safetensors again/spd2.safetensors || fail "two 2-rank SPD runs differ"
cmp spd2.jsonl again/spd2.jsonl || fail "two 2-rank SPD runs wrote different metrics"
[ "$(grep -c '"fired"' spd1.jsonl)" = 100 ] || fail "expected 100 steps with SPD's decisions in spd1.jsonl"
grep -qE '"fired":\{[^}]*:(0\.[0-9]*[1-9]|1)[,}]' spd1.jsonl || fail "SPD never fired: the comparison would be empty"
diff <(grep -o '"fired":{[^}]*}' spd2.jsonl) <(grep -o '"fired":{[^}]*}' spd1.jsonl) >/dev/null ||
  fail "SPD's decisions on 2 ranks differ from 1 process's"
echo "  $("$spdlab" inspect spd2.safetensors --diff spd1.safetensors | tail -n1)"

echo "tests/dist: 3. eval and compare on 2 ranks"
"${mpi[@]}" "$spdlab" eval --model spd1.safetensors --domain clean,noise,rotate >eval2.txt 2>/dev/null
"$spdlab" eval --model spd1.safetensors --domain clean,noise,rotate >eval1.txt 2>/dev/null
cmp eval2.txt eval1.txt || fail "eval on 2 ranks printed other accuracies than 1 process"
cmp_args=(--init "$init" --optims adamw,spd --range 50000:50960 --epochs 1 --eval-images 300)
"${mpi[@]}" "$spdlab" compare "${cmp_args[@]}" --out cmp2 >/dev/null 2>cmp2.log
"$spdlab" compare "${cmp_args[@]}" --threads 1 --out cmp1 >/dev/null 2>&1
SPDLAB_NUM_THREADS=1 "${mpi[@]}" -x SPDLAB_NUM_THREADS "$spdlab" compare "${cmp_args[@]}" --split runs --out cmp3 \
  >/dev/null 2>cmp3.log
for f in results.json results.csv report.md id_vs_ood.svg run.json; do
  [ -s "cmp2/$f" ] || fail "compare on 2 ranks wrote no $f"
done
[ "$(ls cmp2)" = "$(ls cmp1)" ] || fail "compare on 2 ranks wrote other files than 1 process: $(ls cmp2)"
pre() { python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["pretrained"], sort_keys=True))' "$1"; }
[ "$(pre cmp2/results.json)" = "$(pre cmp1/results.json)" ] || fail "compare scored the pre-trained model differently"
# SPD's per-tensor counts (steps taken, steps fired) of the study's SPD run: the same on 2 ranks as in 1 process.
counts() {
  python3 -c 'import json,sys; print("\n".join("%s %d %d" % (s["name"], s["steps"], s["fired"]) for s in json.load(open(sys.argv[1]))["spd"]))' "$1"
}
[ "$(counts cmp1/spd-seed0.json | awk '$3 > 0' | wc -l)" -gt 0 ] || fail "SPD never fired in the study: nothing to compare"
[ "$(counts cmp2/spd-seed0.json)" = "$(counts cmp1/spd-seed0.json)" ] || fail "SPD's per-tensor firing counts differ"
# --split runs: each rank trains whole runs as one process does (one thread each, like cmp1): the same bytes.
for f in results.json results.csv report.md; do
  cmp "cmp3/$f" "cmp1/$f" || fail "compare --split runs on 2 ranks wrote another $f than 1 process"
done
[ "$(ls cmp3)" = "$(ls cmp1)" ] || fail "compare --split runs wrote other files than 1 process: $(ls cmp3)"

echo "tests/dist: 4. SIGKILL of rank 1, then --resume"
"${mpi[@]}" "$spdlab" finetune "${ft[@]}" --optim spd --checkpoint-every 10 --out k.safetensors --metrics k.jsonl \
  >/dev/null 2>kill.log &
job=$!
wait_for_file k.safetensors.run/state.safetensors
r1=$(rank_pid 1)
[ -n "$r1" ] || fail "rank 1 of the job was not found"
t0=$(now)
kill -9 "$r1"
status=0
wait "$job" || status=$?
t=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
echo "  the job ended $t s after the kill (status $status)"
[ "$status" != 0 ] || fail "the job reported success after a rank was killed"
awk -v t="$t" 'BEGIN { exit !(t < 60) }' || fail "the job took $t s to end after a rank was killed"
grep -q "process rank 1 .*exited on signal 9" kill.log || fail "mpirun did not name the dead rank (kill.log)"
grep -qE "spdlab rank 0/2: signal 15 while waiting|stopping after this step" kill.log ||
  fail "rank 0 said nothing (kill.log)"
[ ! -e k.safetensors ] || fail "a killed job wrote its final checkpoint"
"${mpi[@]}" "$spdlab" finetune --resume k.safetensors.run 2>resume.log >/dev/null
grep -q "resuming at step" resume.log || fail "--resume did not resume (resume.log)"
same_tensors k.safetensors spd2.safetensors || fail "the resumed run ended with other parameters than the uninterrupted one"
cmp k.jsonl spd2.jsonl || fail "the resumed run's metrics differ from the uninterrupted one's"
[ ! -e k.safetensors.run ] || fail "the run directory was left behind"

echo "tests/dist: 5. a hung rank (SIGSTOP) with SPDLAB_DIST_TIMEOUT=5"
SPDLAB_DIST_TIMEOUT=5 "${mpi[@]}" -x SPDLAB_DIST_TIMEOUT "$spdlab" finetune "${ft[@]}" --optim spd --checkpoint-every 10 \
  --out h.safetensors >/dev/null 2>hang.log &
job=$!
wait_for_file h.safetensors.run/state.safetensors
r1=$(rank_pid 1)
[ -n "$r1" ] || fail "rank 1 of the job was not found"
t0=$(now)
kill -STOP "$r1"
status=0
wait "$job" || status=$?
kill -9 "$r1" 2>/dev/null || true
t=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
echo "  the job ended $t s after rank 1 stopped (status $status)"
[ "$status" != 0 ] || fail "the job reported success with a hung rank"
awk -v t="$t" 'BEGIN { exit !(t < 60) }' || fail "the job took $t s to end with a hung rank"
grep -q "spdlab rank 0/2: error: .* did not complete in" hang.log || fail "rank 0 did not report the hung rank (hang.log)"

echo "tests/dist: 6. refusals"
"${mpi[@]}" "$spdlab" inspect "$init" >/dev/null 2>refuse.log && fail "inspect ran on 2 ranks"
grep -q "'inspect' runs in one process; start it without mpirun" refuse.log || fail "no reason given (refuse.log)"
"${mpi[@]}" "$spdlab" finetune "${ft[@]}" --batch-size 1 --out b.safetensors >/dev/null 2>batch.log &&
  fail "a batch of 1 ran on 2 ranks"
grep -q "a global batch of 1 cannot be split over 2 ranks; raise --batch-size to at least 2" batch.log ||
  fail "no reason given (batch.log)"
[ ! -e b.safetensors ] && [ ! -e b.safetensors.run ] || fail "a refused run left files"
echo "tests/dist: 7. NCCL on 2 GPUs"
cuda_spdlab=$(realpath -m "${SPDLAB_CUDA:-$root/build-cuda/spdlab}")
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ ! -x "$cuda_spdlab" ]; then
  echo "  skipped: no CUDA build at $cuda_spdlab (SPDLAB_CUDA names one)"
elif [ "$gpus" -lt 2 ]; then
  echo "  skipped: NCCL needs 2 GPUs, this machine has ${gpus:-0}"
else
  "${mpi[@]}" "$cuda_spdlab" finetune "${ft[@]}" --optim sgd --device cuda --out g2.safetensors 2>g2.log
  "$cuda_spdlab" finetune "${ft[@]}" --optim sgd --device cuda --out g1.safetensors 2>/dev/null
  grep -q "data parallel over 2 ranks (nccl)" g2.log || fail "the 2-GPU run did not use NCCL (g2.log)"
  line=$("$spdlab" inspect g2.safetensors --diff g1.safetensors | tail -n1)
  echo "  $line"
  rel=$(sed -E 's/.*largest relative difference ([0-9.e+-]+).*/\1/' <<<"$line")
  awk -v r="$rel" 'BEGIN { exit !(r < 1e-5) }' || fail "NCCL: 2 GPUs differ from 1 by $rel (> 1e-5)"
fi
echo "tests/dist: passed"
