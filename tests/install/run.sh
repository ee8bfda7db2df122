#!/usr/bin/env bash
# The library as a user links it, from outside the tree (tests/install/consumer/main.cpp), three ways:
#   1. cmake --install of build/ into a scratch prefix, then find_package(spdlab) and target spdlab::spdlab;
#   2. the same prefix through pkg-config (spdlab.pc);
#   3. add_subdirectory of the source tree, which must build the library alone: no tests, tools or benchmarks.
# Usage: bash tests/install/run.sh   (after build/ is built; needs pkg-config)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
bash examples/setup.sh pkg-config >/dev/null
work=$(mktemp -d /tmp/spdlab_install_XXXXXX)
trap 'rm -rf "$work"' EXIT
cmake --install build --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/include/spdlab/core/tensor.h"
test -f "$work/prefix/lib/libspdlab.a"

echo "tests/install: find_package(spdlab)"
cmake -S tests/install/consumer -B "$work/fp" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/fp" >/dev/null
"$work/fp/consumer" | tee "$work/fp.out"

echo "tests/install: pkg-config"
g++ tests/install/consumer/main.cpp -o "$work/pc_consumer" \
  $(PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig" pkg-config --cflags --libs spdlab)
"$work/pc_consumer" | tee "$work/pc.out"

echo "tests/install: add_subdirectory (the library alone)"
cmake -S tests/install/consumer -B "$work/sub" -DSPDLAB_SOURCE_DIR="$root" >/dev/null
targets=$(cmake --build "$work/sub" --target help)
if grep -E "spdlab_tests|spdlab_cli|_bench|ex_" <<<"$targets"; then
  echo "tests/install: add_subdirectory defined targets beyond the library (above)" >&2
  exit 1
fi
cmake --build "$work/sub" -j"$(nproc)" >/dev/null
"$work/sub/consumer" | tee "$work/sub.out"

# The three programs are the same code on the same library: the same output.
cmp "$work/fp.out" "$work/pc.out"
cmp "$work/fp.out" "$work/sub.out"
echo "tests/install: ok"
