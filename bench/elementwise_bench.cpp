// elementwise_bench: the CPU's elementwise kernels on one activation of vit-fmnist's training step (128 images x
// 50 tokens x 192 floats): a contiguous add, a broadcast add (a row of 192, as a bias), a fill with zeros and a
// transposed copy. These are bound by memory; what matters is that both threads share them.
//   elementwise_bench [--iters N]      prints one line per kernel: median and min microseconds, GB/s moved
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "core/ops.h"
#include "kernels/threads.h"

using namespace spdlab;

int main(int argc, char** argv) {
  const int iters = bench::iters_flag(argc, argv, "elementwise_bench", 400);
  if (iters < 1) return 2;
  const int64_t rows = 6400, cols = 192;
  Generator gen(1);
  const Tensor a = Tensor::randn({rows, cols}, gen), b = Tensor::randn({rows, cols}, gen),
               bias = Tensor::randn({cols}, gen), t = Tensor::randn({cols, rows}, gen).transpose(0, 1);
  const double mb = rows * cols * 4.0 / 1e6;  // one operand, MB
  struct Case {
    const char* name;
    double mb_moved;
    std::function<Tensor()> run;
  };
  const std::vector<Case> cases = {
      {"add", 3 * mb, [&] { return add(a, b); }},
      {"add_bias", 2 * mb, [&] { return add(a, bias); }},
      {"zeros", mb, [&] { return Tensor::zeros({rows, cols}); }},
      {"transpose_copy", 2 * mb, [&] { return t.contiguous(); }},
  };
  for (const Case& c : cases) {
    std::vector<double> ms;
    for (int i = 0; i < iters; ++i) {
      const double t0 = bench::now_ms();
      Tensor out = c.run();
      ms.push_back(bench::now_ms() - t0);
    }
    const bench::Timing s = bench::summarize(ms);
    std::printf("spdlab elementwise %s shape=%lldx%lld median_us=%.1f min_us=%.1f gb_per_s=%.1f threads=%d\n", c.name,
                static_cast<long long>(rows), static_cast<long long>(cols), s.median * 1e3, s.min * 1e3,
                c.mb_moved / s.median, get_num_threads());
  }
}
