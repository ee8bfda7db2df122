#!/usr/bin/env bash
# Installs what the tests need, builds, and runs every test through CTest. Usage: bash tests/run.sh
# python3-torch lets one test generate vit_tiny_patch16_224 weights; all other PyTorch fixtures are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash examples/setup.sh python3-torch
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure
# The CPU kernels exist twice (AVX2+FMA, chosen on CPUs that have it, and the baseline); run every suite on
# the baseline set too, so both stay correct whichever one this machine picks by default.
echo "tests/run.sh: again with the baseline CPU kernels (SPDLAB_CPU_ISA=base)"
SPDLAB_CPU_ISA=base ctest --test-dir build --output-on-failure
