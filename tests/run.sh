#!/usr/bin/env bash
# Installs what the tests need, builds, and runs every test through CTest. Usage: bash tests/run.sh
# python3-torch lets one test generate vit_tiny_patch16_224 weights; all other PyTorch fixtures are committed.
# Then the CUDA backend: its kernels built with g++ against the CPU emulation (build-emu/) run the "cuda"
# suite, and, where nvcc is installed (/usr/local/cuda), the real nvcc build (build-cuda/) must compile and
# link and runs the same suite, which skips with the reason when no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash examples/setup.sh python3-torch xz-utils
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure
# The CPU kernels exist twice (AVX2+FMA, chosen on CPUs that have it, and the baseline); run every suite on
# the baseline set too, so both stay correct whichever one this machine picks by default.
echo "tests/run.sh: again with the baseline CPU kernels (SPDLAB_CPU_ISA=base)"
SPDLAB_CPU_ISA=base ctest --test-dir build --output-on-failure
# On a CPU with AVX-512 the default is avx512 (the AVX2 set with spdlab's SGEMM on its 512-bit tile): run every
# suite on the 256-bit tile as well.
if grep -qw avx512f /proc/cpuinfo; then
  echo "tests/run.sh: again with the AVX2 SGEMM tile (SPDLAB_CPU_ISA=avx2)"
  SPDLAB_CPU_ISA=avx2 ctest --test-dir build --output-on-failure
fi
echo "tests/run.sh: the tour's exercise checks fail on every unsolved stub (ctest ran them on the solutions)"
./build/exercises >build/exercises_stubs.log 2>&1 && { echo "tests/run.sh: ./build/exercises passed on the stubs" >&2; exit 1; }
grep -q "test cases: 18 | 0 passed | 18 failed" build/exercises_stubs.log
echo "tests/run.sh: the lab programs (examples/ex_*.cpp) at small sizes"
./build/ex_autograd_mlp 2000 1
./build/ex_custom_op
./build/ex_spd_toy 50 build/spd_toy.svg
grep -q "<polyline" build/spd_toy.svg
./build/ex_finetune_vit 10
./build/ex_gpu 5
echo "tests/run.sh: the library linked from outside the tree (find_package, pkg-config, add_subdirectory)"
bash tests/install/run.sh
echo "tests/run.sh: bench/loader_bench on the small config (a check that it runs, not a measurement)"
./build/loader_bench --config vit-micro --batch 8 --steps 2 --images 32 --src-size 64 | grep -q '"bench":"loader"'
# SIGKILLs at random moments of finetune and compare, each followed by --resume: the outputs must be
# byte-identical to uninterrupted runs, with nothing stray (the full-size version: SIZE=quick, 10 kills each).
echo "tests/run.sh: kill and resume (tests/reliability/kill_resume.sh)"
bash tests/reliability/kill_resume.sh 4
# Data parallel: 2 ranks under mpirun against 1 process, determinism, distributed eval and compare, a killed
# rank and --resume, a hung rank, refusals.
echo "tests/run.sh: data parallel on 2 ranks (tests/dist/run.sh)"
bash tests/dist/run.sh

echo "tests/run.sh: the CUDA kernels on the CPU emulation (build-emu, -DSPDLAB_CUDA_EMULATE=ON)"
cmake -S . -B build-emu -DCMAKE_BUILD_TYPE=Release -DSPDLAB_CUDA_EMULATE=ON >/dev/null
cmake --build build-emu -j"$(nproc)" --target spdlab_tests cuda_bench ex_gpu
ctest --test-dir build-emu --output-on-failure -R '^cuda$'
# The GPU lab on the emulated GPU: the same program, now on cuda:0.
./build-emu/ex_gpu 3 | tee build-emu/ex_gpu.log
grep -q "device: cuda:0" build-emu/ex_gpu.log
# The GPU benchmark's three programs, on the small config: a check that they still run and agree on their
# line format (the emulation's times mean nothing).
echo "tests/run.sh: bench/cuda_bench, torch_cuda.py and cuda_table.py on the small config (not a measurement)"
./build-emu/cuda_bench --config vit-micro --iters 1 --warmup 0 >build-emu/cuda_bench_smoke.log
/usr/bin/python3 bench/torch_cuda.py --config vit-micro --device cpu --iters 1 --warmup 0 >>build-emu/cuda_bench_smoke.log
python3 bench/cuda_table.py build-emu/cuda_bench_smoke.log >build-emu/cuda_bench_smoke.md
grep -q "| vit-micro | train | fp32 | 4 | " build-emu/cuda_bench_smoke.md

nvcc=${CUDACXX:-/usr/local/cuda/bin/nvcc}
if [ -x "$nvcc" ]; then
  echo "tests/run.sh: the nvcc build (build-cuda, -DSPDLAB_CUDA=ON, sm_80 and sm_90)"
  cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DSPDLAB_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" >/dev/null
  cmake --build build-cuda -j"$(nproc)" --target spdlab_tests cuda_bench spdlab_cli 2>&1 | tee build-cuda/build.log
  if grep -E "kernels/cuda/.*warning|nvcc warning" build-cuda/build.log; then
    echo "tests/run.sh: nvcc warned about spdlab's CUDA code (above)" >&2
    exit 1
  fi
  ctest --test-dir build-cuda --output-on-failure -R '^cuda$'
  bash tests/cuda/pack.sh build-gpu-pack | tail -n1  # what tests/cuda/device_check.sh carries to a GPU
else
  echo "tests/run.sh: no nvcc at $nvcc: the nvcc build is not checked here"
fi
