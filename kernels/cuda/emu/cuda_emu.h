// The CUDA execution model on the CPU, for building spdlab's .cu sources with g++ (-DSPDLAB_CUDA_EMULATE=ON).
// It provides exactly what the kernels use and nothing more, so anything else is a compile error here:
// dim3 and the built-in indices, dynamic shared memory, __syncthreads, the full-warp shuffles, integer
// atomics, a short list of math intrinsics, the runtime calls of kernels/cuda/ and the cuBLAS products.
// The threads of a block run as fibers that switch at every barrier and shuffle, so a barrier that not every
// thread reaches, or a missing one, shows (see kernels/cuda/README.md). Not a performance model.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace spdlab::emu {

// The running thread of the running block (one launch at a time per host thread).
struct ThreadState {
  dim3 thread_idx, block_idx, block_dim, grid_dim;
  int lane, warp;
};
extern thread_local ThreadState* current;

void syncthreads(const char* file, int line);
void syncwarp();
// Swaps 8-byte words between the lanes of the calling warp: every lane offers `value`, and gets the word of
// lane `src_lane` (its own where src_lane is outside [0, width) of its segment, as CUDA does for shfl_down).
uint64_t warp_exchange(uint64_t value, int src_lane, bool src_valid);
unsigned warp_ballot(bool pred);
unsigned char* dynamic_shared();

// Runs a whole grid on the calling thread; throws spdlab::Error for launch-configuration errors, barrier
// divergence, shuffle misuse and shared-memory overruns, naming the kernel and block.
void run_grid(const char* kernel, dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body);

}  // namespace spdlab::emu

#define threadIdx (::spdlab::emu::current->thread_idx)
#define blockIdx (::spdlab::emu::current->block_idx)
#define blockDim (::spdlab::emu::current->block_dim)
#define gridDim (::spdlab::emu::current->grid_dim)
#define warpSize 32
#define __syncthreads() ::spdlab::emu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::spdlab::emu::syncwarp()

// ---- warp primitives (full mask only: spdlab's kernels shuffle whole warps) ----

namespace spdlab::emu {
void check_full_mask(unsigned mask, const char* what);
template <typename T>
T shfl_generic(unsigned mask, T v, int src_lane, bool valid, const char* what) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move at most 8 bytes");
  check_full_mask(mask, what);
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  uint64_t got = warp_exchange(bits, src_lane, valid);
  T out;
  std::memcpy(&out, &got, sizeof(T));
  return out;
}
}  // namespace spdlab::emu

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  int lane = ::spdlab::emu::current->lane;
  int src = (lane & ~(width - 1)) + (((lane & (width - 1)) ^ lane_mask) & (width - 1));
  return ::spdlab::emu::shfl_generic(mask, v, src, true, "__shfl_xor_sync");
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  int lane = ::spdlab::emu::current->lane;
  int in_seg = (lane & (width - 1)) + static_cast<int>(delta);
  return ::spdlab::emu::shfl_generic(mask, v, lane + static_cast<int>(delta), in_seg < width, "__shfl_down_sync");
}
template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  int lane = ::spdlab::emu::current->lane;
  int src = (lane & ~(width - 1)) + (src_lane & (width - 1));
  return ::spdlab::emu::shfl_generic(mask, v, src, true, "__shfl_sync");
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  ::spdlab::emu::check_full_mask(mask, "__ballot_sync");
  return ::spdlab::emu::warp_ballot(pred != 0);
}

// Integer atomics: the fibers of a launch never run at the same instant, so plain read-modify-write is atomic.
// There are deliberately no floating-point atomics: spdlab's sums reduce in a fixed order.
inline int atomicAdd(int* p, int v) { int old = *p; *p = old + v; return old; }
inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned old = *p; *p = old + v; return old; }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  unsigned long long old = *p;
  *p = old + v;
  return old;
}

// The math intrinsics the kernels may call (the CPU's libm rounds them; a GPU's fast versions differ in the
// last bits, which the GPU tests' tolerances allow).
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
using std::erf;  // the C library supplies expf, logf, sqrtf, erff, tanhf, fmaxf, fmaf, ...
using std::exp;
using std::fabs;
using std::fma;
using std::fmax;
using std::fmin;
using std::log;
using std::sqrt;
using std::tanh;

// ---- the runtime API subset ----

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchFailure = 719,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
struct CUstream_st;
struct CUevent_st;
using cudaStream_t = CUstream_st*;
using cudaEvent_t = CUevent_st*;
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  int maxThreadsPerBlock;
  int multiProcessorCount;
  int major, minor;
};

cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int* d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d);
cudaError_t cudaMalloc(void** p, size_t n);
cudaError_t cudaFree(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s = nullptr);
cudaError_t cudaMemset(void* p, int value, size_t n);
cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t s = nullptr);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t e);
template <typename F>
cudaError_t cudaFuncSetAttribute(F*, cudaFuncAttribute, int) { return cudaSuccess; }

namespace spdlab::emu {
// Whether [p, p + n) lies inside one live cudaMalloc block (the emulation's memcheck for copies and cuBLAS).
bool is_device_range(const void* p, size_t n);
}  // namespace spdlab::emu

// ---- cuBLAS subset, column-major exactly as the real library ----

struct cublasContext;
using cublasHandle_t = cublasContext*;
enum cublasStatus_t {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_EXECUTION_FAILED = 13,
};
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cublasMath_t { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3 };

cublasStatus_t cublasCreate(cublasHandle_t* h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode);
const char* cublasGetStatusString(cublasStatus_t s);
cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc);
cublasStatus_t cublasDgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const double* alpha, const double* A, int lda, const double* B, int ldb,
                           const double* beta, double* C, int ldc);
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float* alpha, const float* A, int lda, long long sa,
                                         const float* B, int ldb, long long sb, const float* beta, float* C, int ldc,
                                         long long sc, int batch);
cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const double* alpha, const double* A, int lda, long long sa,
                                         const double* B, int ldb, long long sb, const double* beta, double* C,
                                         int ldc, long long sc, int batch);
