// matmul op vs raw cblas_sgemm: GFLOP/s for square float32 products, to show the wrapper's overhead; then
// raw cblas_sgemm alone on the products of a vit-fmnist training step (batch 128: 6400 token rows, dim 192,
// MLP 768), the rate a whole training step is measured against.
// Usage: matmul_bench [rounds]. Prints one line per size with the medians of `rounds` interleaved runs.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "kernels/threads.h"

using namespace spdlab;

static double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 7;
  autograd::NoGradGuard ng;
  std::printf("threads %d\n%-6s %14s %14s %8s\n", get_num_threads(), "n", "matmul GF/s", "sgemm GF/s", "ratio");
  for (int64_t n : {512, 1024, 2048}) {
    Generator g(1);
    Tensor a = Tensor::randn({n, n}, g), b = Tensor::randn({n, n}, g), c = Tensor::empty({n, n});
    double flop = 2.0 * n * n * n;
    std::vector<double> t_op, t_raw;
    int reps = n <= 512 ? 20 : n <= 1024 ? 4 : 1;
    matmul(a, b);  // warm-up: first-touch pages, OpenBLAS buffers
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

  struct Product {
    const char* name;
    bool ta, tb;
    int M, N, K;
  };
  const Product vit[] = {{"qkv forward", false, true, 6400, 576, 192},  {"fc1 forward", false, true, 6400, 768, 192},
                         {"fc2 forward", false, true, 6400, 192, 768},  {"fc1 input grad", false, false, 6400, 192, 768},
                         {"fc2 input grad", false, false, 6400, 768, 192}, {"fc1 weight grad", true, false, 768, 192, 6400},
                         {"fc2 weight grad", true, false, 192, 768, 6400}};
  std::printf("\nvit-fmnist training products (cblas_sgemm, median of %d)\n%-16s %5s %5s %5s %10s\n", rounds, "product",
              "M", "N", "K", "GF/s");
  for (const Product& p : vit) {
    const int lda = p.ta ? p.M : p.K, ldb = p.tb ? p.K : p.N;
    std::vector<float> A(size_t(p.M) * p.K, 0.5f), B(size_t(p.K) * p.N, 0.25f), C(size_t(p.M) * p.N);
    std::vector<double> t;
    for (int r = 0; r < rounds + 1; ++r) {
      double t0 = seconds();
      cblas_sgemm(CblasRowMajor, p.ta ? CblasTrans : CblasNoTrans, p.tb ? CblasTrans : CblasNoTrans, p.M, p.N, p.K,
                  1.0f, A.data(), lda, B.data(), ldb, 0.0f, C.data(), p.N);
      if (r > 0) t.push_back(seconds() - t0);  // the first call is a warm-up
    }
    std::printf("%-16s %5d %5d %5d %10.1f\n", p.name, p.M, p.N, p.K, 2.0 * p.M * p.N * p.K / median(t) / 1e9);
  }
  return 0;
}
