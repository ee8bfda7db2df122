// Kernels::gemm_ex for a backend without a fused product of its own (the base CPU kernels, the GPU): the
// prologues are written out to temporaries by the backend's own GELU and layer-norm kernels, the product is its
// gemm(), and the epilogue is its bias fill and GELU-derivative kernel, so every backend computes the same thing
// as the fused path to float rounding.
#include "kernels/kernels.h"

namespace spdlab::kernels {

namespace {

// Device memory for one call, given back when the call ends (also on an exception).
class Scratch {
 public:
  Scratch(Kernels& k, size_t nbytes) : k_(k), n_(nbytes), p_(nbytes ? k.allocate(nbytes) : nullptr) {}
  ~Scratch() {
    if (p_) k_.deallocate(p_, n_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* get() const { return p_; }

 private:
  Kernels& k_;
  size_t n_;
  void* p_;
};

// The stored matrix X [rows, cols] (leading dim ld) after its prologue, as a contiguous temporary.
const void* apply_prologue(Kernels& k, DType dt, const Kernels::Prologue& pro, const void* X, int64_t rows,
                           int64_t cols, int64_t ld, Scratch& out, Scratch& stats, const char* which) {
  if (pro.kind == Kernels::Prologue::none) return X;
  SPDLAB_CHECK(ld == cols, "gemm_ex: a prologue on operand ", which, " needs its stored rows contiguous (ld ", ld,
               " for ", cols, " columns)");
  const int64_t n = rows * cols;
  if (pro.kind == Kernels::Prologue::gelu) {
    k.unary_fwd(Unary::gelu, dt, X, out.get(), n, 0.0);
  } else {
    // layer_norm_fwd makes the statistics again from the same x, the same numbers pro.mean and pro.rstd hold;
    // or, in forward, the first time, into mean_out and rstd_out.
    double* mean = pro.mean_out ? pro.mean_out : static_cast<double*>(stats.get());
    double* rstd = pro.mean_out ? pro.rstd_out : mean + rows;
    k.layer_norm_fwd(dt, X, pro.gamma, pro.beta, out.get(), mean, rstd, rows, cols, pro.eps);
  }
  return out.get();
}

}  // namespace

void Kernels::gemm_ex(DType dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda,
                      const void* B, int64_t ldb, void* C, int64_t ldc, const GemmEx& ex) {
  SPDLAB_CHECK((!ex.bias && !ex.gelu_grad && !ex.residual) || ldc == N,
               "gemm_ex: a bias, GELU or residual epilogue needs C contiguous (ldc ", ldc, " for ", N, " columns)");
  const bool wants_stats = ex.a.mean_out || ex.b.mean_out;  // computed even for an empty C
  if ((M == 0 || N == 0) && !wants_stats) return;
  const size_t es = dtype_size(dt);
  // Stored shapes: op(A) is [M, K], so A is [K, M] when transposed; op(B) is [K, N].
  const int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
  const bool pa = ex.a.kind != Prologue::none, pb = ex.b.kind != Prologue::none;
  auto stats_bytes = [](const Prologue& p, int64_t rows) {
    return p.kind == Prologue::layer_norm && !p.mean_out ? 16 * rows : 0;
  };
  Scratch a_tmp(*this, pa ? ar * ac * es : 0), a_stats(*this, stats_bytes(ex.a, ar));
  Scratch b_tmp(*this, pb ? br * bc * es : 0), b_stats(*this, stats_bytes(ex.b, br));
  const void* a = apply_prologue(*this, dt, ex.a, A, ar, ac, lda, a_tmp, a_stats, "A");
  const void* b = apply_prologue(*this, dt, ex.b, B, br, bc, ldb, b_tmp, b_stats, "B");
  if (M == 0 || N == 0) return;
  if (pa) lda = ac;
  if (pb) ldb = bc;
  double beta = ex.accumulate ? 1.0 : 0.0;
  if (ex.bias && !ex.accumulate) {
    fill_rows(dt, C, ex.bias, M, N);  // the product then adds into the bias rows: one pass over C
    beta = 1.0;
  }
  if (K > 0) {
    gemm(dt, ta, tb, M, N, K, 1.0, a, lda, b, ldb, beta, C, ldc);
  } else if (beta == 0.0) {
    for (int64_t i = 0; i < M; ++i) fill(dt, static_cast<char*>(C) + i * ldc * es, N, 0.0);
  }
  if (ex.bias && ex.accumulate) {
    const int64_t c_str[2] = {N, 1}, b_str[2] = {0, 1}, shape[2] = {M, N};
    binary_fwd(Binary::add, dt, {C, c_str}, {ex.bias, b_str}, C, shape, 2);
  }
  if (ex.gelu_grad) unary_bwd(Unary::gelu, dt, ex.gelu_grad, nullptr, C, C, M * N, 0.0);
  if (ex.residual) {
    const int64_t str[2] = {N, 1}, shape[2] = {M, N};
    binary_fwd(Binary::add, dt, {C, str}, {ex.residual, str}, C, shape, 2);
  }
}

void Kernels::gemm_ex_group(DType dt, const GemmExCall* c, int64_t n, const ColumnSums& sums) {
  for (int64_t i = 0; i < n; ++i)
    gemm_ex(dt, c[i].trans_a, c[i].trans_b, c[i].M, c[i].N, c[i].K, c[i].A, c[i].lda, c[i].B, c[i].ldb, c[i].C,
            c[i].ldc, c[i].ex);
  if (sums.y) reduce(Reduce::sum, dt, sums.x, sums.y, 1, sums.rows, sums.cols, nullptr);
}

}  // namespace spdlab::kernels
