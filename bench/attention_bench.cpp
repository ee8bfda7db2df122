// attention_bench: the attention kernels alone, as qkv_attention hands them a ViT block's fused qkv activation
// [B, T, 3 C] (q, k, v of head h at columns h D of each third), on the two configs' shapes: vit-fmnist (B 128,
// T 50, 3 heads of 64) and vit-tiny16 (B 16, T 197, 3 heads of 64). Forward (q k^T, softmax, p v) and backward
// (p again, dv, dp, softmax', dq, dk) are timed apart.
//   attention_bench [--iters N]      prints one line per config and pass: median and min ms, GFLOP/s of its
//                                    products (2 per head forward, 5 backward, each 2 T T D flops)
// Not part of run.sh: for changes to the attention kernels, built against both libraries and run alternately.
#include <cmath>
#include <cstdio>
#include <functional>

#include "bench/bench_common.h"
#include "core/tensor.h"
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
  }
}
