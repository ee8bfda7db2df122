// attention_bench: the attention kernels alone, as qkv_attention hands them a ViT block's fused qkv activation
// [B, T, 3 C] (q, k, v of head h at columns h D of each third), on the two configs' shapes: vit-fmnist (B 128,
// T 50, 3 heads of 64) and vit-tiny16 (B 16, T 197, 3 heads of 64). Forward (q k^T, softmax, p v) and backward
// (p again, dv, dp, softmax', dq, dk) are timed apart.
//   attention_bench [--iters N]      prints one line per config and pass: median and min ms, GFLOP/s of its
//                                    products (2 per head forward, 5 backward, each 2 T T D flops); then, on
//                                    CPUs with AVX2, softmax's row of exponentials (kernels/cpu/nn.h) alone, its
//                                    plain loop and its AVX2 version alternately, on one thread: ns an element
//                                    over every query row of a block's heads, rows of T scores
// Not part of run.sh: for changes to the attention kernels, built against both libraries and run alternately.
#include <cmath>
#include <cstdio>
#include <functional>

#include "bench/bench_common.h"
#include "core/tensor.h"
#include "kernels/cpu/sgemm.h"
#include "kernels/kernels.h"
#include "kernels/threads.h"

using namespace spdlab;

int main(int argc, char** argv) {
  const int iters = bench::iters_flag(argc, argv, "attention_bench", 30);
  if (iters < 1) return 2;
  kernels::Kernels& k = kernels::get(Device::cpu);
  struct Shape {
    const char* name;
    int64_t B, T, H, D;
  };
  const Shape shapes[] = {{"vit-fmnist", 128, 50, 3, 64}, {"vit-tiny16", 16, 197, 3, 64}};
  Generator gen(1);
  for (const Shape& s : shapes) {
    const int64_t C = s.H * s.D;
    const Tensor qkv = Tensor::randn({s.B, s.T, 3 * C}, gen), dout = Tensor::randn({s.B, s.T, C}, gen);
    Tensor out = Tensor::empty({s.B, s.T, C}), dqkv = Tensor::empty({s.B, s.T, 3 * C});
    Tensor saved = Tensor::empty({k.attention_saved_numel(s.B, s.H, s.T, s.T)});
    const int64_t in_str[3] = {s.T * 3 * C, s.D, 3 * C}, out_str[3] = {s.T * C, s.D, C};
    const float* x = static_cast<const float*>(qkv.raw_data());
    float* g = static_cast<float*>(dqkv.raw_data());
    const double scale = 1.0 / std::sqrt(static_cast<double>(s.D));
    auto fwd = [&] {
      k.attention_fwd(DType::f32, s.B, s.H, s.T, s.T, s.D, x, in_str, x + C, in_str, x + 2 * C, in_str, out.raw_data(),
                      out_str, saved.raw_data(), scale);
    };
    auto bwd = [&] {
      k.attention_bwd(DType::f32, s.B, s.H, s.T, s.T, s.D, x, in_str, x + C, in_str, x + 2 * C, in_str,
                      saved.raw_data(), dout.raw_data(), out_str, g, in_str, g + C, in_str, g + 2 * C, in_str, scale);
    };
    const double product = 2.0 * static_cast<double>(s.B * s.H * s.T * s.T * s.D) / 1e9;  // GFLOP of one
    struct Pass {
      const char* name;
      std::function<void()> run;
      int products;
    };
    const Pass passes[] = {{"fwd", fwd, 2}, {"bwd", bwd, 5}};
    for (const Pass& p : passes) {
      const bench::Timing t = bench::time_runs(p.run, iters);
      std::printf(
          "spdlab attention %s %s B=%lld T=%lld H=%lld D=%lld median_ms=%.3f min_ms=%.3f gflops=%.1f threads=%d\n",
          s.name, p.name, static_cast<long long>(s.B), static_cast<long long>(s.T), static_cast<long long>(s.H),
          static_cast<long long>(s.D), t.median, t.min, p.products * product / (t.median / 1e3), get_num_threads());
    }
#if SPDLAB_HAVE_AVX2_KERNELS
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      const int64_t rows = s.B * s.H * s.T;
      const Tensor scores = Tensor::randn({rows, s.T}, gen);
      Tensor probs = Tensor::empty({rows, s.T});
      const float* in = static_cast<const float*>(scores.raw_data());
      float* o = static_cast<float*>(probs.raw_data());
      using Row = double (*)(const float*, float*, int64_t, float, float);
      const Row fns[2] = {cpu::avx2::softmax_exp_plain, cpu::avx2::softmax_exp_avx2};
      bench::Timing t[2] = {{1e30, 1e30}, {1e30, 1e30}};
      for (int round = 0; round < 5; ++round)  // the two in turn, round after round
        for (int f = 0; f < 2; ++f) {
          const bench::Timing r = bench::time_runs(
              [&] {
                for (int64_t i = 0; i < rows; ++i) fns[f](in + i * s.T, o + i * s.T, s.T, 0.125f, 1.0f);
              },
              std::max(1, iters / 5));
          t[f].median = std::min(t[f].median, r.median);
          t[f].min = std::min(t[f].min, r.min);
        }
      const double n = static_cast<double>(rows * s.T) / 1e6;  // ms -> ns an element
      std::printf("spdlab softmax_exp_row %s cols=%lld plain_ns=%.3f avx2_ns=%.3f (best of 5 rounds' medians)\n",
                  s.name, static_cast<long long>(s.T), t[0].median / n, t[1].median / n);
    }
#endif
  }
}
