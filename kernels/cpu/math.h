// Scalar math the loops vectorize: float exp and erf without libm calls, and GELU from them. Part of the
// per-instruction-set half of the CPU backend (kernels/cpu/variant.h): compiled once per instruction set.
#ifndef SPDLAB_CPU_VARIANT
#error "kernels/cpu/variant.h includes this file, inside an instruction set's namespace; include that instead"
#endif

// Vectorizable float math. libm's expf and erff are calls GCC cannot vectorize, and they made GELU and
// softmax a quarter of a training step. These are branch-free, so `#pragma omp simd` loops over them run
// 8 lanes wide under AVX2. Doubles keep libm. Always inlined: in a large function GCC may call fast_erf
// instead, and the loop around the call then runs one float at a time (seen in the SGEMM's packing of B over
// rows of 256 floats: fc2's backward group took 71 ms at 1 thread instead of 54).
#define SPDLAB_SIMD _Pragma("omp simd")

// exp for float: x = n ln2 + r with |r| <= ln2 / 2, e^r by Cephes' degree-6 polynomial (within 2 ulp of
// expf), 2^n applied as two factors 2^(n/2) 2^(n - n/2) so every intermediate is a normal float. Large
// inputs overflow to inf through that product, very negative ones (and -inf) underflow to 0, NaN stays NaN.
__attribute__((always_inline)) inline float fast_exp(float x) {
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
__attribute__((always_inline)) inline float fast_erf(float x) {
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
__attribute__((always_inline)) inline T gelu_exact(T x) {
  return T(0.5) * x * (T(1) + fast_erf(x * T(M_SQRT1_2)));
}
// d/dx of x Phi(x): Phi(x) + x phi(x).
template <typename T>
__attribute__((always_inline)) inline T gelu_exact_grad(T x) {
  T cdf = T(0.5) * (T(1) + fast_erf(x * T(M_SQRT1_2)));
  T pdf = fast_exp(T(-0.5) * x * x) * T(0.3989422804014327);  // 1/sqrt(2 pi)
  return cdf + x * pdf;
}
template <typename T>
inline T gelu_tanh(T x) {
  const T k = T(0.7978845608028654);  // sqrt(2/pi)
  return T(0.5) * x * (T(1) + std::tanh(k * (x + T(0.044715) * x * x * x)));
}