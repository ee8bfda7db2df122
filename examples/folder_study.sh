#!/usr/bin/env bash
# The study on image folders, the way a user runs it on their own data: Fashion-MNIST is written out as three
# domains of image folders (edge for training and its in-distribution test; clean as JPEG and rotate as
# out-of-distribution tests), then `spdlab compare` fine-tunes the shipped foundation ViT on the training folder
# with each optimizer and tests it on every folder. Replace the folders with yours (DIR/<class>/<image>) and the
# checkpoint with yours (--init) to run the same study on your data.
#
#   bash examples/folder_study.sh [WORK_DIR] [more spdlab compare flags]      (WORK_DIR default: runs/folders)
#
# Takes about as long as the built-in quick study (10,000 training images, 2 epochs, 4 optimizers, 2,000 test
# images per domain); --augment none, as that study has no augmentation, so the numbers can be set side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
bash examples/setup.sh
cmake --build build -j"$(nproc)" --target spdlab_cli
work=${1:-runs/folders}
shift || true
spdlab=./build/spdlab
mkdir -p "$work"
export_once() {  # domain split range format dir
  [ -d "$work/$5" ] || "$spdlab" export --domain "$1" --split "$2" --range "$3" --format "$4" --out "$work/$5"
}
export_once edge train 50000:60000 png train
export_once edge test 0:2000 png edge
export_once clean test 0:2000 jpg clean
export_once rotate test 0:2000 png rotate
"$spdlab" compare --init models/pretrained/fmnist_foundation.safetensors \
  --train "folder:$work/train" \
  --eval "edge=folder:$work/edge,clean=folder:$work/clean,rotate=folder:$work/rotate" \
  --augment none --out "$work/study" "$@"
echo "folder study: report in $work/study/report.md" >&2
