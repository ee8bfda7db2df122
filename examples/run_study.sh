#!/usr/bin/env bash
# The main job from a fresh Debian machine: install, build, and run the robust fine-tuning study with the
# shipped foundation ViT. Usage: bash examples/run_study.sh [--quick | --full] [more spdlab compare flags]
# Results go to runs/study-quick (or runs/study-full): report.md, results.json/.csv, plots, checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
bash examples/setup.sh
cmake --build build -j"$(nproc)" --target spdlab_cli
mode=--quick
for a in "$@"; do [ "$a" = --full ] && mode=--full; done
out=runs/study-${mode#--}
./build/spdlab compare "${@:---quick}" --out "$out"
echo "study: report in $out/report.md" >&2
