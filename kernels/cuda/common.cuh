// Helpers shared by the CUDA backend's .cu files: block size, dtype dispatch and block-wide sums in a fixed
// order (warp shuffles, then the warps' partials in order), so results do not depend on timing.
#pragma once
#include "kernels/cuda/backend.h"

namespace spdlab::cuda {

constexpr int kThreads = 256;  // threads per block for elementwise grid-stride loops

// Calls f(float{}) or f(double{}) for a floating dtype; anything else is an error naming the op.
template <typename F>
void float_dispatch(DType dt, const char* op, F&& f) {
  if (dt == DType::f32) f(float{});
  else if (dt == DType::f64) f(double{});
  else SPDLAB_FAIL(op, ": expected a floating dtype (f32 or f64), got ", dt);
}

// Sum over a warp; every lane gets the total. The xor butterfly adds in the same order on every run.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) {
    T w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// Sum over a 1-D block whose size is a multiple of 32 (at most 1024); every thread gets the total.
// `scratch` is 32 values of shared memory; it may be reused once this returns.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = lane < nwarps ? scratch[lane] : T(0);
  total = warp_sum(total);
  __syncthreads();
  return total;
}
template <typename T>
__device__ __forceinline__ T block_max(T v, T* scratch) {
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  v = warp_max(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T m = lane < nwarps ? scratch[lane] : scratch[0];
  m = warp_max(m);
  __syncthreads();
  return m;
}

}  // namespace spdlab::cuda
