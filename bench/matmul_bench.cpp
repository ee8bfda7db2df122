// matmul op vs raw cblas_sgemm: GFLOP/s for square float32 products, to show the wrapper's overhead.
// Usage: matmul_bench [rounds]. Prints one line per size with the medians of `rounds` interleaved runs.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"

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
  return 0;
}
