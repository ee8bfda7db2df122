// The fused optimizer passes: SGD, Adam (with AdamW's decoupled decay, L2 and L2-SP penalties, AMSGrad) and
// SPD's two passes, each one loop over a tensor. Compiled once per instruction set (kernels/cpu/variant.h).
// optim/reference.h has the same updates as plain per-element functions, and tests/test_reference_paths.cpp
// checks that these passes match them.
#ifndef SPDLAB_CPU_VARIANT
#error "kernels/cpu/variant.h includes this file, inside an instruction set's namespace; include that instead"
#endif

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
inline void fused_sgd(float* p, const float* g, float* buf, int64_t n, float lr, float momentum, float dampening,
                      float wd, bool nesterov, bool first) {
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

inline void fused_adam(float* p, const float* g, float* m, float* v, float* vmax_p, const float* anchor, int64_t n,
                       const kernels::AdamStep& h) {
  const AdamCoef k(h);
  const float wd = float(h.weight_decay), keep = float(1.0 - h.lr * h.weight_decay);
  const float alpha = float(h.l2sp_alpha), beta = float(h.l2sp_beta);
  const bool decoupled = h.decoupled && h.weight_decay != 0, coupled = !h.decoupled && h.weight_decay != 0;
  const bool l2sp = alpha != 0.0f || beta != 0.0f, amsgrad = h.amsgrad;
  parallel_for(n, kParallelGrain, [&](int64_t b, int64_t e) {
    auto one = [=]<typename V>(int64_t i) {  // copies, as in fused_sgd
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

// SPD's first pass: the plain Adam step, and the sums its condition and ratio need, over the old and new p.
inline void fused_spd_adam(float* p, const float* g, float* m, float* v, const float* anchor, int64_t n,
                           const kernels::AdamStep& h, kernels::SpdSums* sums) {
  const AdamCoef k(h);
  // The products are summed in float over blocks of 8 per vector lane, then in double: widening every
  // element made the pass compute-bound without AVX. Chunks, blocks and lanes are summed in a fixed order,
  // so the sums do not depend on the thread count.
  const int64_t chunk = 16384, block = 32;
  int64_t nchunks = (n + chunk - 1) / chunk;
  std::vector<kernels::SpdSums> part(nchunks);
  parallel_for(nchunks, 2, [&](int64_t cb, int64_t ce) {
    auto one = [=]<typename V>(int64_t i, V& gd, V& d0, V& d1) {  // copies, as in fused_sgd
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

// SPD's second pass, on steps where the condition fired: p -= scale (p - anchor).
inline void fused_spd_project(float* p, const float* anchor, int64_t n, float scale) {
  parallel_for(n, kParallelGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) p[i] -= scale * (p[i] - (anchor ? anchor[i] : 0.0f));
  });
}
