// The half of the CPU backend compiled once per instruction set: every arithmetic loop, as CpuKernels on top
// of CpuKernelsShared (kernels/cpu/common.h, compiled once). kernels/cpu/isa_base.cpp includes this file inside
// namespace spdlab::cpu::base for the compiler's default target; kernels/cpu/isa_avx2.cpp includes it inside
// spdlab::cpu::avx2 under `#pragma GCC target("avx2,fma")`; kernels/cpu/cpu_kernels.cpp picks one at run time
// from what the CPU supports, as PyTorch does with its CPU capability levels.
//
// Not a normal header: no include guard, included only by those two files, inside their namespace, with
// SPDLAB_CPU_AVX2 defined to 0 or 1 and after the headers listed in isa_base.cpp. The loops are written once
// as templates over float and double; reductions accumulate in a fixed order, so results are identical for any
// thread count (for one instruction set).
//
// The files, by kind:
//   math.h         fast float exp and erf, GELU
//   elementwise.h  unary ops and their derivatives, binary ops, where
//   reductions.h   sum, max, max's backward
//   nn.h           softmax, layer norm, cross-entropy, patch unfold
//   attention.h    one attention body over per-head products (OpenBLAS, or AVX2 / AVX-512 kernels for small
//                  heads)
//   optimizers.h   fused SGD, Adam and SPD passes
//   gemm.h         spdlab's own SGEMM with prologues and epilogues (its reference loops, and under AVX2 the
//                  packed, register-blocked version, on a 256-bit or, where the CPU has AVX-512, a 512-bit tile)
#define SPDLAB_CPU_VARIANT 1

namespace {

using kernels::Binary;
using kernels::Reduce;
using kernels::Strided;
using kernels::Unary;

#if SPDLAB_CPU_AVX2
// Whether this set's 512-bit kernels run (SPDLAB_CPU_ISA=avx512, the default on a CPU with AVX-512F:
// kernels/cpu/cpu_kernels.cpp): the SGEMM's 6x32 tile and attention's 32-column small products.
inline bool wide_kernels() {
  static const bool wide = std::string(kernels::cpu_isa()) == "avx512";
  return wide;
}
#endif

#include "kernels/cpu/math.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/reductions.h"
#include "kernels/cpu/nn.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/optimizers.h"
#include "kernels/cpu/gemm.h"

class CpuKernels final : public CpuKernelsShared {
 public:
  std::string name() const override {
    return SPDLAB_CPU_AVX2 ? std::string("cpu (") + kernels::cpu_isa() + ")" : "cpu (base)";
  }

  void unary_fwd(Unary op, DType dt, const void* x, void* y, int64_t n, double alpha) override {
    SPDLAB_FLOAT_DISPATCH(dt, "unary", unary_fwd_t<T>(op, cp<T>(x), mp<T>(y), n, alpha));
  }
  void unary_bwd(Unary op, DType dt, const void* x, const void* y, const void* dy, void* dx, int64_t n,
                 double alpha) override {
    SPDLAB_FLOAT_DISPATCH(dt, "unary_bwd", unary_bwd_t<T>(op, cp<T>(x), cp<T>(y), cp<T>(dy), mp<T>(dx), n, alpha));
  }
  void binary_fwd(Binary op, DType dt, Strided a, Strided b, void* out, const int64_t* shape, int ndim) override {
    SPDLAB_FLOAT_DISPATCH(dt, "binary", binary_fwd_t<T>(op, a, b, mp<T>(out), shape, ndim));
  }
  void where_fwd(DType cond_dt, Strided cond, DType dt, Strided a, Strided b, void* out, const int64_t* shape,
                 int ndim) override {
    SPDLAB_FLOAT_DISPATCH(dt, "where", where_t<T>(cond_dt, cond, a, b, mp<T>(out), shape, ndim));
  }
  void reduce(Reduce op, DType dt, const void* x, void* y, int64_t outer, int64_t r, int64_t inner,
              int64_t* argmax) override {
    SPDLAB_FLOAT_DISPATCH(dt, "reduce", reduce_t<T>(op, cp<T>(x), mp<T>(y), outer, r, inner, argmax));
  }
  void max_bwd(DType dt, const void* dy, const int64_t* argmax, void* dx, int64_t outer, int64_t r,
               int64_t inner) override {
    SPDLAB_FLOAT_DISPATCH(dt, "max_bwd", max_bwd_t<T>(cp<T>(dy), argmax, mp<T>(dx), outer, r, inner));
  }

  void softmax_fwd(DType dt, const void* x, void* y, int64_t rows, int64_t cols, double scale, bool log) override {
    SPDLAB_FLOAT_DISPATCH(dt, "softmax", softmax_fwd_t<T>(cp<T>(x), mp<T>(y), rows, cols, scale, log));
  }
  void softmax_bwd(DType dt, const void* y, const void* dy, void* dx, int64_t rows, int64_t cols, double scale,
                   bool log) override {
    SPDLAB_FLOAT_DISPATCH(dt, "softmax_bwd", softmax_bwd_t<T>(cp<T>(y), cp<T>(dy), mp<T>(dx), rows, cols, scale, log));
  }
  void layer_norm_fwd(DType dt, const void* x, const void* w, const void* b, void* y, double* mean, double* rstd,
                      int64_t rows, int64_t cols, double eps) override {
    SPDLAB_FLOAT_DISPATCH(dt, "layer_norm",
                          layer_norm_fwd_t<T>(cp<T>(x), cp<T>(w), cp<T>(b), mp<T>(y), mean, rstd, rows, cols, eps));
  }
  void layer_norm_bwd(DType dt, const void* x, const void* w, const double* mean, const double* rstd, const void* dy,
                      void* dx, void* dw, void* db, int64_t rows, int64_t cols) override {
    SPDLAB_FLOAT_DISPATCH(dt, "layer_norm_bwd",
                          layer_norm_bwd_t<T>(cp<T>(x), cp<T>(w), mean, rstd, cp<T>(dy), mp<T>(dx), mp<T>(dw),
                                              mp<T>(db), rows, cols));
  }
  void cross_entropy_fwd(DType dt, const void* logits, const int64_t* target, void* probs, double* loss, int64_t rows,
                         int64_t cols, double smoothing) override {
    SPDLAB_FLOAT_DISPATCH(dt, "cross_entropy",
                          cross_entropy_fwd_t<T>(cp<T>(logits), target, mp<T>(probs), loss, rows, cols, smoothing));
  }
  void cross_entropy_bwd(DType dt, const void* probs, const int64_t* target, void* dl, int64_t rows, int64_t cols,
                         double smoothing, double scale) override {
    SPDLAB_FLOAT_DISPATCH(dt, "cross_entropy_bwd",
                          cross_entropy_bwd_t<T>(cp<T>(probs), target, mp<T>(dl), rows, cols, smoothing, scale));
  }
  void unfold_patches_fwd(DType dt, const void* x, void* y, int64_t B, int64_t C, int64_t H, int64_t W,
                          int64_t P) override {
    SPDLAB_FLOAT_DISPATCH(dt, "unfold_patches", unfold_t<T>(cp<T>(x), mp<T>(y), B, C, H, W, P, false));
  }
  void unfold_patches_bwd(DType dt, const void* dy, void* dx, int64_t B, int64_t C, int64_t H, int64_t W,
                          int64_t P) override {
    SPDLAB_FLOAT_DISPATCH(dt, "unfold_patches_bwd", unfold_t<T>(cp<T>(dy), mp<T>(dx), B, C, H, W, P, true));
  }

  void attention_fwd(DType dt, int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, const void* q, const int64_t* qs,
                     const void* k, const int64_t* ks, const void* v, const int64_t* vs, void* out,
                     const int64_t* os, void* saved, double scale) override {
#if SPDLAB_CPU_AVX2
    if (dt == DType::f32 && small_attention(N, M))
      return attention_heads_fwd<float, SmallProducts>(B, H, N, M, D, cp<float>(q), qs, cp<float>(k), ks,
                                                       cp<float>(v), vs, mp<float>(out), os, mp<float>(saved), scale);
#endif
    SPDLAB_FLOAT_DISPATCH(dt, "attention",
                          attention_heads_fwd<T, BlasProducts<T>>(B, H, N, M, D, cp<T>(q), qs, cp<T>(k), ks, cp<T>(v),
                                                                  vs, mp<T>(out), os, mp<T>(saved), scale));
  }
  void attention_bwd(DType dt, int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, const void* q, const int64_t* qs,
                     const void* k, const int64_t* ks, const void* v, const int64_t* vs, const void* saved,
                     const void* dout, const int64_t* ds, void* dq, const int64_t* dqs, void* dk,
                     const int64_t* dks, void* dv, const int64_t* dvs, double scale) override {
#if SPDLAB_CPU_AVX2
    if (dt == DType::f32 && small_attention(N, M))
      return attention_heads_bwd<float, SmallProducts>(B, H, N, M, D, cp<float>(q), qs, cp<float>(k), ks,
                                                       cp<float>(v), vs, cp<float>(saved), cp<float>(dout), ds,
                                                       mp<float>(dq), dqs, mp<float>(dk), dks, mp<float>(dv), dvs,
                                                       scale);
#endif
    SPDLAB_FLOAT_DISPATCH(dt, "attention_bwd",
                          attention_heads_bwd<T, BlasProducts<T>>(B, H, N, M, D, cp<T>(q), qs, cp<T>(k), ks, cp<T>(v),
                                                                  vs, cp<T>(saved), cp<T>(dout), ds, mp<T>(dq), dqs,
                                                                  mp<T>(dk), dks, mp<T>(dv), dvs, scale));
  }

#if SPDLAB_CPU_AVX2
  // Products go to spdlab's SGEMM where sgemm_preferred says, to OpenBLAS elsewhere. It computes
  // C = op(A) op(B) (+ C), so alpha must be 1 and beta 0 or 1.
  static bool own_sgemm(DType dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, double beta) {
    return dt == DType::f32 && alpha == 1.0 && (beta == 0.0 || beta == 1.0) && sgemm_preferred(ta, tb, M, N, K);
  }
  void gemm(DType dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const void* A, int64_t lda,
            const void* B, int64_t ldb, double beta, void* C, int64_t ldc) override {
    if (!own_sgemm(dt, ta, tb, M, N, K, alpha, beta))
      return CpuKernelsShared::gemm(dt, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    GemmEx ex;
    ex.accumulate = beta == 1.0;
    sgemm_impl(ta, tb, M, N, K, cp<float>(A), lda, cp<float>(B), ldb, mp<float>(C), ldc, ex);
  }
  // Independent products, one per thread: with as many products as threads, sgemm_group, where a thread done
  // with its own product takes the column sums, then tasks of the others; else one product per thread when
  // there are enough (inside the parallel region sgemm stays on its thread), the column sums taken by the first
  // thread to finish. Either way every product computes the same bits on any thread, and the sums (reduce_t, in
  // fixed blocks) too.
  void gemm_ex_group(DType dt, const GemmExCall* c, int64_t n, const ColumnSums& sums) override {
    for (int64_t i = 0; i < n; ++i)
      if (!own_sgemm(dt, c[i].trans_a, c[i].trans_b, c[i].M, c[i].N, c[i].K, 1.0, 0.0))
        return Kernels::gemm_ex_group(dt, c, n, sums);
    auto column_sums = [&] {
      reduce_t<float>(Reduce::sum, cp<float>(sums.x), mp<float>(sums.y), 1, sums.rows, sums.cols, nullptr);
    };
    if (sgemm_group_impl(c, n, sums.y != nullptr, column_sums)) return;
    const bool beside = sums.y && n >= get_num_threads();  // else a product alone would run on one thread
    run_products(n + (beside ? 1 : 0), [&](int64_t i) {
      if (i == n) return column_sums();
      sgemm_impl(c[i].trans_a, c[i].trans_b, c[i].M, c[i].N, c[i].K, cp<float>(c[i].A), c[i].lda, cp<float>(c[i].B),
                 c[i].ldb, mp<float>(c[i].C), c[i].ldc, c[i].ex);
    });
    if (sums.y && !beside) column_sums();
  }
  // gemm's products in a group as gemm_ex_group's (sgemm_group) where the SGEMM takes them all; else
  // CpuKernelsShared's, which calls gemm() above, so the group's products run here as well. (A plain array: a
  // std::vector of a type from outside this namespace would be instantiated here with this file's target.)
  void gemm_group(DType dt, const Gemm* g, int64_t n) override {
    GemmExCall c[8];
    if (n > 8) return CpuKernelsShared::gemm_group(dt, g, n);
    for (int64_t i = 0; i < n; ++i) {
      if (!own_sgemm(dt, g[i].trans_a, g[i].trans_b, g[i].M, g[i].N, g[i].K, g[i].alpha, g[i].beta))
        return CpuKernelsShared::gemm_group(dt, g, n);
      c[i] = {g[i].trans_a, g[i].trans_b, g[i].M, g[i].N, g[i].K, g[i].A, g[i].lda, g[i].B, g[i].ldb, g[i].C,
              g[i].ldc, {}};
      c[i].ex.accumulate = g[i].beta == 1.0;
    }
    if (!sgemm_group_impl(c, n, false, [] {})) CpuKernelsShared::gemm_group(dt, g, n);
  }
#endif
  void gemm_ex(DType dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda,
               const void* B, int64_t ldb, void* C, int64_t ldc, const GemmEx& ex) override {
#if SPDLAB_CPU_AVX2
    if (dt == DType::f32 && sgemm_preferred(ta, tb, M, N, K))
      return sgemm_impl(ta, tb, M, N, K, cp<float>(A), lda, cp<float>(B), ldb, mp<float>(C), ldc, ex);
#endif
    Kernels::gemm_ex(dt, ta, tb, M, N, K, A, lda, B, ldb, C, ldc, ex);
  }

  void sgd_step(float* p, const float* g, float* buf, int64_t n, float lr, float momentum, float dampening,
                float wd, bool nesterov, bool first) override {
    fused_sgd(p, g, buf, n, lr, momentum, dampening, wd, nesterov, first);
  }
  void adam_step(float* p, const float* g, float* m, float* v, float* vmax, const float* anchor, int64_t n,
                 const kernels::AdamStep& h) override {
    fused_adam(p, g, m, v, vmax, anchor, n, h);
  }
  void spd_adam_pass(float* p, const float* g, float* m, float* v, const float* anchor, int64_t n,
                     const kernels::AdamStep& h, kernels::SpdSums* sums) override {
    fused_spd_adam(p, g, m, v, anchor, n, h, sums);
  }
  void spd_project(float* p, const float* anchor, int64_t n, float scale) override {
    fused_spd_project(p, anchor, n, scale);
  }
};

}  // namespace

void sgemm_reference(SPDLAB_SGEMM_ARGS) {
  sgemm_reference_impl(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, ex);
}
#if SPDLAB_CPU_AVX2
void sgemm(SPDLAB_SGEMM_ARGS) { sgemm_impl(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, ex); }
void sgemm_6x16(SPDLAB_SGEMM_ARGS) {
  sgemm_detail::sgemm_tiled<sgemm_detail::Tile6x16>(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, ex);
}
void sgemm_6x32(SPDLAB_SGEMM_ARGS) {
  SPDLAB_CHECK(__builtin_cpu_supports("avx512f"), "sgemm_6x32: this CPU has no AVX-512F");
  sgemm_detail::sgemm_tiled<sgemm_detail::Tile6x32>(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, ex);
}
void small_gemm_16(SPDLAB_SMALL_GEMM_ARGS) { small_gemm_t<false>(m, n, k, A, lda, ak, B, ldb, C, ldc); }
void small_gemm_32(SPDLAB_SMALL_GEMM_ARGS) {
  SPDLAB_CHECK(__builtin_cpu_supports("avx512f"), "small_gemm_32: this CPU has no AVX-512F");
  small_gemm_t<true>(m, n, k, A, lda, ak, B, ldb, C, ldc);
}
double softmax_exp_plain(const float* x, float* y, int64_t cols, float s, float mx) {
  return softmax_exp_row_plain(x, y, cols, s, mx);
}
double softmax_exp_avx2(const float* x, float* y, int64_t cols, float s, float mx) {
  return softmax_exp_row_avx2(x, y, cols, s, mx);
}
bool sgemm_preferred(bool ta, bool tb, int64_t M, int64_t N, int64_t K) {
  static const int mode = [] {  // SPDLAB_SGEMM=blas: OpenBLAS for every product (with gemm_ex composed); for A/B
    const char* e = std::getenv("SPDLAB_SGEMM");
    std::string v = e && *e ? e : "auto";
    SPDLAB_CHECK(v == "auto" || v == "own" || v == "blas", "SPDLAB_SGEMM: expected auto, own or blas, got '", v, "'");
    return v == "blas" ? 0 : v == "own" ? 1 : 2;
  }();
  if (mode != 2) return mode == 1;
  (void)ta, (void)tb;
  return M * N * K >= 32768;
}
#endif

// This instruction set's kernels, built on first use.
kernels::Kernels& instance() {
  static CpuKernels k;
  return k;
}

#undef SPDLAB_CPU_VARIANT
