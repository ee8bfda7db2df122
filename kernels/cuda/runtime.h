// What every .cu file of the CUDA backend includes: the CUDA runtime and cuBLAS (or, with
// SPDLAB_CUDA_EMULATE, the CPU emulation of both in emu/cuda_emu.h), checked calls, the one launch helper
// and dynamic shared memory. Kernels are written once against this header and build both ways.
#pragma once
#include <cstdint>
#include <string>

#if SPDLAB_CUDA_EMULATE
#include "kernels/cuda/emu/cuda_emu.h"
#else
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif

#include "core/check.h"

namespace spdlab::cuda {

// Turns a failed CUDA or cuBLAS call into spdlab::Error naming the call, the op it served and CUDA's words.
[[noreturn]] void fail_cuda(cudaError_t e, const char* call, const std::string& context);
[[noreturn]] void fail_cublas(cublasStatus_t s, const char* call, const std::string& context);

// The last kernel this thread queued. A kernel that fails on a GPU is reported by the next call that waits for
// it, so that error names this one too (and CUDA_LAUNCH_BLOCKING=1 makes the failing launch itself report).
struct LaunchRecord {
  const char* name = nullptr;
  dim3 grid, block;
};
LaunchRecord& last_launch();

}  // namespace spdlab::cuda

// SPDLAB_CUDA_CHECK(cudaMalloc(&p, n), "allocating ", n, " bytes")
#define SPDLAB_CUDA_CHECK(call, ...)                                                                   \
  do {                                                                                                 \
    cudaError_t spdlab_err_ = (call);                                                                  \
    if (spdlab_err_ != cudaSuccess) ::spdlab::cuda::fail_cuda(spdlab_err_, #call, ::spdlab::detail::cat(__VA_ARGS__)); \
  } while (0)
#define SPDLAB_CUBLAS_CHECK(call, ...)                                                                   \
  do {                                                                                                   \
    cublasStatus_t spdlab_st_ = (call);                                                                  \
    if (spdlab_st_ != CUBLAS_STATUS_SUCCESS)                                                             \
      ::spdlab::cuda::fail_cublas(spdlab_st_, #call, ::spdlab::detail::cat(__VA_ARGS__));                \
  } while (0)

namespace spdlab::cuda {

constexpr size_t kDefaultSharedBytes = 48 * 1024;  // more needs an opt-in per kernel (done in launch)

// The one way a kernel is started: grid, block, dynamic shared bytes and stream, then the kernel's arguments.
// On a GPU this is kernel<<<...>>> followed by a checked cudaGetLastError(); under the emulation the grid runs
// on the CPU. An empty grid launches nothing. `name` appears in every error.
template <typename... KArgs, typename... Args>
void launch(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t shared_bytes,
            cudaStream_t stream, Args... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
  last_launch() = {name, grid, block};
#if SPDLAB_CUDA_EMULATE
  (void)stream;
  emu::run_grid(name, grid, block, shared_bytes, [&] { kernel(static_cast<KArgs>(args)...); });
#else
  if (shared_bytes > kDefaultSharedBytes)
    SPDLAB_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(shared_bytes)),
                      name, ": asking for ", shared_bytes, " bytes of shared memory");
  kernel<<<grid, block, shared_bytes, stream>>>(static_cast<KArgs>(args)...);
  SPDLAB_CUDA_CHECK(cudaGetLastError(), "launching ", name, " with grid (", grid.x, ",", grid.y, ",", grid.z,
                    ") and block (", block.x, ",", block.y, ",", block.z, "), ", shared_bytes, " shared bytes");
#endif
}

#define SPDLAB_LAUNCH(kernel, grid, block, shared, stream, ...) \
  ::spdlab::cuda::launch(#kernel, kernel, grid, block, shared, stream, __VA_ARGS__)

// The block's dynamic shared memory, carved by hand (no static __shared__ arrays: see the README).
template <typename T>
__device__ __forceinline__ T* shared_mem() {
#if SPDLAB_CUDA_EMULATE
  return reinterpret_cast<T*>(emu::dynamic_shared());
#else
  extern __shared__ __align__(16) unsigned char spdlab_dynamic_shared[];
  return reinterpret_cast<T*>(spdlab_dynamic_shared);
#endif
}

inline unsigned blocks_for(int64_t n, int threads, int64_t cap = 65535) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > cap ? cap : b));
}

}  // namespace spdlab::cuda
