// optim_bench: ms per optimizer step (median) for SGD, Adam, AdamW, L2-SP and SPD on the parameter set of
// vit_tiny_patch16_224, next to a memory-bandwidth floor measured in the same binary: the cheapest fused loop
// with SPD's traffic (read p, g, m, v, w0; write p, m, v: 32 bytes per parameter). A benchmark, never a test;
// bench/torch_optim.py measures PyTorch on the same shapes.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/ops.h"
#include "bench/bench_common.h"
#include "kernels/threads.h"
#include "optim/optim.h"

using namespace spdlab;
using namespace spdlab::optim;
using namespace spdlab::bench;

namespace {

// timm's vit_tiny_patch16_224 in named_parameters() order: 224x224x3, patch 16, dim 192, depth 12, mlp 768.
std::vector<std::pair<std::string, Shape>> vit_tiny_shapes() {
  const int64_t D = 192, H = 768, N = 197;
  std::vector<std::pair<std::string, Shape>> s = {{"cls_token", {1, 1, D}},
                                                  {"pos_embed", {1, N, D}},
                                                  {"patch_embed.proj.weight", {D, 3, 16, 16}},
                                                  {"patch_embed.proj.bias", {D}}};
  for (int b = 0; b < 12; ++b) {
    const std::string p = "blocks." + std::to_string(b) + ".";
    for (auto [name, shape] : std::vector<std::pair<std::string, Shape>>{
             {"norm1.weight", {D}}, {"norm1.bias", {D}}, {"attn.qkv.weight", {3 * D, D}}, {"attn.qkv.bias", {3 * D}},
             {"attn.proj.weight", {D, D}}, {"attn.proj.bias", {D}}, {"norm2.weight", {D}}, {"norm2.bias", {D}},
             {"mlp.fc1.weight", {H, D}}, {"mlp.fc1.bias", {H}}, {"mlp.fc2.weight", {D, H}}, {"mlp.fc2.bias", {D}}})
      s.emplace_back(p + name, shape);
  }
  for (auto [name, shape] : std::vector<std::pair<std::string, Shape>>{
           {"norm.weight", {D}}, {"norm.bias", {D}}, {"head.weight", {1000, D}}, {"head.bias", {1000}}})
    s.emplace_back(name, shape);
  return s;
}

// The floor: the SPD pass's memory traffic with trivial arithmetic, one parallel region over fixed chunks of
// every tensor (so small tensors cost no extra region).
struct Floor {
  struct Piece {
    float *p, *m, *v;
    const float *g, *w0;
    int64_t n;
  };
  std::vector<Piece> pieces;
  std::vector<Tensor> keep;

  explicit Floor(const std::vector<std::pair<std::string, Shape>>& shapes, Generator& gen) {
    for (const auto& [name, shape] : shapes) {
      Tensor p = Tensor::randn(shape, gen), g = Tensor::randn(shape, gen), m = Tensor::zeros(shape),
             v = Tensor::zeros(shape), w0 = Tensor::randn(shape, gen);
      keep.insert(keep.end(), {p, g, m, v, w0});
      const int64_t n = p.numel(), chunk = 16384;
      for (int64_t b = 0; b < n; b += chunk)
        pieces.push_back({p.data<float>() + b, m.data<float>() + b, v.data<float>() + b, g.data<float>() + b,
                          w0.data<float>() + b, std::min(chunk, n - b)});
    }
  }

  void run() {
    const int64_t count = static_cast<int64_t>(pieces.size());
#pragma omp parallel for schedule(static) num_threads(get_num_threads())
    for (int64_t c = 0; c < count; ++c) {
      const Piece& q = pieces[c];
      for (int64_t i = 0; i < q.n; ++i) {
        float m = 0.5f * q.m[i] + q.g[i], v = 0.5f * q.v[i] + q.g[i];
        q.m[i] = m;
        q.v[i] = v;
        q.p[i] = q.p[i] + 1e-6f * (m + v - q.w0[i]);
      }
    }
  }
};

struct Case {
  std::string label, kind;
  Hyperparams h;
  double bytes_per_param;  // the traffic of one fused pass
};

}  // namespace

int main(int argc, char** argv) {
  int steps = 30, warmup = 3;
  std::string only;
  for (int i = 1; i < argc; i += 2) {
    std::string a = argv[i];
    if (i + 1 < argc && a == "--steps") steps = std::max(1, std::atoi(argv[i + 1]));
    else if (i + 1 < argc && a == "--warmup") warmup = std::max(0, std::atoi(argv[i + 1]));
    else if (i + 1 < argc && a == "--only") only = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: optim_bench [--steps N] [--warmup N] [--only sgd|adam|adamw|l2sp|spd]\n");
      return 2;
    }
  }
  const auto shapes = vit_tiny_shapes();
  int64_t total = 0;
  for (const auto& [n, s] : shapes) total += numel_of(s);
  std::printf("optim_bench: vit_tiny_patch16_224 parameter set, %zu tensors, %lld parameters, %d threads, "
              "median of %d steps, taken in turn\n\n",
              shapes.size(), static_cast<long long>(total), get_num_threads(), steps);
  std::printf("%-26s %9s %9s %8s %8s\n", "", "ms/step", "min", "x floor", "GB/s");

  // Every optimizer and the floor take one step in turn, round after round, so a slow spell of a shared
  // machine lands on all of them alike and the ratios to the floor stay meaningful.
  struct Runner {
    std::string label;
    double bytes_per_param;
    std::function<void(int)> step;  // step(i): the i-th step, i counting warm-up steps too
    std::unique_ptr<Optimizer> opt;
    std::vector<double> times;
  };
  std::vector<Runner> runners;
  Generator gen(0);
  Floor floor(shapes, gen);
  runners.push_back({"floor (32 B/param)", 32, [&](int) { floor.run(); }, nullptr, {}});

  Hyperparams sgd;
  sgd.lr = 0.01;
  sgd.momentum = 0.9;
  sgd.weight_decay = 0.05;
  Hyperparams adam;
  adam.weight_decay = 0.05;
  Hyperparams spd;
  spd.lambda = 1.0;
  const std::vector<Case> cases = {{"sgd (momentum 0.9)", "sgd", sgd, 20},
                                   {"adam", "adam", adam, 28},
                                   {"adamw", "adamw", adam, 28},
                                   {"l2sp", "l2sp", Hyperparams{}, 32},
                                   {"spd", "spd", spd, 32}};
  // Four gradient sets, rotated, so SPD's condition fires on some tensors and not others, as in training.
  const int nsets = 4;
  std::vector<NamedTensors> all_params(cases.size());
  std::vector<std::vector<std::vector<Tensor>>> all_grads(cases.size());
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& c = cases[ci];
    if (!only.empty() && c.kind != only) continue;
    Generator g(1);
    NamedTensors& params = all_params[ci];
    auto& grads = all_grads[ci];
    grads.resize(nsets);
    for (const auto& [name, shape] : shapes) {
      params.emplace_back(name, Tensor::randn(shape, g).requires_grad_());
      for (int s = 0; s < nsets; ++s) grads[s].push_back(mul(Tensor::randn(shape, g), 1e-2));
    }
    auto opt = make_optimizer(c.kind, timm_param_groups(params), c.h);
    if (c.kind == "l2sp" || c.kind == "spd") opt->capture_anchors();
    Optimizer* o = opt.get();
    runners.push_back({c.label, c.bytes_per_param, [&params, &grads, o](int i) {
                         for (size_t k = 0; k < params.size(); ++k) params[k].second.set_grad(grads[i % nsets][k]);
                         o->step();
                       },
                       std::move(opt), {}});
  }
  for (int i = 0; i < warmup + steps; ++i)
    for (Runner& r : runners) {
      double t0 = now_ms();
      r.step(i);
      if (i >= warmup) r.times.push_back(now_ms() - t0);
    }

  const Timing fl = summarize(runners[0].times);
  for (Runner& r : runners) {
    std::string note;
    if (auto* s = dynamic_cast<SPD*>(r.opt.get())) {
      int64_t fired = 0, taken = 0;
      for (const SpdTensorStats& st : s->stats()) {
        fired += st.fired;
        taken += st.steps;
      }
      char buf[96];
      std::snprintf(buf, sizeof buf, "(condition fired on %.0f%% of tensor-steps; each costs a 12 B/param pass)",
                    100.0 * double(fired) / double(std::max<int64_t>(taken, 1)));
      note = buf;
    }
    const Timing t = summarize(r.times);
    std::printf("%-26s %9.2f %9.2f %8.2f %8.1f  %s\n", r.label.c_str(), t.median, t.min, t.median / fl.median,
                r.bytes_per_param * double(total) / (t.median * 1e6), note.c_str());
  }
  return 0;
}
