#!/usr/bin/env bash
# The main job from a fresh Debian machine: install, build, and run the robust fine-tuning study with the
# shipped foundation ViT.
#
#   bash examples/run_study.sh [--quick | --full] [--tuned] [more spdlab compare flags]
#
# --tuned runs the study as the paper does: the baselines (AdamW, SPD, L2-SP, MARS-SP, FTP, LLRD, LP, LP-FT,
# BitFit, and LoRA with AdamW and with SPD), each hyperparameter chosen on a validation split held out of the
# training images, and WiSE-FT curves for AdamW and SPD. --all-domains (with or without --tuned) repeats the study
# with every domain as the fine-tuning domain and writes the matrix (all_domains.md). Results go to
# runs/study-quick (or -full, with -tuned appended for --tuned): report.md, results.json/.csv, plots, checkpoints.
# The same command again continues a stopped study.
set -euo pipefail
cd "$(dirname "$0")/.."
bash examples/setup.sh
cmake --build build -j"$(nproc)" --target spdlab_cli
mode=--quick
suffix=
args=()
for a in "$@"; do
  case "$a" in
    --full) mode=--full ;;
    --quick) mode=--quick ;;
    --tuned)
      suffix=-tuned
      args+=(--tune --optims adamw,spd,l2sp,mars_sp,ftp,llrd,lp,lpft,bitfit,lora,lora_spd --wise-ft 0.25,0.5,0.75
             --wise-ft-methods adamw,spd) ;;
    *) args+=("$a") ;;
  esac
done
out=runs/study-${mode#--}$suffix
./build/spdlab compare "$mode" "${args[@]}" --out "$out"
echo "study: report in $out/report.md" >&2
