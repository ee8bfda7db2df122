// cuda_bench: spdlab's side of the GPU benchmark (bench/torch_cuda.py is PyTorch's, tests/cuda/device_check.sh
// runs both, interleaved, and prints the table). In one process, on one device:
//   - a ViT training step (forward, cross-entropy, backward, AdamW step) and an inference forward, each in fp32
//     and with TF32 products (kernels::set_allow_tf32), reported as the median over --iters after --warmup;
//   - the AdamW and SPD optimizer steps alone on the same model's parameters, with fixed random gradients.
// Every timed region ends with the device synchronized. A benchmark, never a test; under the CUDA emulation or
// with --device cpu it runs the small config (--config vit-micro) so CI can check that it still works.
//
//   cuda_bench [--config vit-base16|vit-micro] [--device cuda|cpu] [--iters N] [--warmup W] [--only train,infer,optim]
// prints lines like
//   spdlab vit-base16 train fp32 batch=64 median_ms=.. min_ms=.. img_per_s=.. peak_mb=.. device=..
//   spdlab vit-base16 step spd fp32 params=86567656 median_ms=.. min_ms=.. device=..
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "kernels/kernels.h"
#include "models/vit.h"
#include "bench/bench_common.h"
#include "optim/optim.h"

using namespace spdlab;
using namespace spdlab::bench;

namespace {

BenchConfig bench_config(const std::string& name) {
  if (name == "vit-base16") return {models::vit_preset("vit_base_patch16_224"), 64};
  if (name == "vit-micro") {  // small enough for the CPU emulation: a smoke test of this program, not a benchmark
    models::ViTConfig c;
    c.img_size = 32;
    c.patch_size = 8;
    c.embed_dim = 64;
    c.depth = 2;
    c.num_heads = 2;
    c.num_classes = 10;
    c.mean = {0.5f, 0.5f, 0.5f};
    c.std = {0.5f, 0.5f, 0.5f};
    return {c, 4};
  }
  SPDLAB_FAIL("cuda_bench: unknown --config '", name, "'; expected vit-base16 or vit-micro");
}

// Runs `body` warmup + iters times, synchronizing the device around each timed call.
Timing time_it(const Device& dev, int warmup, int iters, const std::function<void()>& body) {
  std::vector<double> t;
  for (int i = 0; i < warmup + iters; ++i) {
    kernels::get(dev).synchronize();
    const double t0 = now_ms();
    body();
    kernels::get(dev).synchronize();
    if (i >= warmup) t.push_back(now_ms() - t0);
  }
  return summarize(t);
}

double peak_mb(const Device& dev) { return double(kernels::get(dev).memory_stats().peak) / (1024.0 * 1024.0); }

int usage() {
  std::fprintf(stderr,
               "usage: cuda_bench [--config vit-base16|vit-micro] [--device cuda|cuda:N|cpu] [--iters N] [--warmup W]\n"
               "                  [--only train,infer,optim]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config = "vit-base16", device = "cuda", only = "train,infer,optim";
  int iters = 10, warmup = 3;
  for (int i = 1; i < argc; i += 2) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage();
    if (a == "--config") config = argv[i + 1];
    else if (a == "--device") device = argv[i + 1];
    else if (a == "--only") only = argv[i + 1];
    else if (a == "--iters") iters = std::max(1, std::atoi(argv[i + 1]));
    else if (a == "--warmup") warmup = std::max(0, std::atoi(argv[i + 1]));
    else return usage();
  }
  auto wants = [&](const char* part) { return ("," + only + ",").find(std::string(",") + part + ",") != std::string::npos; };
  try {
    const Device dev = Device::parse(device);
    const BenchConfig bc = bench_config(config);
    const models::ViTConfig& c = bc.vit;
    const std::string dev_name = kernels::get(dev).name();
    models::VisionTransformer model(c, 0);
    model.to(dev);
    Generator gen(1);
    Tensor x = Tensor::randn({bc.batch, c.in_chans, c.img_size, c.img_size}, gen).to(dev);
    std::vector<int64_t> labels(size_t(bc.batch));
    for (auto& l : labels) l = int64_t(gen.next_u64() % uint64_t(c.num_classes));
    Tensor y = Tensor::from_vector(labels, {bc.batch}).to(dev);
    auto report = [&](const char* what, const char* precision, Timing t) {
      std::printf("spdlab %s %s %s batch=%lld median_ms=%.3f min_ms=%.3f img_per_s=%.1f peak_mb=%.0f device=\"%s\"\n",
                  config.c_str(), what, precision, static_cast<long long>(bc.batch), t.median, t.min,
                  double(bc.batch) * 1e3 / t.median, peak_mb(dev), dev_name.c_str());
      std::fflush(stdout);
    };

    for (const bool tf32 : {false, true}) {
      kernels::set_allow_tf32(tf32);
      const char* precision = tf32 ? "tf32" : "fp32";
      if (wants("train")) {
        model.train();
        optim::Hyperparams h;
        h.weight_decay = 0.05;
        auto opt = optim::make_optimizer("adamw", optim::timm_param_groups(model.named_parameters()), h);
        kernels::get(dev).reset_peak_memory();
        report("train", precision, time_it(dev, warmup, iters, [&] {
                 Tensor loss = cross_entropy(model.forward(x), y);
                 opt->zero_grad();
                 loss.backward();
                 opt->step();
               }));
      }
      if (wants("infer")) {
        autograd::NoGradGuard ng;
        model.eval();
        kernels::get(dev).reset_peak_memory();
        report("infer", precision, time_it(dev, warmup, iters, [&] { Tensor logits = model.forward(x); }));
      }
    }
    kernels::set_allow_tf32(false);

    if (wants("optim")) {
      // Fixed gradients of a plausible size; SPD's condition then fires on some tensors and not on others.
      auto named = model.named_parameters();
      int64_t numel = 0;
      for (auto& [name, p] : named) {
        p.set_grad(mul(Tensor::randn(p.shape(), gen), 1e-2).to(dev));
        numel += p.numel();
      }
      for (const char* kind : {"adamw", "spd"}) {
        optim::Hyperparams h;
        h.lr = 1e-5;
        (std::string(kind) == "spd" ? h.lambda : h.weight_decay) = std::string(kind) == "spd" ? 1.0 : 0.05;
        auto opt = optim::make_optimizer(kind, optim::timm_param_groups(named), h);
        if (std::string(kind) == "spd") opt->capture_anchors();
        const Timing t = time_it(dev, warmup, iters, [&] { opt->step(); });
        std::printf("spdlab %s step %s fp32 params=%lld median_ms=%.3f min_ms=%.3f device=\"%s\"\n", config.c_str(),
                    kind, static_cast<long long>(numel), t.median, t.min, dev_name.c_str());
        std::fflush(stdout);
      }
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "cuda_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
