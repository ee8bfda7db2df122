// spdlab's own SGEMM (declared in kernels/cpu/sgemm.h): the plain-loop reference for every instruction set, and
// under AVX2 the fast version, BLIS-style, on a 6x16 tile of 256-bit registers or, on CPUs with AVX-512, a 6x32
// tile of 512-bit ones. Part of the per-instruction-set half of the CPU backend
// (kernels/cpu/variant.h).
//
// C[M,N] (+)= pro_a(op(A)) pro_b(op(B)), + bias, * gelu'(aux), + residual: see Kernels::gemm_ex. A prologue maps
// a stored element X[r][c] (row and column of the matrix as it lies in memory, before any transpose).
#ifndef SPDLAB_CPU_VARIANT
#error "kernels/cpu/variant.h includes this file, inside an instruction set's namespace; include that instead"
#endif

using GemmEx = kernels::Kernels::GemmEx;
using GemmPrologue = kernels::Kernels::Prologue;

// One stored element after its prologue. layer_norm is written as layer_norm_fwd_t writes it (nn.h), so the
// fused product sees the same normalized values as the unfused one.
inline float prologue_at(const GemmPrologue& p, const float* X, int64_t ld, int64_t r, int64_t c) {
  float x = X[r * ld + c];
  switch (p.kind) {
    case GemmPrologue::none: return x;
    case GemmPrologue::gelu: return gelu_exact(x);
    case GemmPrologue::layer_norm: {
      float g = p.gamma ? static_cast<const float*>(p.gamma)[c] : 1.0f;
      float b = p.beta ? static_cast<const float*>(p.beta)[c] : 0.0f;
      return (x - static_cast<float>(p.mean[r])) * static_cast<float>(p.rstd[r]) * g + b;
    }
  }
  return x;
}

// The epilogue of one finished element at offset ij = i ldc + j of C (where aux and residual have it too).
inline float epilogue_at(const GemmEx& ex, float v, int64_t j, int64_t ij) {
  if (ex.bias) v = v + static_cast<const float*>(ex.bias)[j];
  if (ex.gelu_grad) v = v * gelu_exact_grad(static_cast<const float*>(ex.gelu_grad)[ij]);
  if (ex.residual) v = v + static_cast<const float*>(ex.residual)[ij];
  return v;
}

// A layer-norm prologue that asks for its statistics (forward's: mean_out set) gets them here, before anything
// reads the operand, by layer_norm_fwd's own code (nn.h) without its output; the product then uses them.
inline GemmPrologue with_statistics(const GemmPrologue& p, const float* X, int64_t rows, int64_t cols, int64_t ld) {
  if (p.kind != GemmPrologue::layer_norm || !p.mean_out) return p;
  SPDLAB_CHECK(ld == cols, "gemm_ex: a layer-norm prologue that computes its statistics needs its operand's stored "
               "rows contiguous (ld ", ld, " for ", cols, " columns)");
  layer_norm_fwd_t<float>(X, static_cast<const float*>(p.gamma), static_cast<const float*>(p.beta), nullptr,
                          p.mean_out, p.rstd_out, rows, cols, p.eps);
  return p.with_saved_statistics();
}
inline GemmEx with_statistics(const GemmEx& ex, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A,
                              int64_t lda, const float* B, int64_t ldb) {
  GemmEx e = ex;
  e.a = with_statistics(ex.a, A, ta ? K : M, ta ? M : K, lda);  // stored shapes, as in Kernels::gemm_ex
  e.b = with_statistics(ex.b, B, tb ? N : K, tb ? K : N, ldb);
  return e;
}

// The reference: what the fast version computes, in the same order, one element at a time.
void sgemm_reference_impl(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                          const float* B, int64_t ldb, float* C, int64_t ldc, const GemmEx& ex_in) {
  const GemmEx ex = with_statistics(ex_in, ta, tb, M, N, K, A, lda, B, ldb);
  // op(A)[i][k] is stored at A[k][i] when transposed; likewise op(B)[k][j] at B[j][k].
  auto a = [&](int64_t i, int64_t k) { return ta ? prologue_at(ex.a, A, lda, k, i) : prologue_at(ex.a, A, lda, i, k); };
  auto b = [&](int64_t k, int64_t j) { return tb ? prologue_at(ex.b, B, ldb, j, k) : prologue_at(ex.b, B, ldb, k, j); };
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      float c = ex.accumulate ? C[i * ldc + j] : 0.0f;
      for (int64_t k0 = 0; k0 < K; k0 += kSgemmKC) {
        float block = 0.0f;  // one K block, summed with fused multiply-adds in k order
        for (int64_t k = k0; k < std::min(K, k0 + kSgemmKC); ++k) block = std::fma(a(i, k), b(k, j), block);
        c = (k0 == 0 && !ex.accumulate) ? block : c + block;
      }
      C[i * ldc + j] = epilogue_at(ex, c, j, i * ldc + j);
    }
}

#if SPDLAB_CPU_AVX2
namespace sgemm_detail {

constexpr int64_t MR = 6;           // rows of the micro-kernel's tile of C (its columns: the tile's NR below)
constexpr int64_t KC = kSgemmKC;    // K block: a B panel (KC x NR, 16 or 32 KB) stays in L1, the packed block
                                    // of B (KC x N, 768 KB at N = 768) in L2
constexpr int64_t MC = 120;         // rows of A packed at a time (MC x KC, 120 KB): stays in L2

// A 64-byte aligned buffer per thread that only grows, so steady-state products allocate nothing.
struct Buffer {
  float* p = nullptr;
  size_t cap = 0;
  float* get(size_t n) {
    if (n > cap) {
      std::free(p);
      size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
      p = static_cast<float*>(std::aligned_alloc(64, bytes));
      SPDLAB_CHECK(p, "sgemm: out of memory for a packing buffer of ", bytes, " bytes");
      cap = n;
    }
    return p;
  }
  ~Buffer() { std::free(p); }
};
thread_local Buffer tl_a, tl_b, tl_t;  // packed A and B; sgemm_tiled's C of a product computed transposed

// Row r, columns [c0, c0 + n) of the stored X, after the prologue, into dst[0, n).
__attribute__((always_inline)) inline void prologue_row(const GemmPrologue& p, const float* X, int64_t ld, int64_t r,
                                                        int64_t c0, int64_t n, float* dst) {
  const float* x = X + r * ld + c0;
  switch (p.kind) {
    case GemmPrologue::none: std::memcpy(dst, x, n * sizeof(float)); break;
    case GemmPrologue::gelu: SPDLAB_SIMD for (int64_t i = 0; i < n; ++i) dst[i] = gelu_exact(x[i]); break;
    case GemmPrologue::layer_norm: {
      const float m = static_cast<float>(p.mean[r]), q = static_cast<float>(p.rstd[r]);
      const float* g = p.gamma ? static_cast<const float*>(p.gamma) + c0 : nullptr;
      const float* b = p.beta ? static_cast<const float*>(p.beta) + c0 : nullptr;
      SPDLAB_SIMD for (int64_t i = 0; i < n; ++i) dst[i] = (x[i] - m) * q * (g ? g[i] : 1.0f) + (b ? b[i] : 0.0f);
      break;
    }
  }
}

// Six rows (src, stride ld), columns [0, kc), into kc groups of six at dst: 8 columns at a time by an 8x8
// transpose in registers (attention.h's transpose_8x8, two rows of zeros), each group stored as 8 floats that the
// next group overwrites, so dst needs 2 floats of room past its end; the last kc % 8 columns one by one.
inline void pack_6_rows(const float* src, int64_t ld, int64_t kc, float* dst) {
  int64_t k = 0;
  for (; k + 8 <= kc; k += 8) {
    __m256 v[8];
    for (int r = 0; r < 6; ++r) v[r] = _mm256_loadu_ps(src + r * ld + k);
    v[6] = v[7] = _mm256_setzero_ps();
    transpose_8x8(v);
    for (int j = 0; j < 8; ++j) _mm256_storeu_ps(dst + (k + j) * 6, v[j]);  // column k + j: rows 0..5, 2 zeros
  }
  for (; k < kc; ++k)
    for (int64_t r = 0; r < 6; ++r) dst[k * 6 + r] = src[r * ld + k];
}

// Packs op(X)[i0 + i][k0 + k] for i < mc, k < kc into panels of W rows: panel p holds rows [pW, pW + W) as
// kc groups of W values (zero past the last row). "Rows" here are A's rows or B's columns: the same code packs
// both, with `trans` saying whether those rows lie along the stored rows.
template <int64_t W>
__attribute__((always_inline)) inline void pack_body(const float* X, int64_t ld, bool rows_are_stored_rows,
                                                     const GemmPrologue& pro, int64_t i0, int64_t mc, int64_t k0,
                                                     int64_t kc, float* dst) {
  float tmp[KC];
  int64_t ip0 = 0;  // where the panel-by-panel loop below starts
  if (!rows_are_stored_rows && pro.kind != GemmPrologue::none && mc >= 2 * W && mc / W * W <= KC) {
    // Several panels whose stored rows run along k, under a prologue: B's (Plan::pack_b hands over up to KC / W
    // of them; a weight gradient's layer norm or GELU), or a transposed A's (x under layer norm, in a weight
    // gradient computed transposed). Each stored row's run across every full panel at once, the prologue over
    // all of it in one loop, then W floats into each panel. Panel by panel, the prologue ran on runs of W floats
    // (layer norm's statistics fetched again for each) and the copies were memcpy calls of a size known only at
    // run time (rep movs).
    const int64_t full = mc / W;
    for (int64_t k = 0; k < kc; ++k) {
      prologue_row(pro, X, ld, k0 + k, i0, full * W, tmp);
      for (int64_t p = 0; p < full; ++p) std::memcpy(dst + p * W * kc + k * W, tmp + p * W, W * sizeof(float));
    }
    ip0 = full * W;
  } else if (!rows_are_stored_rows && pro.kind == GemmPrologue::none && mc >= 2 * W) {
    // A transposed A (a weight gradient's dy^T, when sgemm_tiled packs it): every full panel at once, 8 stored
    // rows at a time. Panel by panel, the kc rows a panel reads lie a row apart, and at vit's 768 floats a row
    // they fall into 4 of L1's 64 sets, so each row's cache line is gone before the next panel reads its
    // neighbouring floats.
    constexpr int64_t kRows = 8;
    const int64_t full = mc / W;
    for (int64_t kk = 0; kk < kc; kk += kRows) {
      const int64_t kn = std::min(kRows, kc - kk);
      for (int64_t p = 0; p < full; ++p) {
        const float* src = X + (k0 + kk) * ld + i0 + p * W;
        float* d = dst + p * W * kc + kk * W;
        for (int64_t k = 0; k < kn; ++k) std::memcpy(d + k * W, src + k * ld, W * sizeof(float));
      }
    }
    ip0 = full * W;
  }
  for (int64_t ip = ip0; ip < mc; ip += W) {
    float* panel = dst + ip * kc;
    const int64_t w = std::min(W, mc - ip);
    if (rows_are_stored_rows && W == 6 && w == 6) {  // A's full panels (under a prologue: else ARows): transposed
      float rows[6 * KC];
      for (int64_t r = 0; r < 6; ++r) prologue_row(pro, X, ld, i0 + ip + r, k0, kc, rows + r * KC);
      pack_6_rows(rows, KC, kc, panel);
    } else if (rows_are_stored_rows) {  // each row of the panel is a contiguous run of a stored row
      for (int64_t r = 0; r < w; ++r) {
        const float* src = X + (i0 + ip + r) * ld + k0;
        if (pro.kind != GemmPrologue::none) {
          prologue_row(pro, X, ld, i0 + ip + r, k0, kc, tmp);
          src = tmp;
        }
        for (int64_t k = 0; k < kc; ++k) panel[k * W + r] = src[k];
      }
    } else if (pro.kind == GemmPrologue::none && w == W) {  // the common case, with fixed-size copies
      for (int64_t k = 0; k < kc; ++k) std::memcpy(panel + k * W, X + (k0 + k) * ld + i0 + ip, W * sizeof(float));
    } else if (w == W) {  // each k is a contiguous run of a stored row, written where it goes
      for (int64_t k = 0; k < kc; ++k) prologue_row(pro, X, ld, k0 + k, i0 + ip, W, panel + k * W);
    } else {  // the same for a last panel of fewer rows
      for (int64_t k = 0; k < kc; ++k) {
        prologue_row(pro, X, ld, k0 + k, i0 + ip, w, tmp);
        std::memcpy(panel + k * W, tmp, w * sizeof(float));
      }
    }
    for (int64_t r = w; r < W; ++r)
      for (int64_t k = 0; k < kc; ++k) panel[k * W + r] = 0.0f;
  }
}

// The same loops for Tile6x32 (kWide), compiled for AVX-512 so that they vectorize 512 bits wide, as its
// epilogue's do (epilogue_tile); each element gets the same operations either way, so the bits do not change.
// Most of the work is a prologue's: GELU's erf in fc2's A panels (forward) and B panels (its weight gradient),
// layer norm in those of qkv and fc1.
template <int64_t W>
__attribute__((target("avx512f"), noinline)) void pack_wide(const float* X, int64_t ld, bool rows_are_stored_rows,
                                                           const GemmPrologue& pro, int64_t i0, int64_t mc,
                                                           int64_t k0, int64_t kc, float* dst) {
  pack_body<W>(X, ld, rows_are_stored_rows, pro, i0, mc, k0, kc, dst);
}
template <int64_t W, bool kWide>
void pack(const float* X, int64_t ld, bool rows_are_stored_rows, const GemmPrologue& pro, int64_t i0, int64_t mc,
          int64_t k0, int64_t kc, float* dst) {
  if constexpr (kWide) pack_wide<W>(X, ld, rows_are_stored_rows, pro, i0, mc, k0, kc, dst);
  else pack_body<W>(X, ld, rows_are_stored_rows, pro, i0, mc, k0, kc, dst);
}

// Where the micro-kernel reads A: element (row r, k) of its 6-row panel at a[r rs + k ks]. A packed panel is
// rs = 1, ks = 6; an operand read in place (no prologue) is its stored layout: rs = lda, ks = 1 for A, or
// rs = 1, ks = lda for a transposed A (a weight gradient's dy^T). The values and their order are the same either
// way, so the tile's bits are too.
struct ARows {
  int64_t rs = 1, ks = MR;
};

// gelu'(x) of an MR x W tile (row stride ld) into g (row stride W), by epilogue_rows's loop on each row, so each
// value has the same bits.
template <int64_t W>
__attribute__((always_inline)) inline void gelu_grad_tile(const float* x, int64_t ld, float* g) {
  for (int64_t r = 0; r < MR; ++r)
    SPDLAB_SIMD for (int64_t j = 0; j < W; ++j) g[r * W + j] = gelu_exact_grad(x[r * ld + j]);
}

// C[0..6)[0..16) (ldc) = (add ? C + : ) sum_k a[k][0..6) b[k][0..16), each row's sum fused multiply-adds in k order;
// then, where given, + bias[0..16), x gelu'(gg[0..6)[0..16)) and + res[0..6)[0..16) (both ldc), the epilogue's steps
// in epilogue_at's order, done before the tile is stored: reading the tile back from memory just after storing it
// stalls.
// 12 ymm accumulators keep two 256-bit FMA units busy: 32 flops a cycle, half of what Tile6x32 gets from CPUs
// whose two FMA units are 512 bits wide (Zen 5, Xeons with two).
struct Tile6x16 {
  static constexpr int64_t NR = 16;
  static constexpr bool kWide = false;  // pack's loops at 256 bits
  template <bool kInPlace = false>
  static void micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool add,
                    const float* bias = nullptr, const float* gg = nullptr, const float* res = nullptr,
                    ARows ar = {}) {
    const int64_t rs = kInPlace ? ar.rs : 1, ks = kInPlace ? ar.ks : MR;
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k = 0; k < kc; ++k) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
      __m256 x = _mm256_broadcast_ss(a + 0);
      c00 = _mm256_fmadd_ps(x, b0, c00);
      c01 = _mm256_fmadd_ps(x, b1, c01);
      x = _mm256_broadcast_ss(a + 1 * rs);
      c10 = _mm256_fmadd_ps(x, b0, c10);
      c11 = _mm256_fmadd_ps(x, b1, c11);
      x = _mm256_broadcast_ss(a + 2 * rs);
      c20 = _mm256_fmadd_ps(x, b0, c20);
      c21 = _mm256_fmadd_ps(x, b1, c21);
      x = _mm256_broadcast_ss(a + 3 * rs);
      c30 = _mm256_fmadd_ps(x, b0, c30);
      c31 = _mm256_fmadd_ps(x, b1, c31);
      x = _mm256_broadcast_ss(a + 4 * rs);
      c40 = _mm256_fmadd_ps(x, b0, c40);
      c41 = _mm256_fmadd_ps(x, b1, c41);
      x = _mm256_broadcast_ss(a + 5 * rs);
      c50 = _mm256_fmadd_ps(x, b0, c50);
      c51 = _mm256_fmadd_ps(x, b1, c51);
      a += ks;
      b += NR;
    }
    alignas(64) float grad[MR * NR];  // gelu'(gg), the whole tile's at once
    if (gg) gelu_grad_tile<NR>(gg, ldc, grad);
    auto put = [&](int64_t r, __m256 lo, __m256 hi) {
      float* row = c + r * ldc;
      if (add) {
        lo = _mm256_add_ps(_mm256_loadu_ps(row), lo);
        hi = _mm256_add_ps(_mm256_loadu_ps(row + 8), hi);
      }
      if (bias) {
        lo = _mm256_add_ps(lo, _mm256_loadu_ps(bias));
        hi = _mm256_add_ps(hi, _mm256_loadu_ps(bias + 8));
      }
      if (gg) {
        const float* g = grad + r * NR;
        lo = _mm256_mul_ps(lo, _mm256_load_ps(g));
        hi = _mm256_mul_ps(hi, _mm256_load_ps(g + 8));
      }
      if (res) {
        const float* x = res + r * ldc;
        lo = _mm256_add_ps(lo, _mm256_loadu_ps(x));
        hi = _mm256_add_ps(hi, _mm256_loadu_ps(x + 8));
      }
      _mm256_storeu_ps(row, lo);
      _mm256_storeu_ps(row + 8, hi);
    };
    put(0, c00, c01);
    put(1, c10, c11);
    put(2, c20, c21);
    put(3, c30, c31);
    put(4, c40, c41);
    put(5, c50, c51);
  }
};

// The same tile 32 columns wide in 12 zmm accumulators, for CPUs with AVX-512 (compiled for it here, called
// only when the CPU has it: sgemm_impl). Each element's sum is the one Tile6x16 computes, in the same order, so
// the two agree bit for bit; on a CPU with two 512-bit FMA units it does twice the work a cycle.
struct Tile6x32 {
  static constexpr int64_t NR = 32;
  static constexpr bool kWide = true;  // pack's loops at 512 bits (pack_wide)
  template <bool kInPlace = false>
  __attribute__((target("avx512f"), noinline)) static void micro(int64_t kc, const float* a, const float* b,
                                                                  float* c, int64_t ldc, bool add,
                                                                  const float* bias = nullptr,
                                                                  const float* gg = nullptr,
                                                                  const float* res = nullptr, ARows ar = {}) {
    const int64_t rs = kInPlace ? ar.rs : 1, ks = kInPlace ? ar.ks : MR;
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k = 0; k < kc; ++k) {
      const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
      __m512 x = _mm512_set1_ps(a[0]);
      c00 = _mm512_fmadd_ps(x, b0, c00);
      c01 = _mm512_fmadd_ps(x, b1, c01);
      x = _mm512_set1_ps(a[1 * rs]);
      c10 = _mm512_fmadd_ps(x, b0, c10);
      c11 = _mm512_fmadd_ps(x, b1, c11);
      x = _mm512_set1_ps(a[2 * rs]);
      c20 = _mm512_fmadd_ps(x, b0, c20);
      c21 = _mm512_fmadd_ps(x, b1, c21);
      x = _mm512_set1_ps(a[3 * rs]);
      c30 = _mm512_fmadd_ps(x, b0, c30);
      c31 = _mm512_fmadd_ps(x, b1, c31);
      x = _mm512_set1_ps(a[4 * rs]);
      c40 = _mm512_fmadd_ps(x, b0, c40);
      c41 = _mm512_fmadd_ps(x, b1, c41);
      x = _mm512_set1_ps(a[5 * rs]);
      c50 = _mm512_fmadd_ps(x, b0, c50);
      c51 = _mm512_fmadd_ps(x, b1, c51);
      a += ks;
      b += NR;
    }
    alignas(64) float grad[MR * NR];  // gelu'(gg), the whole tile's at once
    if (gg) gelu_grad_tile<NR>(gg, ldc, grad);
    auto put = [&](int64_t r, __m512 lo, __m512 hi) __attribute__((target("avx512f"), always_inline)) {
      float* row = c + r * ldc;
      if (add) {
        lo = _mm512_add_ps(_mm512_loadu_ps(row), lo);
        hi = _mm512_add_ps(_mm512_loadu_ps(row + 16), hi);
      }
      if (bias) {
        lo = _mm512_add_ps(lo, _mm512_loadu_ps(bias));
        hi = _mm512_add_ps(hi, _mm512_loadu_ps(bias + 16));
      }
      if (gg) {
        const float* g = grad + r * NR;
        lo = _mm512_mul_ps(lo, _mm512_load_ps(g));
        hi = _mm512_mul_ps(hi, _mm512_load_ps(g + 16));
      }
      if (res) {
        const float* x = res + r * ldc;
        lo = _mm512_add_ps(lo, _mm512_loadu_ps(x));
        hi = _mm512_add_ps(hi, _mm512_loadu_ps(x + 16));
      }
      _mm512_storeu_ps(row, lo);
      _mm512_storeu_ps(row + 16, hi);
    };
    put(0, c00, c01);
    put(1, c10, c11);
    put(2, c20, c21);
    put(3, c30, c31);
    put(4, c40, c41);
    put(5, c50, c51);
  }
};

// Asks for the cache lines of an m x n tile (row stride ld) to be brought into L1.
inline void prefetch_tile(const float* p, int64_t ld, int64_t m, int64_t n) {
  for (int64_t r = 0; r < m; ++r) {
    const char* row = reinterpret_cast<const char*>(p + r * ld);
    for (int64_t j = 0; j < n; j += 16) _mm_prefetch(row + 4 * j, _MM_HINT_T0);
    _mm_prefetch(row + 4 * (n - 1), _MM_HINT_T0);  // the last line, when the row starts mid-line
  }
}

// A tile of m <= 6 rows and n <= NR columns: the micro-kernel into a full tile, then the valid part, with the
// same additions, so edge tiles round as the interior does.
template <class Tile, bool kInPlace = false>
void micro_edge(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool add, int64_t m, int64_t n,
                ARows ar = {}) {
  alignas(64) float t[MR * Tile::NR];
  Tile::template micro<kInPlace>(kc, a, b, t, Tile::NR, false, nullptr, nullptr, nullptr, ar);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < n; ++j) c[r * ldc + j] = add ? c[r * ldc + j] + t[r * Tile::NR + j] : t[r * Tile::NR + j];
}

// The epilogue of a finished m x n tile at (i0, j0), element by element as epilogue_at orders it. The loops
// vectorize to the register width they are compiled for; Tile6x32 runs them 512 bits wide (epilogue_tile below):
// each element gets the same operations either way, so the bits do not change.
__attribute__((always_inline)) inline void epilogue_rows(const GemmEx& ex, float* c, int64_t ldc, int64_t i0,
                                                         int64_t j0, int64_t m, int64_t n) {
  const float* bias = static_cast<const float*>(ex.bias);
  const float* aux = static_cast<const float*>(ex.gelu_grad);
  const float* res = static_cast<const float*>(ex.residual);
  for (int64_t r = 0; r < m; ++r) {
    float* row = c + (i0 + r) * ldc + j0;
    if (bias) SPDLAB_SIMD for (int64_t j = 0; j < n; ++j) row[j] = row[j] + bias[j0 + j];
    if (aux) {
      const float* x = aux + (i0 + r) * ldc + j0;
      SPDLAB_SIMD for (int64_t j = 0; j < n; ++j) row[j] = row[j] * gelu_exact_grad(x[j]);
    }
    if (res) {
      const float* x = res + (i0 + r) * ldc + j0;
      SPDLAB_SIMD for (int64_t j = 0; j < n; ++j) row[j] = row[j] + x[j];
    }
  }
}
template <class Tile>
void epilogue_tile(const GemmEx& ex, float* c, int64_t ldc, int64_t i0, int64_t j0, int64_t m, int64_t n) {
  epilogue_rows(ex, c, ldc, i0, j0, m, n);
}
// Edge tiles only: a whole tile's epilogue, GELU's derivative (fc2's input gradient) included, is done in the
// micro-kernel's stores. When every tile's gelu' came here, this function took 5.3% of a vit-fmnist training
// step's samples at 256 bits and 3.6% at 512 (training 1.026x as fast at 512); in the stores, fc2's backward group
// takes 0.962x the time (bench/README.md).
template <>
__attribute__((target("avx512f"), noinline)) void epilogue_tile<Tile6x32>(const GemmEx& ex, float* c, int64_t ldc,
                                                                          int64_t i0, int64_t j0, int64_t m,
                                                                          int64_t n) {
  epilogue_rows(ex, c, ldc, i0, j0, m, n);
}

// How one product is cut: row blocks x ranges of B's panels (tasks), K blocks packed a phase at a time; then the
// two steps every schedule runs, packing one (K block, panel) pair of B and computing one task over a phase's K
// blocks. `threads` is how many will share each phase, `min_blocks` the fewest row blocks wanted (a group's
// products are cut finer, so that a thread done with its own product can take part of another's: sgemm_group).
template <class Tile>
struct Plan {
  static constexpr int64_t NR = Tile::NR;
  bool ta, tb;
  int64_t M, N, K;
  const float* A;
  int64_t lda;
  const float* B;
  int64_t ldb;
  float* C;
  int64_t ldc;
  GemmEx ex;  // with its statistics (with_statistics)
  bool epi, in_place;
  int64_t panels, npad, kblocks, mb, chunks, tasks, phase;

  // c's M, N and K are nonzero here (sgemm_tiled handles empty products).
  Plan(const kernels::Kernels::GemmExCall& c, int threads, int64_t min_blocks = 1)
      : ta(c.trans_a), tb(c.trans_b), M(c.M), N(c.N), K(c.K), A(static_cast<const float*>(c.A)), lda(c.lda),
        B(static_cast<const float*>(c.B)), ldb(c.ldb), C(static_cast<float*>(c.C)), ldc(c.ldc), ex(c.ex) {
    epi = ex.bias || ex.gelu_grad || ex.residual;
    panels = (N + NR - 1) / NR;
    npad = panels * NR;
    kblocks = (K + KC - 1) / KC;
    const bool parallel = threads > 1;
    // Row blocks of at most MC rows, equal to within one tile, so no thread is left with a short last block; with
    // rows enough for two tiles per thread, as many blocks as a multiple of the threads, so each thread gets the
    // same share of rows and B's panels need no splitting (a split packs A's block once per part).
    int64_t mblocks = std::max((M + MC - 1) / MC, std::min(min_blocks, (M + 2 * MR - 1) / (2 * MR)));
    const bool rows_suffice = parallel && M >= 2 * MR * threads;
    if (rows_suffice) mblocks = (mblocks + threads - 1) / threads * threads;
    mb = ((M + mblocks - 1) / mblocks + MR - 1) / MR * MR;
    mblocks = (M + mb - 1) / mb;
    // Work items: a block of rows x a range of B's panels; enough of them to keep every thread busy.
    chunks = !parallel || rows_suffice ? 1 : std::min<int64_t>(panels, (4 * threads + mblocks - 1) / mblocks);
    tasks = mblocks * chunks;
    // K blocks are packed a phase at a time (about 4 MB of B), so a deep product (a weight gradient over every
    // token) waits at a barrier once per phase rather than once per block.
    phase = std::max<int64_t>(1, std::min(kblocks, (int64_t(1) << 20) / (KC * npad)));
    // A without a prologue is read where it lies (ARows) rather than packed, except a transposed A against many
    // panels of B: read in place it costs a cache line per k for 6 of its floats, which packing pays once for
    // every panel. One-thread runs of each product, alternating, packed -> in place: an input gradient
    // (6400 x 192 x 576) 171 -> 185 GFLOP/s, a weight gradient at N = 192 (768 x 192 x 6400) 149 -> 161, but at
    // N = 768 (192 x 768 x 6400) 155 -> 139; vit-fmnist training 287 -> 299 img/s (bench/README.md).
    in_place = ex.a.kind == GemmPrologue::none && (!ta || N <= 384);
  }
  size_t b_floats() const { return static_cast<size_t>(phase) * KC * npad; }  // block kb at (kb % phase) KC npad
  // B is packed in (K block, group of up to kGroup panels) pieces: a stored row of B read a group's width at a
  // time (pack_body), rather than NR floats of it per panel.
  static constexpr int64_t kGroup = KC / NR;
  int64_t groups() const { return (panels + kGroup - 1) / kGroup; }
  int64_t b_tasks(int64_t kb0) const { return (std::min(kblocks, kb0 + phase) - kb0) * groups(); }

  void pack_b(int64_t kb0, float* bp, int64_t t) const {  // one (block, group of panels) pair of the phase at kb0
    const int64_t kb = kb0 + t / groups(), jp = t % groups() * kGroup, k0 = kb * KC, kc = std::min(KC, K - k0);
    const int64_t j0 = jp * NR;
    pack<NR, Tile::kWide>(B, ldb, tb, ex.b, j0, std::min(kGroup * NR, N - j0), k0, kc,
                          bp + (kb - kb0) * KC * npad + jp * kc * NR);
  }

  // Task t of the phase at kb0: its rows of A packed (or read in place) and multiplied by the phase's packed B,
  // K block by K block in order (the order every element's sum follows).
  void task(int64_t kb0, const float* bp, int64_t t) const {
    const int64_t kb1 = std::min(kblocks, kb0 + phase);
    const int64_t ib = t / chunks, jc = t % chunks;
    const int64_t i0 = ib * mb, mc = std::min(mb, M - i0);
    const int64_t p0 = panels * jc / chunks, p1 = panels * (jc + 1) / chunks;
    float* ap = tl_a.get(static_cast<size_t>(MC) * KC + 8);  // + room for pack_6_rows's last store
    for (int64_t kb = kb0; kb < kb1; ++kb) {
      const int64_t k0 = kb * KC, kc = std::min(KC, K - k0);
      const bool add = kb > 0 || ex.accumulate, last = kb == kblocks - 1;
      // Read in place, A's full panels need no copy; a last panel of fewer rows is packed (zero-padded).
      const int64_t full = in_place ? mc / MR * MR : 0;
      if (full < mc) pack<MR, Tile::kWide>(A, lda, !ta, ex.a, i0 + full, mc - full, k0, kc, ap);
      for (int64_t jp = p0; jp < p1; ++jp) {
        const float* bpanel = bp + (kb - kb0) * KC * npad + jp * kc * NR;
        const int64_t j0 = jp * NR, n = std::min(NR, N - j0);
        for (int64_t ip = 0; ip < mc; ip += MR) {
          const int64_t m = std::min(MR, mc - ip);
          float* c = C + (i0 + ip) * ldc + j0;
          // What the tile's stores read besides A and B (C's partial sums, gelu'(h)'s h, the residual) lies
          // outside L1, often in memory: asked for now, it arrives while the micro-kernel runs (vit-fmnist
          // training 259 -> 312 img/s). C's lines are asked for even when the tile only writes them: a store
          // that misses fetches its line all the same, and a product whose C is larger than L3 (fc1 forward's
          // 6400 x 768) waited for those fetches at every tile (Zen 2, 1 thread: fc1 forward 72 -> 85% of the
          // peak, qkv forward and fc2's input gradient likewise; prefetchw instead of prefetcht0: no different).
          prefetch_tile(c, ldc, m, n);
          if (last && (ex.gelu_grad || ex.residual))
            prefetch_tile(static_cast<const float*>(ex.gelu_grad ? ex.gelu_grad : ex.residual) + (c - C), ldc, m, n);
          // Rows [ip, ip + 6) in place or packed; a whole tile's epilogue is done as it is stored (an edge
          // tile's after: epilogue_tile).
          const bool here = ip < full, fused = m == MR && n == NR && last;
          const float* a = !here ? ap + (ip - full) * kc : ta ? A + k0 * lda + i0 + ip : A + (i0 + ip) * lda + k0;
          const ARows ar = !here ? ARows{} : ta ? ARows{1, lda} : ARows{lda, 1};
          const float* bias = fused && ex.bias ? static_cast<const float*>(ex.bias) + j0 : nullptr;
          const float* gg = fused && ex.gelu_grad ? static_cast<const float*>(ex.gelu_grad) + (c - C) : nullptr;
          const float* res = fused && ex.residual ? static_cast<const float*>(ex.residual) + (c - C) : nullptr;
          if (m == MR && n == NR) {
            if (here) Tile::template micro<true>(kc, a, bpanel, c, ldc, add, bias, gg, res, ar);
            else Tile::micro(kc, a, bpanel, c, ldc, add, bias, gg, res);
          } else if (here) {
            micro_edge<Tile, true>(kc, a, bpanel, c, ldc, add, m, n, ar);
          } else {
            micro_edge<Tile>(kc, a, bpanel, c, ldc, add, m, n);
          }
          if (last && epi && !fused) epilogue_tile<Tile>(ex, C, ldc, i0 + ip, j0, m, n);
        }
      }
    }
  }
};

// C of an empty product (M, N or K zero): false when there is a product to compute.
template <class Tile>
bool sgemm_empty(int64_t M, int64_t N, int64_t K, float* C, int64_t ldc, const GemmEx& ex) {
  if (M == 0 || N == 0) return true;
  if (K != 0) return false;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = ex.accumulate ? C[i * ldc + j] : 0.0f;
  if (ex.bias || ex.gelu_grad || ex.residual) epilogue_tile<Tile>(ex, C, ldc, 0, 0, M, N);
  return true;
}

// A weight gradient dy^T x with more outputs than inputs (fc1's 768 x 192, qkv's 576 x 192, over 6400 tokens) is
// computed as its transpose x^T dy into a buffer, then copied back transposed. Its row blocks of A are then
// reused across 3-4x the panels of B: on a Zen 2 at 1 thread, matmul_bench's 768 x 192 x 6400 ran at
// 67-76% of the peak and its transpose, 192 x 768 x 6400, at 85-87%. Each element's sum is the same fused
// multiply-adds in the same order (a b and b a are the same product), so the bits are too. Only without an
// epilogue (a weight gradient has none) and for C += through a first copy of C into the buffer.
inline bool computed_transposed(const kernels::Kernels::GemmExCall& c) {
  return c.trans_a && !c.trans_b && c.M > c.N && c.N > 0 && c.K > 0 && !c.ex.bias && !c.ex.gelu_grad &&
         !c.ex.residual;
}
// dst[j][i] = src[i][j] for i in [r0, r1), j < cols (8 x 8 blocks in registers, the edges one by one).
inline void transpose_rows(const float* src, int64_t lds, int64_t cols, float* dst, int64_t ldd, int64_t r0,
                           int64_t r1) {
  int64_t i = r0;
  for (; i + 8 <= r1; i += 8) {
    int64_t j = 0;
    for (; j + 8 <= cols; j += 8) {
      __m256 v[8];
      for (int r = 0; r < 8; ++r) v[r] = _mm256_loadu_ps(src + (i + r) * lds + j);
      transpose_8x8(v);
      for (int r = 0; r < 8; ++r) _mm256_storeu_ps(dst + (j + r) * ldd + i, v[r]);
    }
    for (; j < cols; ++j)
      for (int64_t r = 0; r < 8; ++r) dst[j * ldd + i + r] = src[(i + r) * lds + j];
  }
  for (; i < r1; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
}
// The same over every row, on `threads` threads.
inline void transpose(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd,
                      int threads) {
  if (threads > 1) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < threads; ++t)
      transpose_rows(src, lds, cols, dst, ldd, rows * t / threads / 8 * 8,
                     t + 1 == threads ? rows : rows * (t + 1) / threads / 8 * 8);
  } else {
    transpose_rows(src, lds, cols, dst, ldd, 0, rows);
  }
}
// The call for C^T = op(B)^T op(A)^T = B^T A into buf (N x M): B, stored K x N, is read transposed, A (K x M) as
// it lies; each operand keeps its prologue. For C +=, C^T is copied into buf first (on `threads` threads).
inline kernels::Kernels::GemmExCall transposed_call(const kernels::Kernels::GemmExCall& c, Buffer& buf,
                                                     int threads) {
  float* T = buf.get(static_cast<size_t>(c.M) * c.N);
  if (c.ex.accumulate) transpose(static_cast<const float*>(c.C), c.ldc, c.M, c.N, T, c.M, threads);
  kernels::Kernels::GemmExCall t = c;
  t.trans_a = true;
  t.trans_b = false;
  t.M = c.N;
  t.N = c.M;
  t.A = c.B;
  t.lda = c.ldb;
  t.B = c.A;
  t.ldb = c.lda;
  t.C = T;
  t.ldc = c.M;
  t.ex.a = c.ex.b;
  t.ex.b = c.ex.a;
  return t;
}
// The transposed result in T (ld M) copied back into c's C, on `threads` threads.
inline void copy_back(const kernels::Kernels::GemmExCall& c, const float* T, int threads) {
  transpose(T, c.M, c.N, c.M, static_cast<float*>(c.C), c.ldc, threads);
}

template <class Tile>
void sgemm_tiled(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float* C, int64_t ldc, const GemmEx& ex_in) {
  if (const kernels::Kernels::GemmExCall c{ta, tb, M, N, K, A, lda, B, ldb, C, ldc, ex_in};
      computed_transposed(c)) {
    const int threads = omp_in_parallel() ? 1 : get_num_threads();
    const kernels::Kernels::GemmExCall t = transposed_call(c, tl_t, threads);
    float* T = static_cast<float*>(t.C);
    sgemm_tiled<Tile>(t.trans_a, t.trans_b, t.M, t.N, t.K, static_cast<const float*>(t.A), t.lda,
                      static_cast<const float*>(t.B), t.ldb, T, t.ldc, t.ex);
    copy_back(c, T, threads);
    return;
  }
  const GemmEx ex = with_statistics(ex_in, ta, tb, M, N, K, A, lda, B, ldb);  // also for an empty C
  if (sgemm_empty<Tile>(M, N, K, C, ldc, ex)) return;
  const int omp_threads = omp_in_parallel() ? 1 : get_num_threads();
  const int threads = omp_threads > 1 && M * N * K >= (int64_t(1) << 20) ? omp_threads : 1;
  const Plan<Tile> p({ta, tb, M, N, K, A, lda, B, ldb, C, ldc, ex}, threads);
  float* bp = tl_b.get(p.b_floats());
  // In a phase, B's panels are packed, then the row blocks of A are packed and multiplied by them, both spread
  // over the threads.
  for (int64_t kb0 = 0; kb0 < p.kblocks; kb0 += p.phase) {
    const int64_t btasks = p.b_tasks(kb0);
    if (threads > 1) {
#pragma omp parallel num_threads(threads)
      {
#pragma omp for schedule(static)
        for (int64_t t = 0; t < btasks; ++t) p.pack_b(kb0, bp, t);
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < p.tasks; ++t) p.task(kb0, bp, t);
      }
    } else {
      for (int64_t t = 0; t < btasks; ++t) p.pack_b(kb0, bp, t);
      for (int64_t t = 0; t < p.tasks; ++t) p.task(kb0, bp, t);
    }
  }
}

// Independent products, one per thread (n == the thread count), each computed as sgemm_tiled computes it on one
// thread, and so with its bits. A thread done with its own product takes `sums` (once, when has_sums), then
// tasks of the products still running: each owner packs a phase of its B into its own buffer, publishes it,
// claims the phase's tasks one at a time with the helpers, and waits for every claimed task before packing the
// next phase over it. A task writes its own rows of C only, in the same K order, so who runs it changes no bit.
// Each product is cut into at least 4 row blocks, so the helper's share can be small (group_bench's four groups:
// 61.0, 61.1 and 61.8 ms with at least 2, 4 and 8 blocks, 61.5 with sgemm_tiled's own; a block re-reads the
// phase's packed B, 4 MB in a deep product, so many more blocks cost). With whole products per thread, the first thread
// to finish waited for the other: libgomp took 4.4% of a vit-fmnist training step's samples, now 1.5% (plus
// 0.5% waiting here); bench/README.md has the times.
template <class Tile, class Sums>
void sgemm_group(const kernels::Kernels::GemmExCall* c, int64_t n, bool has_sums, const Sums& sums) {
  struct alignas(64) Slot {
    std::atomic<uint64_t> state{0};  // (phase + 1) << 32 | next task; 0 before the first phase, kFinished after
    std::atomic<int64_t> done{0};    // tasks of the current phase finished
    const float* bp = nullptr;       // the owner's packed B, set before the first phase is published
  };
  constexpr uint64_t kFinished = ~uint64_t(0), kTaskMask = 0xffffffffu;
  // Products computed transposed (computed_transposed) go to buffers of their own, copied back by their owner.
  static thread_local std::deque<Buffer> tl_group_t;
  while (static_cast<int64_t>(tl_group_t.size()) < n) tl_group_t.emplace_back();
  std::vector<Plan<Tile>> plans;
  plans.reserve(n);
  for (int64_t i = 0; i < n; ++i)
    plans.emplace_back(computed_transposed(c[i]) ? transposed_call(c[i], tl_group_t[i], 1) : c[i], 1,
                       /*min_blocks=*/4);
  std::unique_ptr<Slot[]> slots(new Slot[n]);
  std::atomic<bool> sums_taken{!has_sums};

  auto own = [&](int64_t i) {
    const Plan<Tile>& p = plans[i];
    Slot& s = slots[i];
    float* bp = tl_b.get(p.b_floats());
    s.bp = bp;
    for (int64_t kb0 = 0, ph = 1; kb0 < p.kblocks; kb0 += p.phase, ++ph) {
      for (int64_t t = 0, bt = p.b_tasks(kb0); t < bt; ++t) p.pack_b(kb0, bp, t);
      s.done.store(0, std::memory_order_relaxed);  // no task of the last phase is left to count
      s.state.store(uint64_t(ph) << 32, std::memory_order_release);
      for (;;) {
        const int64_t t = static_cast<int64_t>(s.state.fetch_add(1, std::memory_order_acq_rel) & kTaskMask);
        if (t >= p.tasks) break;
        p.task(kb0, bp, t);
        s.done.fetch_add(1, std::memory_order_release);
      }
      while (s.done.load(std::memory_order_acquire) < p.tasks) _mm_pause();  // a helper's last task
    }
    if (computed_transposed(c[i])) copy_back(c[i], p.C, 1);
    s.state.store(kFinished, std::memory_order_release);
  };
  // One task of product j's current phase, if one is free; false otherwise.
  auto help = [&](int64_t j) {
    const Plan<Tile>& p = plans[j];
    Slot& s = slots[j];
    uint64_t v = s.state.load(std::memory_order_acquire);
    do {
      if (v == kFinished || (v >> 32) == 0 || static_cast<int64_t>(v & kTaskMask) >= p.tasks) return false;
    } while (!s.state.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire));
    p.task(static_cast<int64_t>((v >> 32) - 1) * p.phase, s.bp, static_cast<int64_t>(v & kTaskMask));
    s.done.fetch_add(1, std::memory_order_release);
    return true;
  };

#pragma omp parallel num_threads(static_cast<int>(n))
  {
    const int64_t i = omp_get_thread_num();
    // Every product has an owner even if OpenMP gave fewer threads than asked: a helper waits for owners.
    for (int64_t j = i; j < n; j += omp_get_num_threads()) own(j);
    if (!sums_taken.exchange(true)) sums();
    for (bool running = true; running;) {
      running = false;
      bool ran = false;
      for (int64_t d = 1; d < n; ++d) {
        const int64_t j = (i + d) % n;
        if (slots[j].state.load(std::memory_order_acquire) == kFinished) continue;
        running = true;
        ran = help(j) || ran;
      }
      if (running && !ran) _mm_pause();  // the owner is packing its next phase
    }
  }
}

}  // namespace sgemm_detail

// The tile SPDLAB_CPU_ISA chose (kernels/cpu/cpu_kernels.cpp): 6x32 under avx512, 6x16 under avx2.
void sgemm_impl(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                int64_t ldb, float* C, int64_t ldc, const GemmEx& ex) {
  if (wide_kernels())
    return sgemm_detail::sgemm_tiled<sgemm_detail::Tile6x32>(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, ex);
  sgemm_detail::sgemm_tiled<sgemm_detail::Tile6x16>(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, ex);
}
// n products on n threads (sgemm_group), or false when that does not apply: fewer threads than products, or a
// product that is empty or computes layer-norm statistics (sgemm_tiled handles those). sums() runs once when
// has_sums.
template <class Sums>
bool sgemm_group_impl(const kernels::Kernels::GemmExCall* c, int64_t n, bool has_sums, const Sums& sums) {
  if (n < 2 || n != get_num_threads() || omp_in_parallel()) return false;
  for (int64_t i = 0; i < n; ++i)
    if (c[i].M == 0 || c[i].N == 0 || c[i].K == 0 || c[i].ex.a.mean_out || c[i].ex.b.mean_out) return false;
  if (wide_kernels()) sgemm_detail::sgemm_group<sgemm_detail::Tile6x32>(c, n, has_sums, sums);
  else sgemm_detail::sgemm_group<sgemm_detail::Tile6x16>(c, n, has_sums, sums);
  return true;
}
#endif  // SPDLAB_CPU_AVX2
