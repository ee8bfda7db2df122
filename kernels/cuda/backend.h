// The CUDA backend: one CudaKernels per GPU implements the whole Kernels interface. Its methods live in the
// .cu file of their family (elementwise.cu, nn.cu, attention.cu, optim.cu; memory and products in
// backend.cu). Kernels run in order on the backend's one stream; a method returns once its work is queued,
// except where it hands a value back to the host (the SPD sums, copies to host memory).
#pragma once
#include <mutex>
#include <string>
#include <vector>

#include "core/caching_allocator.h"
#include "kernels/cuda/runtime.h"
#include "kernels/kernels.h"

namespace spdlab::cuda {

constexpr int kMaxDims = 8;  // strided kernels take shapes and strides by value, up to this many dims

// A strided operand for a kernel argument: shape and up to three operands' strides, by value.
struct StridedArgs {
  int ndim = 0;
  int64_t numel = 1;
  int64_t shape[kMaxDims] = {};
  int64_t stride[3][kMaxDims] = {};
};
StridedArgs make_strided(const char* op, const int64_t* shape, int ndim, std::initializer_list<const int64_t*> strides);

class CudaKernels final : public kernels::Kernels {
 public:
  explicit CudaKernels(int index);
  ~CudaKernels() override;

  Device device() const override { return Device::cuda_at(index_); }
  std::string name() const override { return name_; }
  // Makes this GPU the calling thread's current device (kernels::get does it on every dispatch).
  void activate();
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t blas() const { return blas_; }
  int sm_count() const { return sm_count_; }
  // A device buffer of at least `bytes` for a method's partial results, reused by later calls.
  void* scratch(size_t bytes);

  void* allocate(size_t nbytes) override;
  void deallocate(void* p, size_t nbytes) noexcept override { alloc_.deallocate(p, nbytes); }
  void copy_from_host(void* dst, const void* host_src, size_t nbytes) override;
  void copy_to_host(void* host_dst, const void* src, size_t nbytes) override;
  kernels::MemoryStats memory_stats() override { return alloc_.stats(); }
  void reset_peak_memory() override { alloc_.reset_peak(); }
  void synchronize() override;
  int64_t optimizer_piece() const override { return INT64_MAX; }

  // elementwise.cu
  void copy_strided(DType src_dt, kernels::Strided src, DType dst_dt, void* dst, const int64_t* dst_strides,
                    const int64_t* shape, int ndim) override;
  void fill(DType dt, void* dst, int64_t n, double value) override;
  void unary_fwd(kernels::Unary op, DType dt, const void* x, void* y, int64_t n, double alpha) override;
  void unary_bwd(kernels::Unary op, DType dt, const void* x, const void* y, const void* dy, void* dx, int64_t n,
                 double alpha) override;
  void binary_fwd(kernels::Binary op, DType dt, kernels::Strided a, kernels::Strided b, void* out,
                  const int64_t* shape, int ndim) override;
  void where_fwd(DType cond_dt, kernels::Strided cond, DType dt, kernels::Strided a, kernels::Strided b, void* out,
                 const int64_t* shape, int ndim) override;
  void reduce(kernels::Reduce op, DType dt, const void* x, void* y, int64_t outer, int64_t r, int64_t inner,
              int64_t* argmax) override;
  void max_bwd(DType dt, const void* dy, const int64_t* argmax, void* dx, int64_t outer, int64_t r,
               int64_t inner) override;
  void fill_rows(DType dt, void* y, const void* bias, int64_t rows, int64_t cols) override;
  void unfold_patches_fwd(DType dt, const void* x, void* y, int64_t B, int64_t C, int64_t H, int64_t W,
                          int64_t P) override;
  void unfold_patches_bwd(DType dt, const void* dy, void* dx, int64_t B, int64_t C, int64_t H, int64_t W,
                          int64_t P) override;
  void index_select_fwd(DType dt, const void* x, const int64_t* index, void* y, int64_t outer, int64_t n, int64_t m,
                         int64_t inner) override;
  void index_select_bwd(DType dt, const void* dy, const int64_t* index, void* dx, int64_t outer, int64_t n,
                        int64_t m, int64_t inner) override;
  void gather_fwd(DType dt, const void* x, const int64_t* index, void* y, int64_t outer, int64_t n, int64_t m,
                  int64_t inner) override;
  void gather_bwd(DType dt, const void* dy, const int64_t* index, void* dx, int64_t outer, int64_t n, int64_t m,
                  int64_t inner) override;
  void dropout_mask(DType dt, void* mask, int64_t n, double p, uint64_t seed, uint64_t offset) override;

  // backend.cu: products through cuBLAS
  void gemm(DType dt, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const void* A,
            int64_t lda, const void* B, int64_t ldb, double beta, void* C, int64_t ldc) override;
  void gemm_batched(DType dt, int64_t batch, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                    double alpha, const void* A, int64_t lda, int64_t stride_a, const void* B, int64_t ldb,
                    int64_t stride_b, double beta, void* C, int64_t ldc, int64_t stride_c) override;
  void gemm_group(DType dt, const Gemm* calls, int64_t n) override;

  // nn.cu
  void softmax_fwd(DType dt, const void* x, void* y, int64_t rows, int64_t cols, double scale, bool log) override;
  void softmax_bwd(DType dt, const void* y, const void* dy, void* dx, int64_t rows, int64_t cols, double scale,
                   bool log) override;
  void layer_norm_fwd(DType dt, const void* x, const void* w, const void* b, void* y, double* mean, double* rstd,
                      int64_t rows, int64_t cols, double eps) override;
  void layer_norm_bwd(DType dt, const void* x, const void* w, const double* mean, const double* rstd, const void* dy,
                      void* dx, void* dw, void* db, int64_t rows, int64_t cols) override;
  void cross_entropy_fwd(DType dt, const void* logits, const int64_t* target, void* probs, double* loss,
                         int64_t rows, int64_t cols, double smoothing) override;
  void cross_entropy_bwd(DType dt, const void* probs, const int64_t* target, void* dlogits, int64_t rows,
                         int64_t cols, double smoothing, double scale) override;

  // attention.cu
  int64_t attention_saved_numel(int64_t B, int64_t H, int64_t N, int64_t M) const override { return B * H * N; }
  void attention_fwd(DType dt, int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, const void* q,
                     const int64_t* q_str, const void* k, const int64_t* k_str, const void* v, const int64_t* v_str,
                     void* out, const int64_t* out_str, void* saved, double scale) override;
  void attention_bwd(DType dt, int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, const void* q,
                     const int64_t* q_str, const void* k, const int64_t* k_str, const void* v, const int64_t* v_str,
                     const void* saved, const void* dout, const int64_t* dout_str, void* dq, const int64_t* dq_str,
                     void* dk, const int64_t* dk_str, void* dv, const int64_t* dv_str, double scale) override;

  // optim.cu
  void sgd_step(float* p, const float* g, float* buf, int64_t n, float lr, float momentum, float dampening,
                float weight_decay, bool nesterov, bool first_step) override;
  void adam_step(float* p, const float* g, float* m, float* v, float* vmax, const float* anchor, int64_t n,
                 const kernels::AdamStep& h) override;
  void spd_adam_pass(float* p, const float* g, float* m, float* v, const float* anchor, int64_t n,
                     const kernels::AdamStep& h, kernels::SpdSums* sums) override;
  void spd_project(float* p, const float* anchor, int64_t n, float scale) override;

 private:
  int index_;
  std::string name_;
  int sm_count_ = 1;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  bool tf32_ = false;
  CachingAllocator alloc_;  // over cudaMalloc: no cudaMalloc in a training step after the first
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  // SPD's per-tensor sums since the last synchronize(): slot i of spd_totals_ (3 doubles on the device) is
  // copied into *spd_pending_[i] there, all in one copy.
  static constexpr size_t kSpdSlots = 1024;
  double* spd_totals_ = nullptr;
  std::vector<kernels::SpdSums*> spd_pending_;
};

// Grid size for grid-stride loops: enough blocks to fill the GPU, never more than the work needs.
unsigned grid_for(const CudaKernels& k, int64_t n, int threads);

}  // namespace spdlab::cuda
