#!/usr/bin/env bash
# Installs what the tests need, builds, and runs every test through CTest. Usage: bash tests/run.sh
# python3-torch lets one test generate vit_tiny_patch16_224 weights; all other PyTorch fixtures are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash examples/setup.sh python3-torch
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure
