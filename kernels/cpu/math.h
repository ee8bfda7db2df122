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
// Its constants are shared with fast_exp_8 below, the same steps on vectors.
namespace exp_constants {
constexpr float kLo = -105.0f, kHi = 89.0f;  // the clamps
constexpr float kMagic = 12582912.0f;        // 1.5 * 2^23: adding it rounds to an integer (round to nearest)
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;  // ln2 in two parts (Cephes C1, C2) keeps r exact
constexpr float kP[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                         4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
}  // namespace exp_constants
__attribute__((always_inline)) inline float fast_exp(float x) {
  using namespace exp_constants;
  x = x < kLo ? kLo : x;
  x = x > kHi ? kHi : x;
  float t = x * kLog2e + kMagic;
  float n = t - kMagic;
  float r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = kP[0];
  p = p * r + kP[1];
  p = p * r + kP[2];
  p = p * r + kP[3];
  p = p * r + kP[4];
  p = p * r + kP[5];
  float e = p * r * r + r + 1.0f;
  int32_t ni = static_cast<int32_t>(n);
  int32_t h = ni >> 1;
  float s1 = std::bit_cast<float>((h + 127) << 23), s2 = std::bit_cast<float>((ni - h + 127) << 23);
  return e * s1 * s2;
}
#if SPDLAB_CPU_AVX2
// fast_exp on V vectors of 8 floats, the same operations one for one: where the scalar code reads a * b + c,
// the compiler fuses it into one multiply-add, and so does this. The clamps, as max and min with the bound
// first, keep a NaN as the scalar comparisons do. Each step runs on all V vectors before the next: one exp is a
// chain of some 20 dependent operations, and a core keeps only a few dozen of them waiting, so vectors done one
// after another overlap little (one at a time: about 3 cycles an element). Used by softmax (nn.h), whose test
// checks it against fast_exp bit for bit (tests/test_sgemm.cpp).
template <int V>
__attribute__((always_inline)) inline void fast_exp_8(__m256 (&x)[V]) {
  using namespace exp_constants;
  const __m256 magic = _mm256_set1_ps(kMagic);
  const __m256i bias = _mm256_set1_epi32(127);
  __m256 n[V], r[V], p[V];
  for (int v = 0; v < V; ++v) {
    x[v] = _mm256_min_ps(_mm256_set1_ps(kHi), _mm256_max_ps(_mm256_set1_ps(kLo), x[v]));
    n[v] = _mm256_sub_ps(_mm256_fmadd_ps(x[v], _mm256_set1_ps(kLog2e), magic), magic);
  }
  for (int v = 0; v < V; ++v) r[v] = _mm256_fnmadd_ps(n[v], _mm256_set1_ps(kLn2Hi), x[v]);
  for (int v = 0; v < V; ++v) r[v] = _mm256_fnmadd_ps(n[v], _mm256_set1_ps(kLn2Lo), r[v]);
  for (int v = 0; v < V; ++v) p[v] = _mm256_set1_ps(kP[0]);
  for (int i = 1; i < 6; ++i)
    for (int v = 0; v < V; ++v) p[v] = _mm256_fmadd_ps(p[v], r[v], _mm256_set1_ps(kP[i]));
  for (int v = 0; v < V; ++v) {
    const __m256 e = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p[v], r[v]), r[v], r[v]), _mm256_set1_ps(1.0f));
    const __m256i ni = _mm256_cvttps_epi32(n[v]), h = _mm256_srai_epi32(ni, 1);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), bias), 23));
    x[v] = _mm256_mul_ps(_mm256_mul_ps(e, s1), s2);
  }
}
#endif
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