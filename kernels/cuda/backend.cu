// The CUDA backend's core: device setup, the caching allocator, host copies, cuBLAS products and the
// dispatch hooks kernels::get uses. cuBLAS is column-major: a row-major product C = op(A) op(B) is computed
// as the column-major C^T = op(B)^T op(A)^T, i.e. cuBLAS gets (B, A) and (N, M) swapped.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "kernels/cuda/backend.h"
#include "kernels/cuda/dispatch.h"

namespace spdlab::cuda {

LaunchRecord& last_launch() {
  thread_local LaunchRecord r;
  return r;
}

void fail_cuda(cudaError_t e, const char* call, const std::string& context) {
  const LaunchRecord& k = last_launch();
  std::string earlier;
  if (k.name && std::string(call) != "cudaGetLastError()" && e != cudaErrorMemoryAllocation)
    earlier = detail::cat(" (the last kernel queued before it: ", k.name, " with grid (", k.grid.x, ",", k.grid.y, ",",
                          k.grid.z, ") and block (", k.block.x, ",", k.block.y, ",", k.block.z,
                          "); rerun with CUDA_LAUNCH_BLOCKING=1 to stop at the kernel that failed)");
  SPDLAB_FAIL("CUDA: ", context, ": ", call, " failed: ", cudaGetErrorString(e), earlier);
}
void fail_cublas(cublasStatus_t s, const char* call, const std::string& context) {
  SPDLAB_FAIL("cuBLAS: ", context, ": ", call, " failed: ", cublasGetStatusString(s));
}

StridedArgs make_strided(const char* op, const int64_t* shape, int ndim,
                         std::initializer_list<const int64_t*> strides) {
  SPDLAB_CHECK(ndim <= kMaxDims, op, ": the CUDA kernels take at most ", kMaxDims, " dims, got ", ndim);
  StridedArgs a;
  a.ndim = ndim;
  for (int d = 0; d < ndim; ++d) {
    a.shape[d] = shape[d];
    a.numel *= shape[d];
  }
  int k = 0;
  for (const int64_t* st : strides) {
    for (int d = 0; d < ndim; ++d) a.stride[k][d] = st[d];
    ++k;
  }
  return a;
}

unsigned grid_for(const CudaKernels& k, int64_t n, int threads) {
  int64_t want = (n + threads - 1) / threads;
  int64_t cap = int64_t(k.sm_count()) * 8;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(want, cap)));
}

// ---- allocator ----

namespace {
thread_local cudaError_t last_malloc_error = cudaSuccess;
void* device_malloc(size_t n) {
  void* p = nullptr;
  last_malloc_error = cudaMalloc(&p, n);
  if (last_malloc_error == cudaSuccess) return p;
  (void)cudaGetLastError();
  return nullptr;
}
void device_free(void* p) { cudaFree(p); }
}  // namespace

// 512-byte size classes, as CUDA's own allocations; every freed block is kept (PyTorch's default too).
void* CudaKernels::allocate(size_t nbytes) {
  void* p = alloc_.try_allocate(nbytes);
  if (p) return p;
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  SPDLAB_FAIL("CUDA: out of memory on cuda:", index_, " allocating ", nbytes, " bytes (", alloc_.stats().current,
              " held by tensors, ", free_b, " of ", total_b, " free on the device): ",
              cudaGetErrorString(last_malloc_error));
}

// ---- the backend object ----

CudaKernels::CudaKernels(int index)
    : index_(index), alloc_({&device_malloc, &device_free, 512, 512, SIZE_MAX}) {
  SPDLAB_CUDA_CHECK(cudaSetDevice(index), "selecting cuda:", index);
  cudaDeviceProp prop;
  SPDLAB_CUDA_CHECK(cudaGetDeviceProperties(&prop, index), "reading the properties of cuda:", index);
  name_ = prop.name;
  sm_count_ = std::max(1, prop.multiProcessorCount);
  SPDLAB_CUDA_CHECK(cudaStreamCreate(&stream_), "creating the stream of cuda:", index);
  SPDLAB_CUBLAS_CHECK(cublasCreate(&blas_), "creating the cuBLAS handle of cuda:", index);
  SPDLAB_CUBLAS_CHECK(cublasSetStream(blas_, stream_), "binding cuBLAS to the stream of cuda:", index);
  SPDLAB_CUBLAS_CHECK(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH), "cuBLAS math mode on cuda:", index);
}

CudaKernels::~CudaKernels() = default;  // lives until exit: tensors may be freed during static teardown

void CudaKernels::activate() {
  thread_local int active = -1;
  if (active != index_) {
    SPDLAB_CUDA_CHECK(cudaSetDevice(index_), "selecting cuda:", index_);
    active = index_;
  }
  bool want = kernels::allow_tf32();
  if (want != tf32_) {
    SPDLAB_CUBLAS_CHECK(cublasSetMathMode(blas_, want ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
                        "switching TF32 ", want ? "on" : "off", " on cuda:", index_);
    tf32_ = want;
  }
}

void* CudaKernels::scratch(size_t bytes) {
  if (bytes > scratch_bytes_) {
    if (scratch_) deallocate(scratch_, scratch_bytes_);
    scratch_bytes_ = std::max(bytes, size_t(64) << 10);
    scratch_ = allocate(scratch_bytes_);
  }
  return scratch_;
}

void CudaKernels::copy_from_host(void* dst, const void* host_src, size_t nbytes) {
  if (nbytes == 0) return;
  SPDLAB_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, nbytes, cudaMemcpyHostToDevice, stream_), "copying ", nbytes,
                    " bytes from the host to cuda:", index_);
  SPDLAB_CUDA_CHECK(cudaStreamSynchronize(stream_), "copying ", nbytes, " bytes to cuda:", index_);
}

void CudaKernels::copy_to_host(void* host_dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  SPDLAB_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, nbytes, cudaMemcpyDeviceToHost, stream_), "copying ", nbytes,
                    " bytes from cuda:", index_, " to the host");
  SPDLAB_CUDA_CHECK(cudaStreamSynchronize(stream_), "copying ", nbytes, " bytes from cuda:", index_,
                    " (an earlier kernel may have failed)");
}

void CudaKernels::synchronize() {
  if (spd_pending_.empty()) {
    SPDLAB_CUDA_CHECK(cudaStreamSynchronize(stream_), "waiting for the work queued on cuda:", index_);
    return;
  }
  // SPD's sums of the passes queued since the last call, in one copy (which waits for the stream).
  std::vector<double> host(spd_pending_.size() * 3);
  std::vector<kernels::SpdSums*> pending;
  pending.swap(spd_pending_);  // cleared even if the copy fails: the pointers must not outlive this call
  copy_to_host(host.data(), spd_totals_, host.size() * sizeof(double));
  for (size_t i = 0; i < pending.size(); ++i) *pending[i] = {host[3 * i], host[3 * i + 1], host[3 * i + 2]};
}

// ---- products ----

namespace {
int to_int(int64_t v, const char* what) {
  SPDLAB_CHECK(v >= 0 && v <= INT32_MAX, "gemm: ", what, " = ", v, " does not fit cuBLAS's 32-bit int arguments");
  return static_cast<int>(v);
}
}  // namespace

void CudaKernels::gemm_batched(DType dt, int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                               double alpha, const void* A, int64_t lda, int64_t sa, const void* B, int64_t ldb,
                               int64_t sb, double beta, void* C, int64_t ldc, int64_t sc) {
  if (M == 0 || N == 0 || batch == 0) return;
  // Row-major C[M,N] = op(A) op(B) is column-major C^T[N,M] = op(B)^T op(A)^T: swap the operands.
  cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  int n = to_int(N, "N"), m = to_int(M, "M"), k = to_int(K, "K"), nb = to_int(batch, "batch");
  int la = to_int(lda, "lda"), lb = to_int(ldb, "ldb"), lc = to_int(ldc, "ldc");
  auto ctx = [&] {
    return detail::cat("gemm ", dt, " [", M, ",", K, "]x[", K, ",", N, "]", ta ? " A^T" : "", tb ? " B^T" : "",
                       batch > 1 ? " batch " + std::to_string(batch) : std::string());
  };
  if (dt == DType::f32) {
    float a = static_cast<float>(alpha), b = static_cast<float>(beta);
    if (batch == 1)
      SPDLAB_CUBLAS_CHECK(cublasSgemm(blas_, opb, opa, n, m, k, &a, static_cast<const float*>(B), lb,
                                      static_cast<const float*>(A), la, &b, static_cast<float*>(C), lc),
                          ctx());
    else
      SPDLAB_CUBLAS_CHECK(cublasSgemmStridedBatched(blas_, opb, opa, n, m, k, &a, static_cast<const float*>(B), lb, sb,
                                                    static_cast<const float*>(A), la, sa, &b, static_cast<float*>(C),
                                                    lc, sc, nb),
                          ctx());
  } else {
    SPDLAB_CHECK(dt == DType::f64, "gemm: expected f32 or f64, got ", dt);
    if (batch == 1)
      SPDLAB_CUBLAS_CHECK(cublasDgemm(blas_, opb, opa, n, m, k, &alpha, static_cast<const double*>(B), lb,
                                      static_cast<const double*>(A), la, &beta, static_cast<double*>(C), lc),
                          ctx());
    else
      SPDLAB_CUBLAS_CHECK(cublasDgemmStridedBatched(blas_, opb, opa, n, m, k, &alpha, static_cast<const double*>(B), lb,
                                                    sb, static_cast<const double*>(A), la, sa, &beta,
                                                    static_cast<double*>(C), lc, sc, nb),
                          ctx());
  }
}

void CudaKernels::gemm(DType dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const void* A,
                       int64_t lda, const void* B, int64_t ldb, double beta, void* C, int64_t ldc) {
  gemm_batched(dt, 1, ta, tb, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0);
}

// One stream runs the group's products in order; each already fills the GPU at the sizes that matter.
void CudaKernels::gemm_group(DType dt, const Gemm* calls, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const Gemm& g = calls[i];
    gemm(dt, g.trans_a, g.trans_b, g.M, g.N, g.K, g.alpha, g.A, g.lda, g.B, g.ldb, g.beta, g.C, g.ldc);
  }
}

// ---- dispatch hooks (kernels/dispatch.cpp) ----

namespace {
std::string& unavailable() {
  static std::string s;
  return s;
}
int probe_devices() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    unavailable() = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(e);
    return 0;
  }
  if (n == 0) unavailable() = "no CUDA device is present";
  return n;
}
}  // namespace

int device_count() {
  static int n = probe_devices();
  return n;
}
std::string unavailable_reason() {
  device_count();
  return unavailable();
}

kernels::Kernels& backend(int index) {
  int n = device_count();
  SPDLAB_CHECK(n > 0, "cuda:", index, " was asked for, but ", unavailable(),
               " (this build has CUDA; run on a machine with a GPU, or use --device cpu)");
  SPDLAB_CHECK(index >= 0 && index < n, "cuda:", index, " was asked for, but this machine has ", n, " CUDA device",
               n == 1 ? "" : "s", " (cuda:0", n > 1 ? " to cuda:" + std::to_string(n - 1) : std::string(), ")");
  static std::mutex mu;
  static std::vector<CudaKernels*> made;  // never destroyed: tensors may outlive static teardown
  std::lock_guard<std::mutex> lock(mu);
  if (made.size() < size_t(n)) made.resize(n, nullptr);
  if (!made[index]) made[index] = new CudaKernels(index);
  CudaKernels* k = made[index];
  k->activate();
  return *k;
}

}  // namespace spdlab::cuda
