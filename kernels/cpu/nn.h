// Neural-network kernels: softmax and log-softmax, layer norm, cross-entropy, and the patch unfold of a ViT's
// embedding. Compiled once per instruction set (kernels/cpu/variant.h).
#ifndef SPDLAB_CPU_VARIANT
#error "kernels/cpu/variant.h includes this file, inside an instruction set's namespace; include that instead"
#endif

// A softmax row in two steps, each out of line, so that attention's backward (softmax_rows_replay) runs the very
// same code as forward and gets its probabilities back bit for bit from two numbers per row, the max and 1 / sum,
// instead of keeping them: softmax_exp_row writes exp(s x - max) and returns the sum; softmax_scale_row
// multiplies by 1 / sum. Either may run in place (y == x).
//
// The sum is taken in double, in eight running sums: element c goes into sum c % 8, the last cols % 8 elements
// into the first, and the eight are then added in order. That is the order GCC's vectorized loop (8 floats a
// step, 4 doubles in each of two registers) gave this function before it had a fast version, and every result
// since was computed in it. The plain loop below is the reference; under AVX2, floats take
// softmax_exp_row_avx2 (after it), tested equal to it bit for bit (tests/test_sgemm.cpp).
template <typename T>
[[gnu::noinline]] double softmax_exp_row_plain(const T* x, T* y, int64_t cols, T s, T mx) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8)
    for (int l = 0; l < 8; ++l) {
      y[c + l] = fast_exp(x[c + l] * s - mx);
      lane[l] += y[c + l];
    }
  for (; c < cols; ++c) {
    y[c] = fast_exp(x[c] * s - mx);
    lane[0] += y[c];
  }
  double sum = 0;
  for (int l = 0; l < 8; ++l) sum += lane[l];
  return sum;
}
#if SPDLAB_CPU_AVX2
// softmax_exp_row_plain for floats, 8 at a time (fast_exp_8, math.h), in its order, 32 a step (then 16, then
// the rest). The compiler's own vectorization of the loop it replaces tested the clamps by compares and blends:
// 3.7-4.2 cycles an element against 2.2-3.2 here (a row of 197 or 50 in L1, Zen 4).
[[gnu::noinline]] inline double softmax_exp_row_avx2(const float* x, float* y, int64_t cols, float s, float mx) {
  const __m256 vs = _mm256_set1_ps(s), vm = _mm256_set1_ps(mx);
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();  // sums 0-3 and 4-7
  auto add = [&](__m256 e) __attribute__((always_inline)) {
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  };
  int64_t c = 0;
  for (; c + 32 <= cols; c += 32) {
    __m256 e[4];
    for (int v = 0; v < 4; ++v) e[v] = _mm256_fmsub_ps(_mm256_loadu_ps(x + c + 8 * v), vs, vm);
    fast_exp_8(e);
    for (int v = 0; v < 4; ++v) {
      _mm256_storeu_ps(y + c + 8 * v, e[v]);
      add(e[v]);
    }
  }
  if (c + 16 <= cols) {  // at most once: fewer than 32 are left
    __m256 e[2] = {_mm256_fmsub_ps(_mm256_loadu_ps(x + c), vs, vm),
                   _mm256_fmsub_ps(_mm256_loadu_ps(x + c + 8), vs, vm)};
    fast_exp_8(e);
    _mm256_storeu_ps(y + c, e[0]);
    _mm256_storeu_ps(y + c + 8, e[1]);
    add(e[0]);
    add(e[1]);
    c += 16;
  }
  alignas(32) double lane[8];
  alignas(32) float t[8];
  const int64_t rest = cols - c;  // 0 to 15: up to 8 into the sums as above, the last cols % 8 into sum 0
  if (rest > 0) {
    __m256 e[2];
    for (int v = 0; v < 2; ++v) {
      const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rest - 8 * v)), idx);
      e[v] = _mm256_fmsub_ps(_mm256_maskload_ps(x + c + 8 * v, mask), vs, vm);  // reads nothing past the row
    }
    fast_exp_8(e);
    if (rest >= 8) {
      _mm256_storeu_ps(y + c, e[0]);
      add(e[0]);
      e[0] = e[1];
      c += 8;
    }
    _mm256_store_ps(t, e[0]);
  }
  _mm256_store_pd(lane, lo);
  _mm256_store_pd(lane + 4, hi);
  for (int64_t i = c; i < cols; ++i) {
    y[i] = t[i - c];
    lane[0] += t[i - c];
  }
  double sum = 0;
  for (int l = 0; l < 8; ++l) sum += lane[l];
  return sum;
}
#endif
template <typename T>
double softmax_exp_row(const T* x, T* y, int64_t cols, T s, T mx) {
#if SPDLAB_CPU_AVX2
  if constexpr (std::is_same_v<T, float>) return softmax_exp_row_avx2(x, y, cols, s, mx);
#endif
  return softmax_exp_row_plain(x, y, cols, s, mx);
}
template <typename T>
[[gnu::noinline]] void softmax_scale_row(T* y, int64_t cols, T inv) {
  SPDLAB_SIMD for (int64_t c = 0; c < cols; ++c) y[c] *= inv;
}

// y = softmax(scale x) (or log_softmax) along rows; y may be x. stats, when given (softmax only), gets each row's
// max and 1 / sum [rows, 2], which softmax_rows_replay takes to compute y again.
template <typename T>
void softmax_fwd_t(const T* x, T* y, int64_t rows, int64_t cols, double scale, bool log, T* stats = nullptr) {
  parallel_for(rows, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(cols, 1)), [&](int64_t b, int64_t e) {
    const T s = static_cast<T>(scale);
    for (int64_t r = b; r < e; ++r) {
      const T* px = x + r * cols;
      T* py = y + r * cols;
      T mx = -INFINITY;
      _Pragma("omp simd reduction(max : mx)") for (int64_t c = 0; c < cols; ++c) {
        T v = px[c] * s;
        mx = v > mx ? v : mx;
      }
      if (log) {
        double sum = 0;
        _Pragma("omp simd reduction(+ : sum)") for (int64_t c = 0; c < cols; ++c) sum += fast_exp(px[c] * s - mx);
        T lse = mx + static_cast<T>(std::log(sum));
        SPDLAB_SIMD for (int64_t c = 0; c < cols; ++c) py[c] = px[c] * s - lse;
      } else {
        const T inv = static_cast<T>(1.0 / softmax_exp_row(px, py, cols, s, mx));
        softmax_scale_row(py, cols, inv);
        if (stats) stats[2 * r] = mx, stats[2 * r + 1] = inv;
      }
    }
  });
}

// y [rows, cols] again, from the same x (in place) and the stats softmax_fwd_t saved.
template <typename T>
void softmax_rows_replay(T* p, int64_t rows, int64_t cols, double scale, const T* stats) {
  parallel_for(rows, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(cols, 1)), [&](int64_t b, int64_t e) {
    const T s = static_cast<T>(scale);
    for (int64_t r = b; r < e; ++r) {
      T* pr = p + r * cols;
      softmax_exp_row(pr, pr, cols, s, stats[2 * r]);
      softmax_scale_row(pr, cols, stats[2 * r + 1]);
    }
  });
}

template <typename T>
void softmax_bwd_t(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols, double scale, bool log) {
  parallel_for(rows, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(cols, 1)), [&](int64_t b, int64_t e) {
    const T s = static_cast<T>(scale);
    for (int64_t r = b; r < e; ++r) {
      const T* py = y + r * cols;
      const T* pd = dy + r * cols;
      T* px = dx + r * cols;
      double acc = 0;
      if (log) {
        _Pragma("omp simd reduction(+ : acc)") for (int64_t c = 0; c < cols; ++c) acc += pd[c];
        T a = static_cast<T>(acc);
        SPDLAB_SIMD for (int64_t c = 0; c < cols; ++c) px[c] = s * (pd[c] - fast_exp(py[c]) * a);
      } else {
        _Pragma("omp simd reduction(+ : acc)") for (int64_t c = 0; c < cols; ++c)
          acc += static_cast<double>(pd[c]) * py[c];
        T a = static_cast<T>(acc);
        SPDLAB_SIMD for (int64_t c = 0; c < cols; ++c) px[c] = s * py[c] * (pd[c] - a);
      }
    }
  });
}

// A missing LayerNorm weight or bias reads as ones or zeros, so the loops below have no branches in them.
template <typename T>
const T* or_fill(const T* p, std::vector<T>& fallback, int64_t n, T value) {
  if (p) return p;
  fallback.assign(n, value);
  return fallback.data();
}

template <typename T>
void layer_norm_fwd_t(const T* x, const T* w_in, const T* bias_in, T* y, double* mean, double* rstd, int64_t rows,
                      int64_t cols, double eps) {
  std::vector<T> ones, zeros;
  const T* w = or_fill(w_in, ones, cols, T(1));
  const T* bias = or_fill(bias_in, zeros, cols, T(0));
  parallel_for(rows, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(cols, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* px = x + r * cols;
      T* py = y ? y + r * cols : nullptr;
      double s = 0;
      _Pragma("omp simd reduction(+ : s)") for (int64_t c = 0; c < cols; ++c) s += px[c];
      double mu = s / cols, v = 0;
      _Pragma("omp simd reduction(+ : v)") for (int64_t c = 0; c < cols; ++c) {
        double d = px[c] - mu;
        v += d * d;
      }
      double rs = 1.0 / std::sqrt(v / cols + eps);
      mean[r] = mu;
      rstd[r] = rs;
      if (!y) continue;  // the statistics alone (a product's layer-norm prologue, gemm.h)
      T m = static_cast<T>(mu), q = static_cast<T>(rs);
      SPDLAB_SIMD for (int64_t c = 0; c < cols; ++c) py[c] = (px[c] - m) * q * w[c] + bias[c];
    }
  });
}

// For float: each row's sums of g = dy w and of g h (h = (x - mean) rstd) in double, one column after another,
// for rows [r0, r0 + R) at once, so that their 2R chains of additions overlap instead of each waiting on its
// last add. GCC 12 did not vectorize the omp simd reduction this replaces: it compiled it to this column-order
// scalar loop, one row at a time, running at an add's latency (2.9% of a vit-fmnist training step's samples).
// Each row keeps the column order, so the bits are the one-row loop's (R = 1), as before.
template <int R, typename T>
inline void layer_norm_bwd_row_sums(const T* x, const T* dy, const T* w, const double* mean, const double* rstd,
                                    int64_t r0, int64_t cols, double* sg, double* sgh) {
  T m[R], q[R];
  double a[R], b[R];
  for (int i = 0; i < R; ++i) {
    m[i] = static_cast<T>(mean[r0 + i]);
    q[i] = static_cast<T>(rstd[r0 + i]);
    a[i] = b[i] = 0;
  }
  const T* px = x + r0 * cols;
  const T* pd = dy + r0 * cols;
  for (int64_t c = 0; c < cols; ++c)
    for (int i = 0; i < R; ++i) {
      const T g = pd[i * cols + c] * w[c], h = (px[i * cols + c] - m[i]) * q[i];
      a[i] += g;
      b[i] += static_cast<double>(g) * h;
    }
  for (int i = 0; i < R; ++i) sg[i] = a[i], sgh[i] = b[i];
}

// One pass over the rows: each fixed block of rows writes its dx rows and its own partial sums of the
// parameter gradients, which are then added in block order.
template <typename T>
void layer_norm_bwd_t(const T* x, const T* w_in, const double* mean, const double* rstd, const T* dy, T* dx, T* dw,
                      T* db, int64_t rows, int64_t cols) {
  std::vector<T> ones;
  const T* w = or_fill(w_in, ones, cols, T(1));
  const bool params = dw || db;
  const int64_t rb = row_block(cols), nblk = (rows + rb - 1) / rb;
  auto part = std::make_unique_for_overwrite<double[]>(params ? nblk * 2 * cols : 0);  // each block fills its own
  constexpr int kRows = 4;  // rows whose sums are taken together (layer_norm_bwd_row_sums)
  parallel_for(nblk, std::max<int64_t>(1, kParallelGrain / (rb * std::max<int64_t>(cols, 1))), [&](int64_t b0,
                                                                                                   int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      double* pw = params ? part.get() + blk * 2 * cols : nullptr;
      double* pb = params ? pw + cols : nullptr;
      if (params) std::fill(pw, pw + 2 * cols, 0.0);
      const int64_t r_end = std::min(rows, (blk + 1) * rb);
      for (int64_t r0 = blk * rb; r0 < r_end; r0 += kRows) {
        const int64_t nr = std::min<int64_t>(kRows, r_end - r0);
        double sg[kRows], sgh[kRows];
        if constexpr (!std::is_same_v<T, float>) {  // doubles: a reduction that vectorizes, in its own order
          for (int64_t i = 0; i < nr; ++i) {
            const T* px = x + (r0 + i) * cols;
            const T* pd = dy + (r0 + i) * cols;
            const T m = static_cast<T>(mean[r0 + i]), q = static_cast<T>(rstd[r0 + i]);
            double a = 0, b = 0;
            _Pragma("omp simd reduction(+ : a, b)") for (int64_t c = 0; c < cols; ++c) {
              T g = pd[c] * w[c];
              a += g;
              b += static_cast<double>(g) * ((px[c] - m) * q);
            }
            sg[i] = a, sgh[i] = b;
          }
        } else if (nr == kRows) {
          layer_norm_bwd_row_sums<kRows>(x, dy, w, mean, rstd, r0, cols, sg, sgh);
        } else {
          for (int64_t i = 0; i < nr; ++i)
            layer_norm_bwd_row_sums<1>(x, dy, w, mean, rstd, r0 + i, cols, sg + i, sgh + i);
        }
        for (int64_t i = 0; i < nr; ++i) {
          const int64_t r = r0 + i;
          const T* px = x + r * cols;
          const T* pd = dy + r * cols;
          T* po = dx + r * cols;
          const T m = static_cast<T>(mean[r]), q = static_cast<T>(rstd[r]);
          const T mg = static_cast<T>(sg[i] / cols), mgh = static_cast<T>(sgh[i] / cols);
          SPDLAB_SIMD for (int64_t c = 0; c < cols; ++c) {
            T h = (px[c] - m) * q;
            po[c] = q * (pd[c] * w[c] - mg - h * mgh);
          }
          if (params) {
            SPDLAB_SIMD for (int64_t c = 0; c < cols; ++c) {
              pw[c] += static_cast<double>(pd[c]) * ((px[c] - m) * q);
              pb[c] += pd[c];
            }
          }
        }
      }
    }
  });
  if (!params) return;
  for (int64_t c = 0; c < cols; ++c) {
    double aw = 0, ab = 0;
    for (int64_t blk = 0; blk < nblk; ++blk) {
      aw += part[blk * 2 * cols + c];
      ab += part[blk * 2 * cols + cols + c];
    }
    if (dw) dw[c] += static_cast<T>(aw);
    if (db) db[c] += static_cast<T>(ab);
  }
}

template <typename T>
void cross_entropy_fwd_t(const T* logits, const int64_t* target, T* probs, double* loss, int64_t rows, int64_t cols,
                         double smoothing) {
  parallel_for(rows, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(cols, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* px = logits + r * cols;
      T* pp = probs + r * cols;
      double mx = -INFINITY;
      for (int64_t c = 0; c < cols; ++c) mx = std::max(mx, static_cast<double>(px[c]));
      double sum = 0;
      for (int64_t c = 0; c < cols; ++c) sum += std::exp(px[c] - mx);
      double lse = mx + std::log(sum), sum_logp = 0;
      for (int64_t c = 0; c < cols; ++c) {
        double lp = px[c] - lse;
        pp[c] = static_cast<T>(std::exp(lp));
        sum_logp += lp;
      }
      double lp_t = px[target[r]] - lse;
      loss[r] = -((1.0 - smoothing) * lp_t + smoothing / cols * sum_logp);
    }
  });
}

template <typename T>
void cross_entropy_bwd_t(const T* probs, const int64_t* target, T* dl, int64_t rows, int64_t cols, double smoothing,
                         double scale) {
  T s = static_cast<T>(scale), off = static_cast<T>(smoothing / cols), on = static_cast<T>(1.0 - smoothing);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      dl[r * cols + c] = (probs[r * cols + c] - off - (c == target[r] ? on : T(0))) * s;
}

template <typename T>
void unfold_t(const T* x, T* y, int64_t B, int64_t C, int64_t H, int64_t W, int64_t P, bool backward) {
  int64_t gh = H / P, gw = W / P, L = C * P * P;
  parallel_for(B * gh, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(gw * L, 1)), [&](int64_t b0,
                                                                                                 int64_t b1) {
    for (int64_t bg = b0; bg < b1; ++bg) {
      int64_t b = bg / gh, gy = bg % gh;
      for (int64_t gx = 0; gx < gw; ++gx)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t py = 0; py < P; ++py) {
            int64_t xo = ((b * C + c) * H + gy * P + py) * W + gx * P;
            int64_t yo = ((b * gh + gy) * gw + gx) * L + (c * P + py) * P;
            if (backward) for (int64_t px = 0; px < P; ++px) y[xo + px] += x[yo + px];
            else for (int64_t px = 0; px < P; ++px) y[yo + px] = x[xo + px];
          }
    }
  });
}