// group_bench: the backward of one vit-fmnist block's four linear layers, as ops_detail::linear_backward hands
// them to the kernels: dx and dW as one group of products, and db (the column sums of dy) beside them, on 6400
// rows (128 images x 50 tokens). qkv and fc1 read layer norm's output through a prologue on x, fc2 reads
// GELU's through one and multiplies dx by GELU's derivative; proj has neither (gemm_group, db after).
//   group_bench [--iters N]      prints one line per layer: median and min milliseconds, GFLOP/s of dx and dW
// Not part of run.sh: for changes to how a group's products share the threads, built against both libraries and
// run alternately.
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "core/tensor.h"
#include "kernels/kernels.h"
#include "kernels/threads.h"

using namespace spdlab;
using Kernels = kernels::Kernels;

int main(int argc, char** argv) {
  const int iters = bench::iters_flag(argc, argv, "group_bench", 30);
  if (iters < 1) return 2;
  Kernels& k = kernels::get(Device::cpu);
  const int64_t rows = 6400, d = 192;
  Generator gen(1);
  auto floats = [&](int64_t r, int64_t c) { return Tensor::randn({r, c}, gen); };
  std::vector<double> mean(rows), rstd(rows);
  for (int64_t r = 0; r < rows; ++r) {
    mean[r] = 0.01 * static_cast<double>(r % 7);
    rstd[r] = 1.0 + 0.001 * static_cast<double>(r % 11);
  }
  const Tensor gamma = floats(1, d), beta = floats(1, d);
  struct Layer {
    const char* name;
    int64_t n, kd;  // w [n, kd]: x [rows, kd] -> y [rows, n]
    Kernels::Prologue::Kind x_pro;
    bool gelu_grad;
  };
  const Layer layers[] = {{"qkv", 3 * d, d, Kernels::Prologue::layer_norm, false},
                          {"proj", d, d, Kernels::Prologue::none, false},
                          {"fc1", 4 * d, d, Kernels::Prologue::layer_norm, false},
                          {"fc2", d, 4 * d, Kernels::Prologue::gelu, true}};
  for (const Layer& l : layers) {
    const Tensor dy = floats(rows, l.n), x = floats(rows, l.kd), w = floats(l.n, l.kd), h = floats(rows, l.kd);
    Tensor dx = Tensor::empty({rows, l.kd}), dw = Tensor::empty({l.n, l.kd}), db = Tensor::empty({l.n});
    Kernels::GemmExCall g[2] = {
        {false, false, rows, l.kd, l.n, dy.raw_data(), l.n, w.raw_data(), l.kd, dx.raw_data(), l.kd, {}},
        {true, false, l.n, l.kd, rows, dy.raw_data(), l.n, x.raw_data(), l.kd, dw.raw_data(), l.kd, {}}};
    if (l.gelu_grad) g[0].ex.gelu_grad = h.raw_data();
    g[1].ex.b.kind = l.x_pro;
    if (l.x_pro == Kernels::Prologue::layer_norm) {
      g[1].ex.b.mean = mean.data();
      g[1].ex.b.rstd = rstd.data();
      g[1].ex.b.gamma = gamma.raw_data();
      g[1].ex.b.beta = beta.raw_data();
    }
    const Kernels::ColumnSums sums{dy.raw_data(), db.raw_data(), rows, l.n};
    auto run = [&] {
      if (l.x_pro != Kernels::Prologue::none || l.gelu_grad) return k.gemm_ex_group(DType::f32, g, 2, sums);
      Kernels::Gemm p[2];
      for (int i = 0; i < 2; ++i)
        p[i] = {g[i].trans_a, g[i].trans_b, g[i].M, g[i].N, g[i].K, 1.0, g[i].A, g[i].lda, g[i].B, g[i].ldb, 0.0,
                g[i].C, g[i].ldc};
      k.gemm_group(DType::f32, p, 2);
      k.reduce(kernels::Reduce::sum, DType::f32, dy.raw_data(), db.raw_data(), 1, rows, l.n, nullptr);
    };
    const bench::Timing s = bench::time_runs(run, iters);
    const double gflop = 2.0 * 2.0 * static_cast<double>(rows * l.n * l.kd) / 1e9;  // dx and dW
    std::printf("spdlab group %s rows=%lld n=%lld k=%lld median_ms=%.3f min_ms=%.3f gflops=%.1f threads=%d\n", l.name,
                static_cast<long long>(rows), static_cast<long long>(l.n), static_cast<long long>(l.kd), s.median,
                s.min, gflop / (s.median / 1e3), get_num_threads());
  }
}
