// Products on the CPU, against the machine's measured peak:
//   1. the peak: every thread runs a loop of independent fused multiply-adds (12 chains, no memory), so
//      peak GFLOP/s = threads x FMA units x lanes x 2 flops x clock, measured rather than assumed; with 256-bit
//      AVX2 vectors (8 lanes) and, where the CPU has AVX-512, 512-bit ones (16 lanes: on CPUs with full-width
//      512-bit FMA units, Zen 5 and Xeons with two, twice the AVX2 figure). The peak is the larger. The clock is
//      read from one dependent chain (one FMA per latency, 4 cycles on Zen and Skylake: printed as an estimate);
//   2. spdlab's own SGEMM (kernels/cpu/sgemm.h) against OpenBLAS's cblas_sgemm on the seven product shapes of a
//      vit-fmnist training step (batch 128: 6400 token rows, dim 192, MLP 768) and on squares; the two run
//      alternately, round after round, and each line gives the medians, GFLOP/s, the fraction of the peak and
//      the ratio;
//   3. spdlab's matmul op against raw cblas_sgemm on squares (the wrapper's overhead).
// Usage: matmul_bench [rounds]   (default 7; SPDLAB_NUM_THREADS sets the threads, default every core)
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "kernels/cpu/sgemm.h"
#include "kernels/kernels.h"
#include "kernels/threads.h"

using namespace spdlab;

static double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

#if SPDLAB_HAVE_AVX2_KERNELS
#include <immintrin.h>
// Independent FMA chains: throughput-bound. Returns flops done.
__attribute__((target("avx2,fma"))) static double fma_throughput(int64_t iters, float* sink) {
  __m256 a[12], x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(float(i));
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], x, y);
  __m256 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, a[i]);
  *sink = _mm256_cvtss_f32(s);
  return double(iters) * 12 * 8 * 2;
}
__attribute__((target("avx512f"))) static double fma_throughput_512(int64_t iters, float* sink) {
  __m512 a[12], x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(float(i));
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], x, y);
  __m512 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, a[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  *sink = lanes[0];
  return double(iters) * 12 * 16 * 2;
}
// One dependent chain: latency-bound, one FMA per latency.
__attribute__((target("avx2,fma"))) static void fma_latency(int64_t iters, float* sink) {
  __m256 a = _mm256_set1_ps(1.0f), x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) a = _mm256_fmadd_ps(a, x, y);
  *sink = _mm256_cvtss_f32(a);
}
#endif

// Measured peak GFLOP/s over `threads` threads (the best of `rounds`) with 256-bit and with 512-bit vectors (0
// where the CPU lacks them), and the clock estimate in GHz.
static void measure_peak(int threads, int rounds, double* peak, double* peak512, double* ghz) {
  *peak = *peak512 = 0;
  *ghz = 0;
#if SPDLAB_HAVE_AVX2_KERNELS
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return;
  const bool avx512 = __builtin_cpu_supports("avx512f");
  const int64_t iters = 20'000'000;
  std::vector<float> sink(64 * threads);
  for (int r = 0; r < rounds; ++r) {
    double flops = 0, t0 = seconds();
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    flops += fma_throughput(iters, &sink[64 * omp_get_thread_num()]);
    *peak = std::max(*peak, flops / (seconds() - t0) / 1e9);
    if (avx512) {
      flops = 0, t0 = seconds();
#pragma omp parallel num_threads(threads) reduction(+ : flops)
      flops += fma_throughput_512(iters, &sink[64 * omp_get_thread_num()]);
      *peak512 = std::max(*peak512, flops / (seconds() - t0) / 1e9);
    }
    t0 = seconds();
    fma_latency(iters, &sink[0]);
    *ghz = std::max(*ghz, iters * 4.0 / (seconds() - t0) / 1e9);
  }
#endif
}

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 7;
  autograd::NoGradGuard ng;
  const int threads = get_num_threads();
  double peak256 = 0, peak512 = 0, ghz = 0, peak256_1 = 0, peak512_1 = 0, ghz1 = 0;
  measure_peak(threads, 5, &peak256, &peak512, &ghz);
  measure_peak(1, 5, &peak256_1, &peak512_1, &ghz1);
  const double peak = std::max(peak256, peak512), peak1 = std::max(peak256_1, peak512_1);
  std::printf("threads %d isa %s\n", threads, kernels::cpu_isa());
  char wide[64] = "no AVX-512 on this CPU";
  if (peak512 > 0) std::snprintf(wide, sizeof wide, "%.1f with AVX-512's 512-bit ones", peak512);
  std::printf("peak: %.1f GFLOP/s on %d threads (%.1f on 1), from 12 independent FMA chains per thread: %.1f with "
              "AVX2's 256-bit vectors, %s; clock about %.2f GHz (one dependent FMA chain at 4 cycles each): %.1f "
              "flops per cycle per core\n",
              peak, threads, peak1, peak256, wide, ghz, peak1 / std::max(ghz, 1e-9));

  struct Product {
    const char* name;
    bool ta, tb;
    int M, N, K;
  };
  const Product shapes[] = {
      {"qkv forward", false, true, 6400, 576, 192},    {"fc1 forward", false, true, 6400, 768, 192},
      {"fc2 forward", false, true, 6400, 192, 768},    {"fc1 input grad", false, false, 6400, 192, 768},
      {"fc2 input grad", false, false, 6400, 768, 192}, {"fc1 weight grad", true, false, 768, 192, 6400},
      {"fc2 weight grad", true, false, 192, 768, 6400}, {"square 256", false, false, 256, 256, 256},
      {"square 512", false, false, 512, 512, 512},     {"square 1024", false, false, 1024, 1024, 1024},
      {"square 2048", false, false, 2048, 2048, 2048}};
#if SPDLAB_HAVE_AVX2_KERNELS
  const bool have_sgemm = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  const bool have_sgemm = false;
#endif
  std::printf("\nspdlab sgemm vs OpenBLAS cblas_sgemm (medians of %d alternating rounds; %% of the %.1f GFLOP/s "
              "peak)\n%-16s %5s %5s %5s %10s %7s %10s %7s %7s\n",
              rounds, peak, "product", "M", "N", "K", "spdlab", "%peak", "openblas", "%peak", "ratio");
  for (const Product& p : shapes) {
    const int lda = p.ta ? p.M : p.K, ldb = p.tb ? p.K : p.N;
    Generator g(3);
    Tensor a = Tensor::randn({int64_t(p.M) * p.K}, g), b = Tensor::randn({int64_t(p.K) * p.N}, g);
    std::vector<float> C(size_t(p.M) * p.N);
    const double flop = 2.0 * p.M * p.N * p.K;
    const int reps = std::max(1, int(2e8 / flop));
    std::vector<double> t_own, t_blas;
    kernels::Kernels::GemmEx ex;
    for (int r = 0; r < rounds + 1; ++r) {
      double t0 = seconds();
#if SPDLAB_HAVE_AVX2_KERNELS
      if (have_sgemm)
        for (int i = 0; i < reps; ++i)
          cpu::avx2::sgemm(p.ta, p.tb, p.M, p.N, p.K, a.data<float>(), lda, b.data<float>(), ldb, C.data(), p.N, ex);
#endif
      double t1 = seconds();
      for (int i = 0; i < reps; ++i)
        cblas_sgemm(CblasRowMajor, p.ta ? CblasTrans : CblasNoTrans, p.tb ? CblasTrans : CblasNoTrans, p.M, p.N, p.K,
                    1.0f, a.data<float>(), lda, b.data<float>(), ldb, 0.0f, C.data(), p.N);
      double t2 = seconds();
      if (r == 0) continue;  // warm-up: first-touch pages, packing buffers
      t_own.push_back((t1 - t0) / reps);
      t_blas.push_back((t2 - t1) / reps);
    }
    const double own = have_sgemm ? flop / median(t_own) / 1e9 : 0, blas = flop / median(t_blas) / 1e9;
    std::printf("%-16s %5d %5d %5d %10.1f %6.0f%% %10.1f %6.0f%% %7.3f\n", p.name, p.M, p.N, p.K, own,
                100 * own / std::max(peak, 1e-9), blas, 100 * blas / std::max(peak, 1e-9), own / blas);
  }

  std::printf("\nthe matmul op vs raw cblas_sgemm (squares)\n%-6s %14s %14s %8s\n", "n", "matmul GF/s", "sgemm GF/s",
              "ratio");
  for (int64_t n : {512, 1024}) {
    Generator g(1);
    Tensor a = Tensor::randn({n, n}, g), b = Tensor::randn({n, n}, g), c = Tensor::empty({n, n});
    double flop = 2.0 * n * n * n;
    std::vector<double> t_op, t_raw;
    int reps = n <= 512 ? 20 : 4;
    matmul(a, b);
    for (int r = 0; r < rounds; ++r) {
      double t0 = seconds();
      for (int i = 0; i < reps; ++i) matmul(a, b);
      t_op.push_back((seconds() - t0) / reps);
      t0 = seconds();
      for (int i = 0; i < reps; ++i)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data<float>(), n, b.data<float>(), n,
                    0.0f, c.data<float>(), n);
      t_raw.push_back((seconds() - t0) / reps);
    }
    double op = flop / median(t_op) / 1e9, raw = flop / median(t_raw) / 1e9;
    std::printf("%-6lld %14.1f %14.1f %8.3f\n", static_cast<long long>(n), op, raw, op / raw);
  }
  return 0;
}
