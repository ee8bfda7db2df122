#!/usr/bin/env bash
# Builds what tests/cuda/device_check.sh runs on a GPU machine and packs it into one folder to carry there:
# the test binary and cuda_bench built by nvcc (build-cuda: sm_80 and sm_90), stripped, plus
# every shared library they need that is neither CUDA's (the GPU machine has the toolkit) nor glibc's
# (ldd decides; OpenBLAS, libgfortran, libgomp, zlib and libstdc++ travel).
#
#   bash tests/cuda/pack.sh [PACK_DIR]        default build-gpu-pack (ignored by git)
# The device tool carries at most 64 MiB with the tree, so the libraries travel as lib.tar.xz (44 MiB of them,
# OpenBLAS's 35, compress to about 7; device_check.sh unpacks them), and this fails if the pack passes 56 MiB.
# Then, on the GPU machine, in a copy of this tree with PACK_DIR beside it: bash tests/cuda/device_check.sh PACK_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
pack=${1:-build-gpu-pack}
build=build-cuda
cmake -S . -B "$build" -DSPDLAB_CUDA=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target spdlab_tests cuda_bench
rm -rf "$pack"
mkdir -p "$pack/lib"
for bin in spdlab_tests cuda_bench; do
  cp "$build/$bin" "$pack/"
  strip "$pack/$bin"
done
# Libraries by the path ldd resolves (following links, keeping the soname as the file name).
ldd "$build/spdlab_tests" "$build/cuda_bench" | awk '/=> \// {print $1, $3}' | sort -u |
  while read -r soname path; do
    case "$path" in
      /usr/local/cuda*) continue ;;                                      # on the GPU machine already
      */libc.so.*|*/libm.so.*|*/libdl.so.*|*/libpthread.so.*|*/librt.so.*|*/ld-linux*) continue ;;  # glibc
    esac
    cp -L "$path" "$pack/lib/$soname"
  done
ls -l "$pack" "$pack/lib"
tar -C "$pack" -cf - lib | xz -T"$(nproc)" -6 >"$pack/lib.tar.xz"
rm -rf "$pack/lib"
mib=$(du -sm "$pack" | cut -f1)
echo "pack.sh: $mib MiB in $pack"
[ "$mib" -le 56 ] || { echo "pack.sh: $pack is $mib MiB, over the 56 MiB the device tool can carry beside the tree" >&2; exit 1; }
