// Helpers shared by the CUDA backend's .cu files: block size, dtype dispatch and block-wide reductions in a
// fixed order (warp shuffles, then the warps' partials in order), so results do not depend on timing.
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

struct Add {
  template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
  template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return b > a ? b : a; }
};

// Reduces over a warp with `op`; every lane gets the result. The xor butterfly combines in the same order on
// every run.
template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Reduces over a 1-D block whose size is a multiple of 32 (at most 1024) with `op`, whose identity is `id`;
// every thread gets the result. `scratch` is 32 values of shared memory; it may be reused once this returns.
template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, T* scratch, Op op, T id) {
  int lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  v = warp_reduce(v, op);
  if (lane == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  T r = warp_reduce(lane < nwarps ? scratch[lane] : id, op);
  __syncthreads();
  return r;
}
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  return block_reduce(v, scratch, Add{}, T(0));
}
template <typename T>
__device__ __forceinline__ T block_max(T v, T* scratch) {
  return block_reduce(v, scratch, Max{}, T(-INFINITY));
}

}  // namespace spdlab::cuda
