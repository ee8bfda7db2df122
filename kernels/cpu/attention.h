// Attention, one (batch, head) pair at a time. One body, attention_heads_fwd/bwd below, serves every path; what
// differs is where its products (of three kinds: A B, A B^T, A^T B) come from:
//   - BlasProducts<T>: OpenBLAS, for f64, for large heads, and for every head on CPUs without AVX2;
//   - SmallProducts (f32, AVX2's 256-bit registers or AVX-512's 512-bit ones): register-blocked kernels that keep
//     one head's operands in L1/L2.
// core/ops.h's attention_reference is the same computation as plain tensor ops (matmul, softmax, matmul), and
// tests/test_reference_paths.cpp checks this kernel against it.
#ifndef SPDLAB_CPU_VARIANT
#error "kernels/cpu/variant.h includes this file, inside an instruction set's namespace; include that instead"
#endif

// Per-thread scratch, reused across heads and steps: slot 0 for a transposed operand (SmallProducts), slot 1
// for the score gradients of the head being differentiated, slot 2 for its probabilities.
template <typename T>
T* head_scratch(size_t slot, size_t n) {
  thread_local std::vector<T> bufs[3];
  if (bufs[slot].size() < n) bufs[slot].resize(n);
  return bufs[slot].data();
}

// The products of one head, on row-major operands with the given leading dimensions:
//   ab:  C [m, n] = A [m, k] B [k, n]
//   abt: C [m, n] = A [m, k] B^T, B stored [n, k]
//   atb: C [m, n] = A^T B [k, n], A stored [k, m]
// and for_heads(n, work, f), which runs f(bh) for every head, each product of about `work` multiply-adds.
template <typename T>
struct BlasProducts {
  static void ab(int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                 int64_t ldc) {
    blas_gemm(false, false, m, n, k, T(1), A, lda, B, ldb, T(0), C, ldc);
  }
  static void abt(int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                  int64_t ldc) {
    blas_gemm(false, true, m, n, k, T(1), A, lda, B, ldb, T(0), C, ldc);
  }
  static void atb(int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                  int64_t ldc) {
    blas_gemm(true, false, m, n, k, T(1), A, lda, B, ldb, T(0), C, ldc);
  }
  // Small heads one per thread on single-threaded BLAS; large ones in turn, each on BLAS's threads.
  template <typename F>
  static void for_heads(int64_t n, int64_t work, F&& f) {
    run_pairs(n, work, f);
  }
};

// Asks for the n rows (d elements each) of head bh of an operand addressed by strides s (b, h, row) to be
// brought into L2, to be read (kWrite false) or written. A head's rows are a few hundred bytes each, thousands of
// bytes apart (q, k and v of one token lie in one row of the fused qkv), and the hardware's prefetchers do not
// run ahead of that: the heads' loop asks for the next head's operands while it computes this one's.
template <bool kWrite, typename T>
inline void prefetch_head(const T* X, const int64_t* s, int64_t bh, int64_t H, int64_t n, int64_t d) {
  const char* head = reinterpret_cast<const char*>(X + bh / H * s[0] + bh % H * s[1]);
  const int64_t bytes = d * static_cast<int64_t>(sizeof(T));
  for (int64_t r = 0; r < n; ++r) {
    const char* row = head + r * s[2] * static_cast<int64_t>(sizeof(T));
    for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(row + o, kWrite ? 1 : 0, 2);
    __builtin_prefetch(row + bytes - 1, kWrite ? 1 : 0, 2);  // the last line, when the row starts mid-line
  }
}

// out = softmax(scale q k^T) v for every head. What is kept for backward, in S (null when no backward follows):
// two numbers per query row, S [B, H, N, 2] (max and 1 / sum), then, where attention_keeps_probabilities, the
// probabilities P [B, H, N, M]. Other heads' probabilities live only in a per-thread buffer and backward
// recomputes them from the two numbers, bit for bit: a 197-token vit_tiny head would keep 155 KB, 7.4 MB per
// block at batch 16.
template <typename T, typename Products>
void attention_heads_fwd(int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, const T* Q, const int64_t* qs,
                         const T* K, const int64_t* ks, const T* V, const int64_t* vs, T* O, const int64_t* os, T* S,
                         double scale) {
  T* kept = S && attention_keeps_probabilities(N, M) ? S + B * H * N * 2 : nullptr;
  Products::for_heads(B * H, N * M * D, [&](int64_t bh) {
    const int64_t b = bh / H, h = bh % H;
    if (bh + 1 < B * H) {  // the next head's operands, while this one's are computed
      prefetch_head<false>(Q, qs, bh + 1, H, N, D);
      prefetch_head<false>(K, ks, bh + 1, H, M, D);
      prefetch_head<false>(V, vs, bh + 1, H, M, D);
      prefetch_head<true>(O, os, bh + 1, H, N, D);
    }
    T* p = kept ? kept + bh * N * M : head_scratch<T>(2, N * M);
    Products::abt(N, M, D, Q + b * qs[0] + h * qs[1], qs[2], K + b * ks[0] + h * ks[1], ks[2], p, M);  // q k^T
    softmax_fwd_t<T>(p, p, N, M, scale, false, S ? S + bh * N * 2 : nullptr);
    Products::ab(N, D, M, p, M, V + b * vs[0] + h * vs[1], vs[2], O + b * os[0] + h * os[1], os[2]);  // p v
  });
}

// p as forward kept it, or again from q, k and the saved stats; dv = p^T dout; dp = dout v^T;
// ds = scale * softmax'(p) dp; dq = ds k; dk = ds^T q.
template <typename T, typename Products>
void attention_heads_bwd(int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, const T* Q, const int64_t* qs,
                         const T* K, const int64_t* ks, const T* V, const int64_t* vs, const T* S, const T* dO,
                         const int64_t* ds, T* dQ, const int64_t* dqs, T* dK, const int64_t* dks, T* dV,
                         const int64_t* dvs, double scale) {
  const T* kept = attention_keeps_probabilities(N, M) ? S + B * H * N * 2 : nullptr;
  const int64_t kept_strides[3] = {H * N * M, N * M, M};  // P [B, H, N, M]
  Products::for_heads(B * H, N * M * D, [&](int64_t bh) {
    const int64_t b = bh / H, h = bh % H;
    const T* q = Q + b * qs[0] + h * qs[1];
    const T* k = K + b * ks[0] + h * ks[1];
    const T* v = V + b * vs[0] + h * vs[1];
    const T* dout = dO + b * ds[0] + h * ds[1];
    if (bh + 1 < B * H) {  // the next head's operands, while this one's are computed
      prefetch_head<false>(Q, qs, bh + 1, H, N, D);
      prefetch_head<false>(K, ks, bh + 1, H, M, D);
      prefetch_head<false>(V, vs, bh + 1, H, M, D);
      prefetch_head<false>(dO, ds, bh + 1, H, N, D);
      prefetch_head<true>(dQ, dqs, bh + 1, H, N, D);
      prefetch_head<true>(dK, dks, bh + 1, H, M, D);
      prefetch_head<true>(dV, dvs, bh + 1, H, M, D);
      if (kept) prefetch_head<false>(kept, kept_strides, bh + 1, H, N, M);  // written by forward long ago
    }
    const T* p = kept ? kept + bh * N * M : nullptr;
    if (!kept) {
      T* r = head_scratch<T>(2, N * M);
      Products::abt(N, M, D, q, qs[2], k, ks[2], r, M);  // as in forward, so p is forward's, bit for bit
      softmax_rows_replay<T>(r, N, M, scale, S + bh * N * 2);
      p = r;
    }
    T* dp = head_scratch<T>(1, N * M);
    Products::atb(M, D, N, p, M, dout, ds[2], dV + b * dvs[0] + h * dvs[1], dvs[2]);
    Products::abt(N, M, D, dout, ds[2], v, vs[2], dp, M);
    softmax_bwd_t<T>(p, dp, dp, N, M, scale, false);
    Products::ab(N, D, M, dp, M, k, ks[2], dQ + b * dqs[0] + h * dqs[1], dqs[2]);
    Products::atb(M, D, N, dp, M, q, qs[2], dK + b * dks[0] + h * dks[1], dks[2]);
  });
}

#if SPDLAB_CPU_AVX2
// ---- SmallProducts (AVX2, f32) ----
// OpenBLAS runs the small products of one head (197 x 197 x 64 in vit_tiny) at a third of its large-matrix
// rate: packing and call overhead dominate. Here each product is C = A B with A broadcast one element at a
// time and B read as rows of 16 floats, C held in registers for the whole inner dimension; the operands of
// one head stay in L1/L2. Sums run in a fixed order, so results do not depend on the thread count.

// C [R rows, n] = A [R, k] B [k, n]. A's element (r, kk) is at A[r * lda + kk * ak], so a transposed A
// costs nothing (each is a broadcast load); B and C are row-major, rows ldb and ldc apart.
template <int R>
void small_gemm_rows(int64_t n, int64_t k, const float* A, int64_t lda, int64_t ak, const float* B, int64_t ldb,
                     float* C, int64_t ldc) {
  alignas(32) static const int32_t kMaskSrc[32] = {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                                   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0};
  for (int64_t j = 0; j < n; j += 16) {
    const int64_t w = std::min<int64_t>(16, n - j);
    __m256 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    if (w == 16) {
      const float* a_k = A;  // A's column kk
      for (int64_t kk = 0; kk < k; ++kk, a_k += ak) {
        const float* b = B + kk * ldb + j;
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        for (int r = 0; r < R; ++r) {
          __m256 a = _mm256_broadcast_ss(a_k + r * lda);
          acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
          acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
        }
      }
      for (int r = 0; r < R; ++r) {
        _mm256_storeu_ps(C + r * ldc + j, acc[r][0]);
        _mm256_storeu_ps(C + r * ldc + j + 8, acc[r][1]);
      }
    } else {  // the last, narrower block of columns: masked loads read nothing past column n
      const __m256i m0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskSrc + 16 - w));
      const __m256i m1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskSrc + 24 - w));
      const float* a_k = A;  // A's column kk
      for (int64_t kk = 0; kk < k; ++kk, a_k += ak) {
        const float* b = B + kk * ldb + j;
        __m256 b0 = _mm256_maskload_ps(b, m0), b1 = _mm256_maskload_ps(b + 8, m1);
        for (int r = 0; r < R; ++r) {
          __m256 a = _mm256_broadcast_ss(a_k + r * lda);
          acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
          acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
        }
      }
      for (int r = 0; r < R; ++r) {
        _mm256_maskstore_ps(C + r * ldc + j, m0, acc[r][0]);
        _mm256_maskstore_ps(C + r * ldc + j + 8, m1, acc[r][1]);
      }
    }
  }
}

// R rows, w <= 8 columns of C in one 256-bit register a row, for the last columns of small_gemm_rows_wide: on
// CPUs that split a 512-bit multiply-add in two (Zen 4) it costs half of a 512-bit one. Loads and stores go
// through AVX-512's masks rather than AVX's vmaskmovps, whose stores AMD's cores run as microcode (a version
// with AVX's masked load and the stores through a buffer ran vit-fmnist's q k^T at 67.8-72.5 GFLOP/s against
// 74.2-85.9, Zen 4, one thread, 3 alternating runs).
// GCC 12's intrinsics for the 256 <-> 512-bit casts pass an undefined vector to a builtin and warn that it may
// be used uninitialized (GCC bug 105593); the casts leave the upper half undefined by design, and the masks
// never read or write it.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <int R>
__attribute__((target("avx512f"))) void small_gemm_rows_8(int64_t w, int64_t k, const float* A, int64_t lda,
                                                         int64_t ak, const float* B, int64_t ldb, float* C,
                                                         int64_t ldc) {
  const __mmask16 m = __mmask16((1u << w) - 1);
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  const float* a_k = A;  // A's column kk
  for (int64_t kk = 0; kk < k; ++kk, a_k += ak) {
    const __m256 b = _mm512_castps512_ps256(_mm512_maskz_loadu_ps(m, B + kk * ldb));
    for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(a_k + r * lda), b, acc[r]);
  }
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(C + r * ldc, m, _mm512_castps256_ps512(acc[r]));
}
#pragma GCC diagnostic pop

// The same rows 32 columns at a time in 512-bit registers, for CPUs with AVX-512 (called only there: small_gemm).
// Each element's sum is small_gemm_rows's, in the same order, so the bits are too. Full blocks run without masks
// (vit-fmnist's p v, 50 x 64 x 50, Zen 4, one thread: 98.7-99.1 -> 108.3-108.9 GFLOP/s). A last block of at most
// 8 columns takes one 256-bit register a row (small_gemm_rows_8) rather than two 512-bit ones; one of at most 24,
// one 512-bit register and at most one 256-bit one (vit-fmnist's 50 scores a row: 32 + 16 + 2); one of 25 to 31,
// a full 512-bit register and a masked one. The blocks stay in this one function: moved into helpers, their
// accumulator arrays were kept on the stack by GCC, all 12 stored at every k, at half the speed.
template <int R>
__attribute__((target("avx512f"))) void small_gemm_rows_wide(int64_t n, int64_t k, const float* A, int64_t lda,
                                                            int64_t ak, const float* B, int64_t ldb, float* C,
                                                            int64_t ldc) {
  for (int64_t j = 0; j < n; j += 32) {
    const int64_t w = std::min<int64_t>(32, n - j);
    if (w <= 8) {
      small_gemm_rows_8<R>(w, k, A, lda, ak, B + j, ldb, C + j, ldc);
      continue;
    }
    __m512 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    const float* a_k = A;  // A's column kk
    if (w == 32) {
      for (int64_t kk = 0; kk < k; ++kk, a_k += ak) {
        const float* b = B + kk * ldb + j;
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        for (int r = 0; r < R; ++r) {
          const __m512 a = _mm512_set1_ps(a_k[r * lda]);
          acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
        }
      }
      for (int r = 0; r < R; ++r) {
        _mm512_storeu_ps(C + r * ldc + j, acc[r][0]);
        _mm512_storeu_ps(C + r * ldc + j + 16, acc[r][1]);
      }
    } else if (w <= 24) {  // 16 columns, masked below 16; past 16, 8 more at 256 bits
      const __mmask16 m0 = w >= 16 ? 0xFFFF : __mmask16((1u << w) - 1);
      for (int64_t kk = 0; kk < k; ++kk, a_k += ak) {
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, B + kk * ldb + j);
        for (int r = 0; r < R; ++r) acc[r][0] = _mm512_fmadd_ps(_mm512_set1_ps(a_k[r * lda]), b0, acc[r][0]);
      }
      for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(C + r * ldc + j, m0, acc[r][0]);
      if (w > 16) small_gemm_rows_8<R>(w - 16, k, A, lda, ak, B + j + 16, ldb, C + j + 16, ldc);
    } else {  // 16 columns, then 9 to 15 more through a mask
      const __mmask16 m1 = __mmask16((1u << (w - 16)) - 1);
      for (int64_t kk = 0; kk < k; ++kk, a_k += ak) {
        const float* b = B + kk * ldb + j;
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_maskz_loadu_ps(m1, b + 16);
        for (int r = 0; r < R; ++r) {
          const __m512 a = _mm512_set1_ps(a_k[r * lda]);
          acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
        }
      }
      for (int r = 0; r < R; ++r) {
        _mm512_storeu_ps(C + r * ldc + j, acc[r][0]);
        _mm512_mask_storeu_ps(C + r * ldc + j + 16, m1, acc[r][1]);
      }
    }
  }
}

// C [m, n] = A [m, k] B [k, n], six rows of C at a time; A strided as in small_gemm_rows; in 512-bit registers
// when kWide.
template <bool kWide>
void small_gemm_t(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, int64_t ak, const float* B,
                  int64_t ldb, float* C, int64_t ldc) {
  auto rows = [&](auto r, int64_t i) {
    constexpr int R = decltype(r)::value;
    if constexpr (kWide) small_gemm_rows_wide<R>(n, k, A + i * lda, lda, ak, B, ldb, C + i * ldc, ldc);
    else small_gemm_rows<R>(n, k, A + i * lda, lda, ak, B, ldb, C + i * ldc, ldc);
  };
  int64_t i = 0;
  for (; i + 6 <= m; i += 6) rows(std::integral_constant<int, 6>{}, i);
  switch (m - i) {
    case 5: rows(std::integral_constant<int, 5>{}, i); break;
    case 4: rows(std::integral_constant<int, 4>{}, i); break;
    case 3: rows(std::integral_constant<int, 3>{}, i); break;
    case 2: rows(std::integral_constant<int, 2>{}, i); break;
    case 1: rows(std::integral_constant<int, 1>{}, i); break;
    default: break;
  }
}

// The one cpu_isa() chose: 512-bit under avx512.
inline void small_gemm(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, int64_t ak, const float* B,
                       int64_t ldb, float* C, int64_t ldc) {
  if (wide_kernels()) small_gemm_t<true>(m, n, k, A, lda, ak, B, ldb, C, ldc);
  else small_gemm_t<false>(m, n, k, A, lda, ak, B, ldb, C, ldc);
}

// An 8 x 8 block of floats transposed in registers: v[i] holds row i on entry and column i on return. Also packs
// the SGEMM's A panels (gemm.h's pack_6_rows).
__attribute__((always_inline)) inline void transpose_8x8(__m256 (&v)[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]),
               t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]),
               t4 = _mm256_unpacklo_ps(v[4], v[5]), t5 = _mm256_unpackhi_ps(v[4], v[5]),
               t6 = _mm256_unpacklo_ps(v[6], v[7]), t7 = _mm256_unpackhi_ps(v[6], v[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
               u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
               u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
               u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  v[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  v[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  v[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  v[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  v[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  v[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  v[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  v[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// dst [cols, rows] = src [rows, cols]^T, src rows ld apart: 8 x 8 blocks transposed in registers, the edges one
// float at a time as the plain loop does. Float by float, every store of a row went to another cache line: 2.2%
// of a vit-fmnist training step's samples, for k^T (forward and backward) and v^T (backward) of each head.
inline void transpose_into(const float* src, int64_t ld, int64_t rows, int64_t cols, float* dst) {
  const int64_t r8 = rows / 8 * 8, c8 = cols / 8 * 8;
  for (int64_t r = 0; r < r8; r += 8)
    for (int64_t c = 0; c < c8; c += 8) {
      __m256 v[8];
      for (int i = 0; i < 8; ++i) v[i] = _mm256_loadu_ps(src + (r + i) * ld + c);
      transpose_8x8(v);
      for (int j = 0; j < 8; ++j) _mm256_storeu_ps(dst + (c + j) * rows + r, v[j]);  // src's column c + j
    }
  for (int64_t r = 0; r < rows; ++r)  // the edges: columns past c8 of every row, and rows past r8
    for (int64_t c = r < r8 ? c8 : 0; c < cols; ++c) dst[c * rows + r] = src[r * ld + c];
}

struct SmallProducts {
  static void ab(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                 int64_t ldc) {
    small_gemm(m, n, k, A, lda, 1, B, ldb, C, ldc);
  }
  // B^T is copied out (small_gemm reads B by rows) into slot 0 of the scratch.
  static void abt(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
                  float* C, int64_t ldc) {
    float* bt = head_scratch<float>(0, k * n);
    transpose_into(B, ldb, n, k, bt);
    small_gemm(m, n, k, A, lda, 1, bt, n, C, ldc);
  }
  // A^T costs nothing: small_gemm reads A through two strides.
  static void atb(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                  int64_t ldc) {
    small_gemm(m, n, k, A, 1, lda, B, ldb, C, ldc);
  }
  // Every head on one thread, the heads split across threads.
  template <typename F>
  static void for_heads(int64_t n, int64_t, F&& f) {
    parallel_for(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) f(i);
    });
  }
};

// Sizes SmallProducts serve; beyond them one head's scores outgrow the caches and BLAS does better.
inline bool small_attention(int64_t N, int64_t M) { return N <= 1024 && M <= 1024; }
#endif  // SPDLAB_CPU_AVX2
