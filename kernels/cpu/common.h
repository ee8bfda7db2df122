// What every CPU kernel file shares: the f32/f64 dispatch, typed views of the interface's void pointers,
// OpenBLAS's products, and CpuKernelsShared, the half of the CPU backend that is compiled once (memory, copies,
// fills, products, gathers, dropout masks). The other half, the arithmetic loops, is compiled once per
// instruction set (kernels/cpu/variant.h).
#pragma once
#include <cstdint>

#include "kernels/kernels.h"
#include "kernels/threads.h"

namespace spdlab::cpu {

// Runs the statement(s) with T bound to float or double by `dt`; any other dtype is an error naming NAME.
#define SPDLAB_FLOAT_DISPATCH(dt, NAME, ...)                                         \
  do {                                                                               \
    if ((dt) == DType::f32) { using T = float; __VA_ARGS__; }                        \
    else if ((dt) == DType::f64) { using T = double; __VA_ARGS__; }                  \
    else SPDLAB_FAIL(NAME, ": expected a floating dtype (f32 or f64), got ", (dt));  \
  } while (0)

template <typename T> const T* cp(const void* p) { return static_cast<const T*>(p); }
template <typename T> T* mp(void* p) { return static_cast<T*>(p); }

// C = alpha op(A) op(B) + beta C on row-major operands, through OpenBLAS (kernels/cpu/shared.cpp).
void blas_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void blas_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
               const double* B, int64_t ldb, double beta, double* C, int64_t ldc);

// Whether attention's forward keeps a head's N x M probabilities for backward (kernels/cpu/attention.h) rather
// than backward computing them again from q, k and two numbers per query row: at most 4096 (16 KB in f32).
// vit-fmnist's 50 x 50 heads are kept, 3.8 MB per block at batch 128, and backward skips a product and a
// softmax per head; a vit_tiny head's 197 x 197 would keep 7.4 MB per block at batch 16 and is recomputed.
inline bool attention_keeps_probabilities(int64_t N, int64_t M) { return N * M <= 4096; }

// The CPU kernels whose speed does not depend on the instruction set the loops are compiled for: memory and
// copies (bandwidth-bound), products (OpenBLAS picks its own kernels at run time), index_select, gather and
// dropout masks. Each instruction set's CpuKernels derives from it and adds the arithmetic.
class CpuKernelsShared : public kernels::Kernels {
 public:
  Device device() const override { return Device::cpu; }
  void* allocate(size_t nbytes) override;
  void deallocate(void* p, size_t nbytes) noexcept override;
  void copy_from_host(void* dst, const void* src, size_t nbytes) override;
  void copy_to_host(void* dst, const void* src, size_t nbytes) override;
  kernels::MemoryStats memory_stats() override;
  void reset_peak_memory() override;
  // A step's pieces spread over the cores; fixed boundaries keep the sums independent of the thread count.
  int64_t optimizer_piece() const override { return 65536; }
  // Inference chunks of about 1024 token rows (vit-fmnist: about 20 images), whole chunks to each thread
  // (models/evaluate.h's logits; the measurements are in bench/README.md).
  int64_t inference_chunk_rows() const override { return 1024; }
  int apart_width() const override { return get_num_threads(); }
  void run_apart(int64_t n, const std::function<void(int64_t)>& f) override;
  // Each query row's max and 1 / sum, then the probabilities of heads small enough to keep
  // (attention_keeps_probabilities); backward recomputes the others' (kernels/cpu/attention.h).
  int64_t attention_saved_numel(int64_t B, int64_t H, int64_t N, int64_t M) const override {
    return B * H * N * (2 + (attention_keeps_probabilities(N, M) ? M : 0));
  }

  void dropout_mask(DType dt, void* mask, int64_t n, double p, uint64_t seed, uint64_t offset) override;
  void copy_strided(DType src_dt, kernels::Strided src, DType dst_dt, void* dst, const int64_t* dst_strides,
                    const int64_t* shape, int ndim) override;
  void fill(DType dt, void* dst, int64_t n, double v) override;
  void gemm(DType dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const void* A, int64_t lda,
            const void* B, int64_t ldb, double beta, void* C, int64_t ldc) override;
  void gemm_batched(DType dt, int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
                    const void* A, int64_t lda, int64_t sa, const void* B, int64_t ldb, int64_t sb, double beta,
                    void* C, int64_t ldc, int64_t sc) override;
  void gemm_group(DType dt, const Gemm* g, int64_t n) override;
  void fill_rows(DType dt, void* y, const void* bias, int64_t rows, int64_t cols) override;
  void index_select_fwd(DType dt, const void* x, const int64_t* index, void* y, int64_t outer, int64_t n, int64_t m,
                        int64_t inner) override;
  void index_select_bwd(DType dt, const void* dy, const int64_t* index, void* dx, int64_t outer, int64_t n, int64_t m,
                        int64_t inner) override;
  void gather_fwd(DType dt, const void* x, const int64_t* index, void* y, int64_t outer, int64_t n, int64_t m,
                  int64_t inner) override;
  void gather_bwd(DType dt, const void* dy, const int64_t* index, void* dx, int64_t outer, int64_t n, int64_t m,
                  int64_t inner) override;
};

// The two instruction sets' kernels (kernels/cpu/isa_base.cpp, isa_avx2.cpp). The AVX2 set is built on x86-64
// with GCC, whose `#pragma GCC target` compiles it; elsewhere only the baseline set exists.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SPDLAB_HAVE_AVX2_KERNELS 1
#else
#define SPDLAB_HAVE_AVX2_KERNELS 0
#endif
namespace base {
kernels::Kernels& instance();
}
#if SPDLAB_HAVE_AVX2_KERNELS
namespace avx2 {
kernels::Kernels& instance();
}
#endif

}  // namespace spdlab::cpu
