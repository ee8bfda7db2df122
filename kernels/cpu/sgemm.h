// spdlab's own single-precision GEMM with prologues and epilogues (Kernels::gemm_ex), compiled per instruction
// set in kernels/cpu/gemm.h. Declared here so that tests and benchmarks can call each version directly.
//
// Both versions compute every C[i,j] in the same order, so they agree bit for bit: K is cut into blocks of
// kSgemmKC; within a block the products are summed with fused multiply-adds in k order from 0; the blocks are
// added to C in order (the first one replaces C unless ex.accumulate); then + bias[j]; then * gelu'(aux[i,j]).
// Nothing in that order depends on how the work is split over threads, so results do not depend on the thread
// count either.
#pragma once
#include <cstdint>

#include "kernels/cpu/common.h"
#include "kernels/kernels.h"

namespace spdlab::cpu {

constexpr int64_t kSgemmKC = 256;

#define SPDLAB_SGEMM_ARGS                                                                                         \
  bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,      \
      int64_t ldb, float *C, int64_t ldc, const kernels::Kernels::GemmEx &ex

namespace base {
// Plain loops, the definition a student reads (gemm.h).
void sgemm_reference(SPDLAB_SGEMM_ARGS);
}  // namespace base
#if SPDLAB_HAVE_AVX2_KERNELS
namespace avx2 {
void sgemm_reference(SPDLAB_SGEMM_ARGS);
// B in packed panels, A packed (under a prologue) or read in place, a register-blocked micro-kernel, OpenMP over
// blocks of C: the 6x32 AVX-512 tile when
// kernels::cpu_isa() is "avx512", else the 6x16 AVX2 tile.
void sgemm(SPDLAB_SGEMM_ARGS);
// Each tile by name, for the tests; sgemm_6x32 only on a CPU with AVX-512F.
void sgemm_6x16(SPDLAB_SGEMM_ARGS);
void sgemm_6x32(SPDLAB_SGEMM_ARGS);
// Whether the CPU kernels send a product to sgemm: every one of at least 32768 multiply-adds, for results that do
// not depend on the thread count (on two threads it trails OpenBLAS on deep weight gradients: bench/README.md);
// SPDLAB_SGEMM=blas (or own) overrides.
bool sgemm_preferred(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K);
// Attention's small products (kernels/cpu/attention.h): C [m, n] = A [m, k] B [k, n], A's element (r, kk) at
// A[r lda + kk ak], 16 columns at a time in 256-bit registers or 32 in 512-bit ones (AVX-512F only), bit for bit
// the same.
#define SPDLAB_SMALL_GEMM_ARGS                                                                                    \
  int64_t m, int64_t n, int64_t k, const float *A, int64_t lda, int64_t ak, const float *B, int64_t ldb, float *C, \
      int64_t ldc
void small_gemm_16(SPDLAB_SMALL_GEMM_ARGS);
void small_gemm_32(SPDLAB_SMALL_GEMM_ARGS);
// Softmax's row of exponentials, y = exp(s x - mx), and their sum in double (kernels/cpu/nn.h's
// softmax_exp_row): the plain loop that defines the order of the sum, and the AVX2 version the kernels run.
double softmax_exp_plain(const float* x, float* y, int64_t cols, float s, float mx);
double softmax_exp_avx2(const float* x, float* y, int64_t cols, float s, float mx);
}  // namespace avx2
#endif

}  // namespace spdlab::cpu
