// The CPU kernels' bodies, compiled twice by cpu_kernels.cpp: once for the baseline x86-64 (or whatever the
// target is) and once under `#pragma GCC target("avx2,fma")`, each inside its own namespace. Not a normal
// header: no include guard, and it must be included only from cpu_kernels.cpp, inside a namespace, after the
// standard headers it uses. Every loop is written once as a template over float and double; reductions
// accumulate in a fixed order, so results are identical for any thread count (for one instruction set).
namespace {

using kernels::Binary;
using kernels::Reduce;
using kernels::Strided;
using kernels::Unary;

// ---- n-d iteration with dimension coalescing ----

// Up to three operands' strides over one shape; adjacent dims merge when every operand is contiguous across them.
struct Iter {
  int ndim = 0;
  int64_t shape[16];
  int64_t strides[4][16];
  int nops = 0;

  Iter(const int64_t* shp, int nd, std::initializer_list<const int64_t*> ops) {
    SPDLAB_CHECK(nd <= 16, "kernels: at most 16 dims are supported, got ", nd);
    nops = static_cast<int>(ops.size());
    for (int d = 0; d < nd; ++d) {
      if (shp[d] == 1) continue;  // size-1 dims never move an index
      shape[ndim] = shp[d];
      int k = 0;
      for (const int64_t* st : ops) strides[k++][ndim] = st[d];
      ++ndim;
    }
    // merge dim i into i+1 (from the back) when stride[i] == stride[i+1] * shape[i+1] for all operands
    int out = 0;
    for (int d = 0; d < ndim; ++d) {
      if (out > 0) {
        bool ok = true;
        for (int k = 0; k < nops; ++k)
          if (strides[k][out - 1] != strides[k][d] * shape[d]) ok = false;
        if (ok) {
          shape[out - 1] *= shape[d];
          for (int k = 0; k < nops; ++k) strides[k][out - 1] = strides[k][d];
          continue;
        }
      }
      shape[out] = shape[d];
      for (int k = 0; k < nops; ++k) strides[k][out] = strides[k][d];
      ++out;
    }
    ndim = out;
    if (ndim == 0) {  // a scalar
      ndim = 1;
      shape[0] = 1;
      for (int k = 0; k < nops; ++k) strides[k][0] = 0;
    }
  }

  int64_t inner() const { return shape[ndim - 1]; }
  int64_t rows() const {
    int64_t r = 1;
    for (int d = 0; d < ndim - 1; ++d) r *= shape[d];
    return r;
  }
  // Element offsets of each operand at the start of `row`.
  void row_offsets(int64_t row, int64_t* off) const {
    for (int k = 0; k < nops; ++k) off[k] = 0;
    for (int d = ndim - 2; d >= 0; --d) {
      int64_t i = row % shape[d];
      row /= shape[d];
      for (int k = 0; k < nops; ++k) off[k] += i * strides[k][d];
    }
  }
  // f(row, off) for every row, in parallel (sized by the total element count), with `off` holding each
  // operand's element offset at the start of the row.
  template <typename F>
  void for_each_row(F&& f) const {
    int64_t n = rows(), in = inner();
    int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(in, 1));
    parallel_for(n, grain, [&](int64_t r0, int64_t r1) {
      int64_t off[4];
      for (int64_t r = r0; r < r1; ++r) {
        row_offsets(r, off);
        f(r, off);
      }
    });
  }
};

// Row-major strides of a contiguous tensor of `shape`.
inline std::vector<int64_t> contiguous_strides(const int64_t* shape, int ndim) {
  std::vector<int64_t> st(ndim);
  int64_t s = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    st[d] = s;
    s *= shape[d];
  }
  return st;
}

// ---- elementwise ----

// Vectorizable float math. libm's expf and erff are calls GCC cannot vectorize, and they made GELU and
// softmax a quarter of a training step. These are branch-free, so `#pragma omp simd` loops over them run
// 8 lanes wide under AVX2. Doubles keep libm.
#define SPDLAB_SIMD _Pragma("omp simd")

// exp for float: x = n ln2 + r with |r| <= ln2 / 2, e^r by Cephes' degree-6 polynomial (within 2 ulp of
// expf), 2^n applied as two factors 2^(n/2) 2^(n - n/2) so every intermediate is a normal float. Large
// inputs overflow to inf through that product, very negative ones (and -inf) underflow to 0, NaN stays NaN.
inline float fast_exp(float x) {
  x = x < -105.0f ? -105.0f : x;
  x = x > 89.0f ? 89.0f : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer (round to nearest)
  float t = x * 1.44269504088896341f + magic;
  float n = t - magic;
  float r = x - n * 0.693359375f;  // ln2 in two parts (Cephes C1, C2) keeps r exact
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float e = p * r * r + r + 1.0f;
  int32_t ni = static_cast<int32_t>(n);
  int32_t h = ni >> 1;
  float s1 = std::bit_cast<float>((h + 127) << 23), s2 = std::bit_cast<float>((ni - h + 127) << 23);
  return e * s1 * s2;
}
inline double fast_exp(double x) { return std::exp(x); }

// erf for float as a rational function (the minimax fit Eigen and XLA use), within a few ulp of erff on
// [-4, 4] and saturated outside.
inline float fast_erf(float x) {
  x = x < -4.0f ? -4.0f : x;
  x = x > 4.0f ? 4.0f : x;
  float x2 = x * x;
  float p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
  p = x2 * p + -2.10102402082508e-06f;
  p = x2 * p + -5.69250639462346e-05f;
  p = x2 * p + -7.34990630326855e-04f;
  p = x2 * p + -2.95459980854025e-03f;
  p = x2 * p + -1.60960333262415e-02f;
  p = x * p;
  float q = x2 * -1.45660718464996e-05f + -2.13374055278905e-04f;
  q = x2 * q + -1.68282697438203e-03f;
  q = x2 * q + -7.37332916720468e-03f;
  q = x2 * q + -1.42647390514189e-02f;
  return p / q;
}
inline double fast_erf(double x) { return std::erf(x); }

template <typename T>
inline T gelu_exact(T x) {
  return T(0.5) * x * (T(1) + fast_erf(x * T(M_SQRT1_2)));
}
// d/dx of x Phi(x): Phi(x) + x phi(x).
template <typename T>
inline T gelu_exact_grad(T x) {
  T cdf = T(0.5) * (T(1) + fast_erf(x * T(M_SQRT1_2)));
  T pdf = fast_exp(T(-0.5) * x * x) * T(0.3989422804014327);  // 1/sqrt(2 pi)
  return cdf + x * pdf;
}
template <typename T>
inline T gelu_tanh(T x) {
  const T k = T(0.7978845608028654);  // sqrt(2/pi)
  return T(0.5) * x * (T(1) + std::tanh(k * (x + T(0.044715) * x * x * x)));
}

template <typename T>
void unary_fwd_t(Unary op, const T* x, T* y, int64_t n, double alpha_d) {
  const T a = static_cast<T>(alpha_d);
  parallel_for(n, kParallelGrain, [&](int64_t b, int64_t e) {
    switch (op) {
      case Unary::neg: SPDLAB_SIMD for (int64_t i = b; i < e; ++i) y[i] = -x[i]; break;
      case Unary::exp: SPDLAB_SIMD for (int64_t i = b; i < e; ++i) y[i] = fast_exp(x[i]); break;
      case Unary::log: for (int64_t i = b; i < e; ++i) y[i] = std::log(x[i]); break;
      case Unary::sqrt: for (int64_t i = b; i < e; ++i) y[i] = std::sqrt(x[i]); break;
      case Unary::rsqrt: for (int64_t i = b; i < e; ++i) y[i] = T(1) / std::sqrt(x[i]); break;
      case Unary::tanh: for (int64_t i = b; i < e; ++i) y[i] = std::tanh(x[i]); break;
      case Unary::abs: for (int64_t i = b; i < e; ++i) y[i] = std::abs(x[i]); break;
      case Unary::relu: SPDLAB_SIMD for (int64_t i = b; i < e; ++i) y[i] = x[i] > T(0) ? x[i] : T(0); break;
      case Unary::gelu: SPDLAB_SIMD for (int64_t i = b; i < e; ++i) y[i] = gelu_exact(x[i]); break;
      case Unary::gelu_tanh: for (int64_t i = b; i < e; ++i) y[i] = gelu_tanh(x[i]); break;
      case Unary::pow:
        if (alpha_d == 2.0) {
          SPDLAB_SIMD for (int64_t i = b; i < e; ++i) y[i] = x[i] * x[i];
        }
        else for (int64_t i = b; i < e; ++i) y[i] = std::pow(x[i], a);
        break;
      case Unary::add_scalar: SPDLAB_SIMD for (int64_t i = b; i < e; ++i) y[i] = x[i] + a; break;
      case Unary::mul_scalar: SPDLAB_SIMD for (int64_t i = b; i < e; ++i) y[i] = x[i] * a; break;
      case Unary::rsub_scalar: SPDLAB_SIMD for (int64_t i = b; i < e; ++i) y[i] = a - x[i]; break;
    }
  });
}

template <typename T>
void unary_bwd_t(Unary op, const T* x, const T* y, const T* dy, T* dx, int64_t n, double alpha_d) {
  const T a = static_cast<T>(alpha_d);
  parallel_for(n, kParallelGrain, [&](int64_t b, int64_t e) {
    switch (op) {
      case Unary::neg: case Unary::rsub_scalar: for (int64_t i = b; i < e; ++i) dx[i] = -dy[i]; break;
      case Unary::exp: SPDLAB_SIMD for (int64_t i = b; i < e; ++i) dx[i] = dy[i] * y[i]; break;
      case Unary::log: for (int64_t i = b; i < e; ++i) dx[i] = dy[i] / x[i]; break;
      case Unary::sqrt: for (int64_t i = b; i < e; ++i) dx[i] = dy[i] * T(0.5) / y[i]; break;
      case Unary::rsqrt: for (int64_t i = b; i < e; ++i) dx[i] = dy[i] * T(-0.5) * y[i] * y[i] * y[i]; break;
      case Unary::tanh: for (int64_t i = b; i < e; ++i) dx[i] = dy[i] * (T(1) - y[i] * y[i]); break;
      case Unary::abs:
        for (int64_t i = b; i < e; ++i) dx[i] = x[i] > T(0) ? dy[i] : (x[i] < T(0) ? -dy[i] : T(0));
        break;
      case Unary::relu: for (int64_t i = b; i < e; ++i) dx[i] = x[i] > T(0) ? dy[i] : T(0); break;
      case Unary::gelu: SPDLAB_SIMD for (int64_t i = b; i < e; ++i) dx[i] = dy[i] * gelu_exact_grad(x[i]); break;
      case Unary::gelu_tanh:
        for (int64_t i = b; i < e; ++i) {
          const T k = T(0.7978845608028654), c = T(0.044715);
          T xi = x[i], inner = k * (xi + c * xi * xi * xi), t = std::tanh(inner);
          T dinner = k * (T(1) + T(3) * c * xi * xi);
          dx[i] = dy[i] * (T(0.5) * (T(1) + t) + T(0.5) * xi * (T(1) - t * t) * dinner);
        }
        break;
      case Unary::pow:
        if (alpha_d == 2.0) for (int64_t i = b; i < e; ++i) dx[i] = dy[i] * T(2) * x[i];
        else for (int64_t i = b; i < e; ++i) dx[i] = dy[i] * a * std::pow(x[i], a - T(1));
        break;
      case Unary::add_scalar: for (int64_t i = b; i < e; ++i) dx[i] = dy[i]; break;
      case Unary::mul_scalar: for (int64_t i = b; i < e; ++i) dx[i] = dy[i] * a; break;
    }
  });
}

template <typename T, typename F>
void binary_loop(const Iter& it, const T* a, const T* b, T* out, F f) {
  int64_t in = it.inner(), sa = it.strides[0][it.ndim - 1], sb = it.strides[1][it.ndim - 1];
  it.for_each_row([&](int64_t r, const int64_t* off) {
    const T* pa = a + off[0];
    const T* pb = b + off[1];
    T* po = out + r * in;
    if (sa == 1 && sb == 1) for (int64_t i = 0; i < in; ++i) po[i] = f(pa[i], pb[i]);
    else if (sa == 1 && sb == 0) { T vb = pb[0]; for (int64_t i = 0; i < in; ++i) po[i] = f(pa[i], vb); }
    else if (sa == 0 && sb == 1) { T va = pa[0]; for (int64_t i = 0; i < in; ++i) po[i] = f(va, pb[i]); }
    else for (int64_t i = 0; i < in; ++i) po[i] = f(pa[i * sa], pb[i * sb]);
  });
}

template <typename T>
void binary_fwd_t(Binary op, Strided a, Strided b, T* out, const int64_t* shape, int ndim) {
  std::vector<int64_t> out_strides = contiguous_strides(shape, ndim);
  Iter it(shape, ndim, {a.strides, b.strides, out_strides.data()});
  const T* pa = static_cast<const T*>(a.data);
  const T* pb = static_cast<const T*>(b.data);
  switch (op) {
    case Binary::add: binary_loop(it, pa, pb, out, [](T x, T y) { return x + y; }); break;
    case Binary::sub: binary_loop(it, pa, pb, out, [](T x, T y) { return x - y; }); break;
    case Binary::mul: binary_loop(it, pa, pb, out, [](T x, T y) { return x * y; }); break;
    case Binary::div: binary_loop(it, pa, pb, out, [](T x, T y) { return x / y; }); break;
    case Binary::maximum: binary_loop(it, pa, pb, out, [](T x, T y) { return x >= y ? x : y; }); break;
  }
}

template <typename S, typename D>
void copy_loop(const Iter& it, const S* src, D* dst) {
  int64_t in = it.inner(), ss = it.strides[0][it.ndim - 1], sd = it.strides[1][it.ndim - 1];
  it.for_each_row([&](int64_t, const int64_t* off) {
    const S* ps = src + off[0];
    D* pd = dst + off[1];
    if (ss == 1 && sd == 1) for (int64_t i = 0; i < in; ++i) pd[i] = static_cast<D>(ps[i]);
    else for (int64_t i = 0; i < in; ++i) pd[i * sd] = static_cast<D>(ps[i * ss]);
  });
}

template <typename S>
void copy_to(const Iter& it, const S* src, DType dst_dt, void* dst) {
  switch (dst_dt) {
    case DType::f32: copy_loop(it, src, static_cast<float*>(dst)); break;
    case DType::f64: copy_loop(it, src, static_cast<double*>(dst)); break;
    case DType::i64: copy_loop(it, src, static_cast<int64_t*>(dst)); break;
  }
}

template <typename C, typename T>
void where_loop(const Iter& it, const C* c, const T* a, const T* b, T* out) {
  int64_t in = it.inner();
  int64_t sc = it.strides[0][it.ndim - 1], sa = it.strides[1][it.ndim - 1], sb = it.strides[2][it.ndim - 1];
  it.for_each_row([&](int64_t r, const int64_t* off) {
    T* po = out + r * in;
    for (int64_t i = 0; i < in; ++i) po[i] = c[off[0] + i * sc] != C(0) ? a[off[1] + i * sa] : b[off[2] + i * sb];
  });
}

template <typename T>
void where_t(DType cond_dt, Strided cond, Strided a, Strided b, T* out, const int64_t* shape, int ndim) {
  std::vector<int64_t> os = contiguous_strides(shape, ndim);
  Iter it(shape, ndim, {cond.strides, a.strides, b.strides, os.data()});
  const T* pa = static_cast<const T*>(a.data);
  const T* pb = static_cast<const T*>(b.data);
  switch (cond_dt) {
    case DType::f32: where_loop(it, static_cast<const float*>(cond.data), pa, pb, out); break;
    case DType::f64: where_loop(it, static_cast<const double*>(cond.data), pa, pb, out); break;
    case DType::i64: where_loop(it, static_cast<const int64_t*>(cond.data), pa, pb, out); break;
  }
}

// ---- reductions ----

// Rows per block where a kernel sums over rows into per-column partials: fixed, so that the partials, and
// the order they are added in, depend only on the shape and never on the thread count.
inline int64_t row_block(int64_t cols) { return std::max<int64_t>(8, 16384 / std::max<int64_t>(cols, 1)); }

template <typename T>
void reduce_t(Reduce op, const T* x, T* y, int64_t outer, int64_t r, int64_t inner, int64_t* argmax) {
  if (inner == 1) {
    parallel_for(outer, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(r, 1)), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        const T* px = x + o * r;
        if (op == Reduce::sum) {
          double acc = 0;
          _Pragma("omp simd reduction(+ : acc)") for (int64_t j = 0; j < r; ++j) acc += px[j];
          y[o] = static_cast<T>(acc);
        } else {
          int64_t best = 0;
          for (int64_t j = 1; j < r; ++j)
            if (px[j] > px[best] || std::isnan(px[j])) best = j;
          y[o] = px[best];
          if (argmax) argmax[o] = best;
        }
      }
    });
    return;
  }
  if (outer == 0 || inner == 0) return;  // nothing to write
  if (op == Reduce::sum) {
    // Column sums: fixed blocks of rows each sum into their own partials, added afterwards in block order.
    const int64_t rb = row_block(inner), nblk = (r + rb - 1) / rb;
    std::vector<double> part(outer * nblk * inner);
    parallel_for(outer * nblk, std::max<int64_t>(1, kParallelGrain / (rb * inner)), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        int64_t o = t / nblk, blk = t % nblk;
        double* acc = part.data() + t * inner;
        std::fill(acc, acc + inner, 0.0);
        for (int64_t j = blk * rb; j < std::min(r, (blk + 1) * rb); ++j) {
          const T* px = x + (o * r + j) * inner;
          SPDLAB_SIMD for (int64_t c = 0; c < inner; ++c) acc[c] += px[c];
        }
      }
    });
    parallel_for(outer * inner, kParallelGrain, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        int64_t o = t / inner, c = t % inner;
        double acc = 0;
        for (int64_t blk = 0; blk < nblk; ++blk) acc += part[(o * nblk + blk) * inner + c];
        y[t] = static_cast<T>(acc);
      }
    });
    return;
  }
  // Column maxima of [r, inner] blocks: parallel over (outer, column chunk), each column scanned in row order.
  const int64_t cchunk = 256;
  int64_t nchunks = (inner + cchunk - 1) / cchunk;
  parallel_for(outer * nchunks, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(r * cchunk, 1)),
               [&](int64_t b, int64_t e) {
                 std::vector<int64_t> best(cchunk);
                 for (int64_t t = b; t < e; ++t) {
                   int64_t o = t / nchunks, c0 = (t % nchunks) * cchunk, c1 = std::min(inner, c0 + cchunk);
                   int64_t w = c1 - c0;
                   const T* px = x + o * r * inner + c0;
                   std::fill(best.begin(), best.begin() + w, 0);
                   for (int64_t j = 1; j < r; ++j)
                     for (int64_t c = 0; c < w; ++c) {
                       T v = px[j * inner + c];
                       if (v > px[best[c] * inner + c] || std::isnan(v)) best[c] = j;
                     }
                   for (int64_t c = 0; c < w; ++c) {
                     y[o * inner + c0 + c] = px[best[c] * inner + c];
                     if (argmax) argmax[o * inner + c0 + c] = best[c];
                   }
                 }
               });
}

template <typename T>
void max_bwd_t(const T* dy, const int64_t* argmax, T* dx, int64_t outer, int64_t r, int64_t inner) {
  std::memset(dx, 0, sizeof(T) * outer * r * inner);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < inner; ++c) dx[(o * r + argmax[o * inner + c]) * inner + c] = dy[o * inner + c];
}

// ---- nn ----

template <typename T>
void softmax_fwd_t(const T* x, T* y, int64_t rows, int64_t cols, double scale, bool log) {
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
      double sum = 0;
      if (log) {
        _Pragma("omp simd reduction(+ : sum)") for (int64_t c = 0; c < cols; ++c) sum += fast_exp(px[c] * s - mx);
        T lse = mx + static_cast<T>(std::log(sum));
        SPDLAB_SIMD for (int64_t c = 0; c < cols; ++c) py[c] = px[c] * s - lse;
      } else {
        _Pragma("omp simd reduction(+ : sum)") for (int64_t c = 0; c < cols; ++c) {
          T ev = fast_exp(px[c] * s - mx);
          py[c] = ev;
          sum += ev;
        }
        T inv = static_cast<T>(1.0 / sum);
        SPDLAB_SIMD for (int64_t c = 0; c < cols; ++c) py[c] *= inv;
      }
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
      T* py = y + r * cols;
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
      T m = static_cast<T>(mu), q = static_cast<T>(rs);
      SPDLAB_SIMD for (int64_t c = 0; c < cols; ++c) py[c] = (px[c] - m) * q * w[c] + bias[c];
    }
  });
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
  std::vector<double> part(params ? nblk * 2 * cols : 0);
  parallel_for(nblk, std::max<int64_t>(1, kParallelGrain / (rb * std::max<int64_t>(cols, 1))), [&](int64_t b0,
                                                                                                   int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      double* pw = params ? part.data() + blk * 2 * cols : nullptr;
      double* pb = params ? pw + cols : nullptr;
      if (params) std::fill(pw, pw + 2 * cols, 0.0);
      for (int64_t r = blk * rb; r < std::min(rows, (blk + 1) * rb); ++r) {
        const T* px = x + r * cols;
        const T* pd = dy + r * cols;
        T* po = dx + r * cols;
        const T m = static_cast<T>(mean[r]), q = static_cast<T>(rstd[r]);
        double sg = 0, sgh = 0;
        _Pragma("omp simd reduction(+ : sg, sgh)") for (int64_t c = 0; c < cols; ++c) {
          T g = pd[c] * w[c];
          T h = (px[c] - m) * q;
          sg += g;
          sgh += static_cast<double>(g) * h;
        }
        const T mg = static_cast<T>(sg / cols), mgh = static_cast<T>(sgh / cols);
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

// ---- dtype dispatch ----

#define SPDLAB_FLOAT_DISPATCH(dt, NAME, ...)                                         \
  do {                                                                               \
    if ((dt) == DType::f32) { using T = float; __VA_ARGS__; }                        \
    else if ((dt) == DType::f64) { using T = double; __VA_ARGS__; }                  \
    else SPDLAB_FAIL(NAME, ": expected a floating dtype (f32 or f64), got ", (dt));  \
  } while (0)

template <typename T> const T* cp(const void* p) { return static_cast<const T*>(p); }
template <typename T> T* mp(void* p) { return static_cast<T*>(p); }

// The fused optimizer passes run 4 floats at a time through GCC's vector extension (SSE on x86, plain lanes
// elsewhere). std::sqrt's errno handling keeps GCC from vectorizing a scalar loop, which left these passes
// 3-4x slower than memory. Each element gets the same float operations at either width.
typedef float F4 __attribute__((vector_size(16)));
typedef double D4 __attribute__((vector_size(32)));
template <typename V> V load(const float* x) {
  V v;
  std::memcpy(&v, x, sizeof(V));
  return v;
}
template <typename V> void store(float* x, V v) { std::memcpy(x, &v, sizeof(V)); }
inline float vsqrt(float x) { return std::sqrt(x); }
inline F4 vsqrt(F4 x) {
#if defined(__SSE__)
  return __builtin_ia32_sqrtps(x);
#else
  return F4{std::sqrt(x[0]), std::sqrt(x[1]), std::sqrt(x[2]), std::sqrt(x[3])};
#endif
}
inline float vmax(float a, float b) { return a < b ? b : a; }
inline F4 vmax(F4 a, F4 b) { return a < b ? b : a; }

// Adam's coefficients, each rounded to float once from the double hyperparameters (as PyTorch rounds its
// Python scalars); adam_step and spd_adam_pass share them so both take the same direction.
struct AdamCoef {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, inv_bc2_sqrt, eps;
  explicit AdamCoef(const kernels::AdamStep& h)
      : beta1(float(h.beta1)), beta2(float(h.beta2)), one_minus_beta1(float(1.0 - h.beta1)),
        one_minus_beta2(float(1.0 - h.beta2)), step_size(float(h.lr / h.bias_correction1)),
        inv_bc2_sqrt(float(1.0 / std::sqrt(h.bias_correction2))), eps(float(h.eps)) {}
  // m = b1 m + (1-b1) g; v = b2 v + (1-b2) g g, in PyTorch's order.
  template <typename V> void moments(V g, V& m, V& v) const {
    m = beta1 * m + one_minus_beta1 * g;
    v = beta2 * v + one_minus_beta2 * g * g;
  }
  // p - step_size * (m / (sqrt(v) / sqrt(bc2) + eps)), with the division by sqrt(bc2) as a multiplication
  // (PyTorch divides): at most an ulp apart, and one division per element less in a compute-bound loop.
  template <typename V> V update(V p, V m, V v) const {
    return p - step_size * (m / (vsqrt(v) * inv_bc2_sqrt + eps));
  }
};

// Runs f(i) for i in [0, n): one small product per thread, or serially when each is big enough for BLAS threads.
template <typename F>
void run_pairs(int64_t n, int64_t work_each, F&& f) {
  if (n >= 2 && work_each < (1 << 18) && get_num_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel for schedule(static) num_threads(get_num_threads())
    for (int64_t i = 0; i < n; ++i) f(i);
  } else {
    for (int64_t i = 0; i < n; ++i) f(i);
  }
}

#if SPDLAB_CPU_AVX2
// ---- attention's per-head products (AVX2) ----
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

// C [m, n] = A [m, k] B [k, n], six rows of C at a time; A strided as in small_gemm_rows.
inline void small_gemm(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, int64_t ak, const float* B,
                       int64_t ldb, float* C, int64_t ldc) {
  int64_t i = 0;
  for (; i + 6 <= m; i += 6) small_gemm_rows<6>(n, k, A + i * lda, lda, ak, B, ldb, C + i * ldc, ldc);
  const float* a = A + i * lda;
  float* c = C + i * ldc;
  switch (m - i) {
    case 5: small_gemm_rows<5>(n, k, a, lda, ak, B, ldb, c, ldc); break;
    case 4: small_gemm_rows<4>(n, k, a, lda, ak, B, ldb, c, ldc); break;
    case 3: small_gemm_rows<3>(n, k, a, lda, ak, B, ldb, c, ldc); break;
    case 2: small_gemm_rows<2>(n, k, a, lda, ak, B, ldb, c, ldc); break;
    case 1: small_gemm_rows<1>(n, k, a, lda, ak, B, ldb, c, ldc); break;
    default: break;
  }
}

// dst [cols, rows] = src [rows, cols]^T, src rows ld apart.
inline void transpose_into(const float* src, int64_t ld, int64_t rows, int64_t cols, float* dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * ld + c];
}

// Per-thread scratch (slot 0: a transposed operand, slot 1: the score gradients), reused across heads and steps.
inline float* head_scratch(size_t slot, size_t n) {
  thread_local std::vector<float> bufs[2];
  if (bufs[slot].size() < n) bufs[slot].resize(n);
  return bufs[slot].data();
}

// f(bh) for every (batch, head) pair, the pairs split across threads (each head's kernels are serial).
template <typename F>
void for_each_head(int64_t n, F&& f) {
  parallel_for(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) f(i);
  });
}

// Sizes the per-head kernels serve; beyond them one head's scores outgrow the caches and BLAS does better.
inline bool small_attention(int64_t N, int64_t M) { return N <= 1024 && M <= 1024; }

// attention_fwd / attention_bwd for float on the per-head kernels above, at the sizes small_attention()
// accepts. Same layouts and strides as the Kernels interface.
void attention_fwd_small(int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, const float* Q, const int64_t* qs,
                         const float* Kp, const int64_t* ks, const float* V, const int64_t* vs, float* O,
                         const int64_t* os, float* P, double scale) {
  for_each_head(B * H, [&](int64_t bh) {
    int64_t b = bh / H, h = bh % H;
    float* p = P + bh * N * M;
    float* kt = head_scratch(0, D * M);
    transpose_into(Kp + b * ks[0] + h * ks[1], ks[2], M, D, kt);
    small_gemm(N, M, D, Q + b * qs[0] + h * qs[1], qs[2], 1, kt, M, p, M);
    softmax_fwd_t<float>(p, p, N, M, scale, false);
    small_gemm(N, D, M, p, M, 1, V + b * vs[0] + h * vs[1], vs[2], O + b * os[0] + h * os[1], os[2]);
  });
}

void attention_bwd_small(int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, const float* Q, const int64_t* qs,
                         const float* Kp, const int64_t* ks, const float* V, const int64_t* vs, const float* P,
                         const float* dO, const int64_t* ds, float* dq, const int64_t* dqs, float* dk,
                         const int64_t* dks, float* dv, const int64_t* dvs, double scale) {
  for_each_head(B * H, [&](int64_t bh) {
    int64_t b = bh / H, h = bh % H;
    const float* p = P + bh * N * M;
    const float* qp = Q + b * qs[0] + h * qs[1];
    const float* kp = Kp + b * ks[0] + h * ks[1];
    const float* vp = V + b * vs[0] + h * vs[1];
    const float* dop = dO + b * ds[0] + h * ds[1];
    float* vt = head_scratch(0, D * M);
    float* dp = head_scratch(1, N * M);
    // dv = p^T dout; dp = dout v^T; ds = scale * softmax'(p) dp; dq = ds k; dk = ds^T q. The transposed
    // left operands (p^T, ds^T) are read in place through small_gemm's strides.
    small_gemm(M, D, N, p, 1, M, dop, ds[2], dv + b * dvs[0] + h * dvs[1], dvs[2]);
    transpose_into(vp, vs[2], M, D, vt);
    small_gemm(N, M, D, dop, ds[2], 1, vt, M, dp, M);
    softmax_bwd_t<float>(p, dp, dp, N, M, scale, false);
    small_gemm(N, D, M, dp, M, 1, kp, ks[2], dq + b * dqs[0] + h * dqs[1], dqs[2]);
    small_gemm(M, D, N, dp, 1, M, qp, qs[2], dk + b * dks[0] + h * dks[1], dks[2]);
  });
}
#endif

class CpuKernels final : public kernels::Kernels {
 public:
  Device device() const override { return Device::cpu; }
  std::string name() const override { return SPDLAB_CPU_AVX2 ? "cpu (avx2)" : "cpu (base)"; }

  void* allocate(size_t nbytes) override { return host_allocate(nbytes); }
  void deallocate(void* p, size_t nbytes) noexcept override { host_deallocate(p, nbytes); }
  void copy_from_host(void* dst, const void* src, size_t nbytes) override {
    if (nbytes) std::memcpy(dst, src, nbytes);
  }
  void copy_to_host(void* dst, const void* src, size_t nbytes) override {
    if (nbytes) std::memcpy(dst, src, nbytes);
  }
  kernels::MemoryStats memory_stats() override { return host_memory_stats(); }
  void reset_peak_memory() override { host_reset_peak_memory(); }
  // A step's pieces spread over the cores; fixed boundaries keep the sums independent of the thread count.
  int64_t optimizer_piece() const override { return 65536; }
  int64_t attention_saved_numel(int64_t B, int64_t H, int64_t N, int64_t M) const override { return B * H * N * M; }

  void dropout_mask(DType dt, void* mask, int64_t n, double p, uint64_t seed, uint64_t offset) override {
    double keep = 1.0 / (1.0 - p);
    SPDLAB_FLOAT_DISPATCH(dt, "dropout_mask", parallel_for(n, kParallelGrain, [&](int64_t b, int64_t e) {
      T* m = mp<T>(mask);
      for (int64_t i = b; i < e; ++i) m[i] = philox::uniform(seed, offset + i) >= p ? T(keep) : T(0);
    }));
  }

  void copy_strided(DType src_dt, Strided src, DType dst_dt, void* dst, const int64_t* dst_strides,
                    const int64_t* shape, int ndim) override {
    Iter it(shape, ndim, {src.strides, dst_strides});
    switch (src_dt) {
      case DType::f32: copy_to(it, static_cast<const float*>(src.data), dst_dt, dst); break;
      case DType::f64: copy_to(it, static_cast<const double*>(src.data), dst_dt, dst); break;
      case DType::i64: copy_to(it, static_cast<const int64_t*>(src.data), dst_dt, dst); break;
    }
  }

  void fill(DType dt, void* dst, int64_t n, double v) override {
    switch (dt) {
      case DType::f32: std::fill_n(static_cast<float*>(dst), n, static_cast<float>(v)); break;
      case DType::f64: std::fill_n(static_cast<double*>(dst), n, v); break;
      case DType::i64: std::fill_n(static_cast<int64_t*>(dst), n, static_cast<int64_t>(v)); break;
    }
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

  void gemm(DType dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const void* A, int64_t lda,
            const void* B, int64_t ldb, double beta, void* C, int64_t ldc) override {
    if (M == 0 || N == 0) return;
    auto TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
    if (dt == DType::f32)
      cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, static_cast<float>(alpha), cp<float>(A), lda, cp<float>(B), ldb,
                  static_cast<float>(beta), mp<float>(C), ldc);
    else if (dt == DType::f64)
      cblas_dgemm(CblasRowMajor, TA, TB, M, N, K, alpha, cp<double>(A), lda, cp<double>(B), ldb, beta, mp<double>(C),
                  ldc);
    else
      SPDLAB_FAIL("gemm: expected f32 or f64, got ", dt);
  }

  void gemm_batched(DType dt, int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
                    const void* A, int64_t lda, int64_t sa, const void* B, int64_t ldb, int64_t sb, double beta,
                    void* C, int64_t ldc, int64_t sc) override {
    size_t es = dtype_size(dt);
    auto one = [&](int64_t i) {
      gemm(dt, ta, tb, M, N, K, alpha, static_cast<const char*>(A) + i * sa * es, lda,
           static_cast<const char*>(B) + i * sb * es, ldb, beta, static_cast<char*>(C) + i * sc * es, ldc);
    };
    run_pairs(batch, M * N * K, one);
  }

  // With at least as many products as threads, each thread runs whole products on single-threaded BLAS
  // (OpenBLAS runs on one thread inside a parallel region), so no thread waits on another inside a product.
  // Every product then runs on one thread whichever thread takes it, so the schedule cannot change the
  // results; they may differ in the last bits from the serial branch, as OpenBLAS rounds differently on 1
  // and on N threads. Either way a given thread count gives the same bits every run.
  void gemm_group(DType dt, const Gemm* g, int64_t n) override {
    auto one = [&](int64_t i) {
      gemm(dt, g[i].trans_a, g[i].trans_b, g[i].M, g[i].N, g[i].K, g[i].alpha, g[i].A, g[i].lda, g[i].B, g[i].ldb,
           g[i].beta, g[i].C, g[i].ldc);
    };
    const int threads = get_num_threads();
    if (n >= 2 && threads > 1 && n >= threads && !omp_in_parallel()) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
      for (int64_t i = 0; i < n; ++i) one(i);
    } else {
      for (int64_t i = 0; i < n; ++i) one(i);
    }
  }

  void fill_rows(DType dt, void* y, const void* bias, int64_t rows, int64_t cols) override {
    SPDLAB_FLOAT_DISPATCH(dt, "fill_rows", {
      T* py = mp<T>(y);
      const T* pb = cp<T>(bias);
      parallel_for(rows, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(cols, 1)), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r)
          std::copy(pb, pb + cols, py + r * cols);
      });
    });
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
  void index_select_fwd(DType dt, const void* x, const int64_t* index, void* y, int64_t outer, int64_t n, int64_t m,
                        int64_t inner) override {
    size_t es = dtype_size(dt);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < m; ++j)
        std::memcpy(static_cast<char*>(y) + ((o * m + j) * inner) * es,
                    static_cast<const char*>(x) + ((o * n + index[j]) * inner) * es, inner * es);
  }
  void index_select_bwd(DType dt, const void* dy, const int64_t* index, void* dx, int64_t outer, int64_t n, int64_t m,
                        int64_t inner) override {
    SPDLAB_FLOAT_DISPATCH(dt, "index_select_bwd", {
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < m; ++j)
          for (int64_t i = 0; i < inner; ++i)
            mp<T>(dx)[(o * n + index[j]) * inner + i] += cp<T>(dy)[(o * m + j) * inner + i];
    });
  }
  void gather_fwd(DType dt, const void* x, const int64_t* index, void* y, int64_t outer, int64_t n, int64_t m,
                  int64_t inner) override {
    SPDLAB_FLOAT_DISPATCH(dt, "gather", {
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < m; ++j)
          for (int64_t i = 0; i < inner; ++i)
            mp<T>(y)[(o * m + j) * inner + i] = cp<T>(x)[(o * n + index[(o * m + j) * inner + i]) * inner + i];
    });
  }
  void gather_bwd(DType dt, const void* dy, const int64_t* index, void* dx, int64_t outer, int64_t n, int64_t m,
                  int64_t inner) override {
    SPDLAB_FLOAT_DISPATCH(dt, "gather_bwd", {
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < m; ++j)
          for (int64_t i = 0; i < inner; ++i)
            mp<T>(dx)[(o * n + index[(o * m + j) * inner + i]) * inner + i] += cp<T>(dy)[(o * m + j) * inner + i];
    });
  }

  void attention_fwd(DType dt, int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, const void* q, const int64_t* qs,
                     const void* k, const int64_t* ks, const void* v, const int64_t* vs, void* out,
                     const int64_t* os, void* probs, double scale) override {
#if SPDLAB_CPU_AVX2
    if (dt == DType::f32 && small_attention(N, M))
      return attention_fwd_small(B, H, N, M, D, cp<float>(q), qs, cp<float>(k), ks, cp<float>(v), vs, mp<float>(out),
                                 os, mp<float>(probs), scale);
#endif
    SPDLAB_FLOAT_DISPATCH(dt, "attention", {
      const T* Q = cp<T>(q);
      const T* Kp = cp<T>(k);
      const T* V = cp<T>(v);
      T* O = mp<T>(out);
      T* P = mp<T>(probs);
      auto one = [&](int64_t bh) {
        int64_t b = bh / H, h = bh % H;
        T* p = P + bh * N * M;
        gemm(dt, false, true, N, M, D, scale, Q + b * qs[0] + h * qs[1], qs[2], Kp + b * ks[0] + h * ks[1], ks[2], 0.0,
             p, M);
        softmax_fwd_t<T>(p, p, N, M, 1.0, false);
        gemm(dt, false, false, N, D, M, 1.0, p, M, V + b * vs[0] + h * vs[1], vs[2], 0.0, O + b * os[0] + h * os[1],
             os[2]);
      };
      run_pairs(B * H, N * M * D, one);
    });
  }

  void attention_bwd(DType dt, int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, const void* q, const int64_t* qs,
                     const void* k, const int64_t* ks, const void* v, const int64_t* vs, const void* probs,
                     const void* dout, const int64_t* ds, void* dq, const int64_t* dqs, void* dk,
                     const int64_t* dks, void* dv, const int64_t* dvs, double scale) override {
#if SPDLAB_CPU_AVX2
    if (dt == DType::f32 && small_attention(N, M))
      return attention_bwd_small(B, H, N, M, D, cp<float>(q), qs, cp<float>(k), ks, cp<float>(v), vs,
                                 cp<float>(probs), cp<float>(dout), ds, mp<float>(dq), dqs, mp<float>(dk), dks,
                                 mp<float>(dv), dvs, scale);
#endif
    SPDLAB_FLOAT_DISPATCH(dt, "attention_bwd", {
      const T* Q = cp<T>(q);
      const T* Kp = cp<T>(k);
      const T* V = cp<T>(v);
      const T* P = cp<T>(probs);
      const T* dO = cp<T>(dout);
      auto one = [&](int64_t bh) {
        int64_t b = bh / H, h = bh % H;
        const T* p = P + bh * N * M;
        const T* qp = Q + b * qs[0] + h * qs[1];
        const T* kp = Kp + b * ks[0] + h * ks[1];
        const T* vp = V + b * vs[0] + h * vs[1];
        const T* dop = dO + b * ds[0] + h * ds[1];
        T* dqp = mp<T>(dq) + b * dqs[0] + h * dqs[1];
        T* dkp = mp<T>(dk) + b * dks[0] + h * dks[1];
        T* dvp = mp<T>(dv) + b * dvs[0] + h * dvs[1];
        std::vector<T> dp(N * M);
        // dv = p^T dout; dp = dout v^T; ds = scale * softmax'(p) dp; dq = ds k; dk = ds^T q
        gemm(dt, true, false, M, D, N, 1.0, p, M, dop, ds[2], 0.0, dvp, dvs[2]);
        gemm(dt, false, true, N, M, D, 1.0, dop, ds[2], vp, vs[2], 0.0, dp.data(), M);
        softmax_bwd_t<T>(p, dp.data(), dp.data(), N, M, scale, false);
        gemm(dt, false, false, N, D, M, 1.0, dp.data(), M, kp, ks[2], 0.0, dqp, dqs[2]);
        gemm(dt, true, false, M, D, N, 1.0, dp.data(), M, qp, qs[2], 0.0, dkp, dks[2]);
      };
      run_pairs(B * H, N * M * D, one);
    });
  }

  void sgd_step(float* p, const float* g, float* buf, int64_t n, float lr, float momentum, float dampening,
                float wd, bool nesterov, bool first) override {
    // Explicit 4-wide vectors: with the option branches inside, GCC left the scalar loop unvectorized.
    const float keep = 1.0f - dampening;
    parallel_for(n, kParallelGrain, [&](int64_t b, int64_t e) {
      // Built here and capturing copies: through references, every store into p or buf might alias a
      // coefficient or pointer, and GCC reloaded them all on each iteration.
      auto one = [=]<typename V>(int64_t i) {
        V pi = load<V>(p + i), d = load<V>(g + i) + wd * pi;
        if (momentum != 0.0f) {
          V bi = first ? d : momentum * load<V>(buf + i) + keep * d;
          store(buf + i, bi);
          d = nesterov ? d + momentum * bi : bi;
        }
        store(p + i, pi - lr * d);
      };
      int64_t i = b;
      for (; i + 4 <= e; i += 4) one.template operator()<F4>(i);
      for (; i < e; ++i) one.template operator()<float>(i);
    });
  }

  void adam_step(float* p, const float* g, float* m, float* v, float* vmax_p, const float* anchor, int64_t n,
                 const kernels::AdamStep& h) override {
    const AdamCoef k(h);
    const float wd = float(h.weight_decay), keep = float(1.0 - h.lr * h.weight_decay);
    const float alpha = float(h.l2sp_alpha), beta = float(h.l2sp_beta);
    const bool decoupled = h.decoupled && h.weight_decay != 0, coupled = !h.decoupled && h.weight_decay != 0;
    const bool l2sp = alpha != 0.0f || beta != 0.0f, amsgrad = h.amsgrad;
    parallel_for(n, kParallelGrain, [&](int64_t b, int64_t e) {
      auto one = [=]<typename V>(int64_t i) {  // copies, as in sgd_step
        V gi = load<V>(g + i), pi = load<V>(p + i), mi = load<V>(m + i), vi = load<V>(v + i);
        if (decoupled) pi = pi * keep;
        if (coupled) gi = gi + wd * pi;
        if (l2sp) gi = gi + (anchor ? alpha * (pi - load<V>(anchor + i)) : beta * pi);
        k.moments(gi, mi, vi);
        store(m + i, mi);
        store(v + i, vi);
        V vd = vi;
        if (amsgrad) {
          vd = vmax(load<V>(vmax_p + i), vi);
          store(vmax_p + i, vd);
        }
        store(p + i, k.update(pi, mi, vd));
      };
      int64_t i = b;
      for (; i + 4 <= e; i += 4) one.template operator()<F4>(i);
      for (; i < e; ++i) one.template operator()<float>(i);
    });
  }

  void spd_adam_pass(float* p, const float* g, float* m, float* v, const float* anchor, int64_t n,
                     const kernels::AdamStep& h, kernels::SpdSums* sums) override {
    const AdamCoef k(h);
    // The products are summed in float over blocks of 8 per vector lane, then in double: widening every
    // element made the pass compute-bound without AVX. Chunks, blocks and lanes are summed in a fixed order,
    // so the sums do not depend on the thread count.
    const int64_t chunk = 16384, block = 32;
    int64_t nchunks = (n + chunk - 1) / chunk;
    std::vector<kernels::SpdSums> part(nchunks);
    parallel_for(nchunks, 2, [&](int64_t cb, int64_t ce) {
      auto one = [=]<typename V>(int64_t i, V& gd, V& d0, V& d1) {  // copies, as in sgd_step
        V gi = load<V>(g + i), pi = load<V>(p + i), mi = load<V>(m + i), vi = load<V>(v + i);
        V ai = anchor ? load<V>(anchor + i) : V{};
        k.moments(gi, mi, vi);
        store(m + i, mi);
        store(v + i, vi);
        V pn = k.update(pi, mi, vi);
        store(p + i, pn);
        V dev = pi - ai, ndev = pn - ai;
        gd += gi * dev;
        d0 += dev * dev;
        d1 += ndev * ndev;
      };
      for (int64_t c = cb; c < ce; ++c) {
        int64_t i = c * chunk, e = std::min(n, i + chunk);
        D4 gd4{}, d04{}, d14{};
        for (; i + block <= e;) {
          F4 gd{}, d0{}, d1{};
          for (int j = 0; j < block / 4; ++j, i += 4) one.template operator()<F4>(i, gd, d0, d1);
          gd4 += __builtin_convertvector(gd, D4);
          d04 += __builtin_convertvector(d0, D4);
          d14 += __builtin_convertvector(d1, D4);
        }
        kernels::SpdSums s;
        for (int lane = 0; lane < 4; ++lane) {
          s.g_dot_dev += gd4[lane];
          s.dev_sq += d04[lane];
          s.new_dev_sq += d14[lane];
        }
        for (; i < e; ++i) {
          float gd = 0, d0 = 0, d1 = 0;
          one.template operator()<float>(i, gd, d0, d1);
          s.g_dot_dev += gd;
          s.dev_sq += d0;
          s.new_dev_sq += d1;
        }
        part[c] = s;
      }
    });
    kernels::SpdSums s;
    for (const auto& q : part) {
      s.g_dot_dev += q.g_dot_dev;
      s.dev_sq += q.dev_sq;
      s.new_dev_sq += q.new_dev_sq;
    }
    *sums = s;
  }

  void spd_project(float* p, const float* anchor, int64_t n, float scale) override {
    parallel_for(n, kParallelGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) p[i] -= scale * (p[i] - (anchor ? anchor[i] : 0.0f));
    });
  }
};

}  // namespace

// This variant's kernels, built on first use.
kernels::Kernels& instance() {
  static CpuKernels k;
  return k;
}
