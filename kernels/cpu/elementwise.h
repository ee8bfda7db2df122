// Elementwise kernels: unary ops and their derivatives, broadcasting binary ops, where. Compiled once per
// instruction set (kernels/cpu/variant.h); the strided walk is kernels/cpu/iter.h.
#ifndef SPDLAB_CPU_VARIANT
#error "kernels/cpu/variant.h includes this file, inside an instruction set's namespace; include that instead"
#endif

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
  it.for_each_span([&](int64_t r, const int64_t* off, int64_t j0, int64_t j1) {
    const T* pa = a + off[0] + j0 * sa;
    const T* pb = b + off[1] + j0 * sb;
    T* po = out + r * in + j0;
    const int64_t w = j1 - j0;
    if (sa == 1 && sb == 1) for (int64_t i = 0; i < w; ++i) po[i] = f(pa[i], pb[i]);
    else if (sa == 1 && sb == 0) { T vb = pb[0]; for (int64_t i = 0; i < w; ++i) po[i] = f(pa[i], vb); }
    else if (sa == 0 && sb == 1) { T va = pa[0]; for (int64_t i = 0; i < w; ++i) po[i] = f(va, pb[i]); }
    else for (int64_t i = 0; i < w; ++i) po[i] = f(pa[i * sa], pb[i * sb]);
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

template <typename C, typename T>
void where_loop(const Iter& it, const C* c, const T* a, const T* b, T* out) {
  int64_t in = it.inner();
  int64_t sc = it.strides[0][it.ndim - 1], sa = it.strides[1][it.ndim - 1], sb = it.strides[2][it.ndim - 1];
  it.for_each_span([&](int64_t r, const int64_t* off, int64_t j0, int64_t j1) {
    T* po = out + r * in;
    for (int64_t i = j0; i < j1; ++i) po[i] = c[off[0] + i * sc] != C(0) ? a[off[1] + i * sa] : b[off[2] + i * sb];
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