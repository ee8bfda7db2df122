// vit_bench: images per second of inference (infer: models::logits; forward: a bare model.forward), of a full
// training step (forward, cross-entropy, backward, AdamW step), or of the study's evaluation (eval:
// models::accuracy over a dataset, the loader, preprocessing, forward and argmax, as `spdlab compare` scores a
// domain), with the achieved GFLOP/s and the process's peak RSS. One mode per process, so the RSS belongs to
// that mode. A benchmark, never a test; bench/torch_vit.py measures PyTorch on the same models and prints the
// same line, and bench/run.sh interleaves the two.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "kernels/kernels.h"
#include "kernels/threads.h"
#include "data/domains.h"
#include "data/loader.h"
#include "models/evaluate.h"
#include "models/vit.h"
#include "bench/bench_common.h"
#include "optim/optim.h"

using namespace spdlab;
using namespace spdlab::bench;

namespace {

BenchConfig bench_config(const std::string& name) {
  if (name == "vit-fmnist") {
    models::ViTConfig c;
    c.img_size = 28;
    c.in_chans = 1;
    c.patch_size = 4;
    c.embed_dim = 192;
    c.depth = 6;
    c.num_heads = 3;
    c.mlp_ratio = 4.0;
    c.num_classes = 10;
    c.mean = {0.5f};
    c.std = {0.5f};
    return {c, 128};
  }
  if (name == "vit-tiny16") return {models::vit_preset("vit_tiny_patch16_224"), 16};
  SPDLAB_FAIL("vit_bench: unknown config '", name, "'; expected vit-fmnist or vit-tiny16");
}

// Multiply-accumulates of one image's forward pass, counting only the products (as the issue defines it).
// With N = (img/P)^2 patches, T = N + 1 tokens, D = embed_dim, M = mlp_ratio * D, K = num_classes, C = in_chans:
//   patch embedding  N * (C*P*P) * D
//   per block        T*D*3D (qkv) + T*T*D (q k^T, all heads) + T*T*D (attn v) + T*D*D (proj) + 2*T*D*M (fc1, fc2)
//   head             D * K
// FLOP = 2 * MACs; a training step counts 3x the forward (backward = two products per forward product).
// gflops= uses this count, for both spdlab and PyTorch. spdlab's last block computes only the class token's
// row (the only one that reaches the head): qkv for every token, then attention, proj and the MLP for one
// row; executed=true counts that, for gflops_exec=.
double forward_macs_per_image(const models::ViTConfig& c, bool executed = false) {
  const double P = double(c.patch_size), N = double((c.img_size / c.patch_size) * (c.img_size / c.patch_size));
  const double T = N + 1, D = double(c.embed_dim), M = double(int64_t(c.mlp_ratio * double(c.embed_dim)));
  const double block = T * D * 3 * D + 2 * T * T * D + T * D * D + 2 * T * D * M;
  const double last = executed ? T * D * 3 * D + 2 * T * D + D * D + 2 * D * M : block;
  const double blocks = c.depth > 0 ? double(c.depth - 1) * block + last : 0.0;
  return N * double(c.in_chans) * P * P * D + blocks + D * double(c.num_classes);
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;  // Linux reports kilobytes
}

int usage() {
  std::fprintf(stderr,
               "usage: vit_bench [--mode train|infer|forward|eval] [--config vit-fmnist|vit-tiny16] [--batch B]\n"
               "                 [--iters N] [--warmup W]\n"
               "  --batch   images per batch (default: the config's; eval: 500, the study's kEvalBatch)\n"
               "  infer     models::logits, inference's entry point (the batch's chunks side by side on the CPU);\n"
               "            forward: model.forward alone, every op on all threads\n"
               "  eval      one iteration scores 2 batches of random images with models::accuracy (loader,\n"
               "            preprocessing, forward, argmax); median_ms is per batch\n"
               "prints: spdlab <config> <mode> batch=B median_ms=.. img_per_s=.. gflops=.. peak_rss_mb=.. ...\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = "train", config = "vit-fmnist";
  int iters = 10, warmup = 2;
  int64_t batch = 0;
  for (int i = 1; i < argc; i += 2) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage();
    if (a == "--mode") mode = argv[i + 1];
    else if (a == "--config") config = argv[i + 1];
    else if (a == "--iters") iters = std::max(1, std::atoi(argv[i + 1]));
    else if (a == "--warmup") warmup = std::max(0, std::atoi(argv[i + 1]));
    else if (a == "--batch") {
      batch = std::atoll(argv[i + 1]);
      if (batch < 1) return usage();
    }
    else return usage();
  }
  if (mode != "train" && mode != "infer" && mode != "forward" && mode != "eval") return usage();
  try {
    const double base_rss = peak_rss_mb();
    BenchConfig bc = bench_config(config);
    if (batch > 0) bc.batch = batch;
    else if (mode == "eval") bc.batch = 500;
    const models::ViTConfig& c = bc.vit;
    models::VisionTransformer model(c, 0);
    Generator gen(1);
    // Random labels for n images.
    auto random_labels = [&](int64_t n) {
      std::vector<int64_t> labels(static_cast<size_t>(n));
      for (auto& l : labels) l = int64_t(gen.next_u64() % uint64_t(c.num_classes));
      return Tensor::from_vector(labels, {n});
    };

    std::vector<double> times;
    if (mode == "eval") {
      // What `spdlab compare` does per domain, on 2 batches of random pixels in [0, 1] (the clean domain's
      // transform): a time per batch, so img_per_s compares with a bare forward at the same batch size.
      constexpr int64_t kBatches = 2;
      data::Dataset d;
      d.images = Tensor::rand({kBatches * bc.batch, c.in_chans, c.img_size, c.img_size}, gen);
      d.labels = random_labels(kBatches * bc.batch);
      d.num_classes = c.num_classes;
      const data::SampleTransform clean = data::domain_transform(data::Domain::clean);
      for (int i = 0; i < warmup + iters; ++i) {
        const double t0 = now_ms();
        models::accuracy(model, d, clean, 0, bc.batch);
        if (i >= warmup) times.push_back((now_ms() - t0) / kBatches);
      }
    } else {
      // One fixed batch of inputs already in the normalized range.
      const Tensor x = Tensor::randn({bc.batch, c.in_chans, c.img_size, c.img_size}, gen);
      if (mode == "infer" || mode == "forward") {
        autograd::NoGradGuard ng;
        model.eval();
        for (int i = 0; i < warmup + iters; ++i) {
          const double t0 = now_ms();
          Tensor logits = mode == "infer" ? models::logits(model, x) : model.forward(x);
          if (i >= warmup) times.push_back(now_ms() - t0);
        }
      } else {
        const Tensor y = random_labels(bc.batch);
        model.train();
        optim::Hyperparams h;
        h.lr = 1e-3;
        h.weight_decay = 0.05;
        auto opt = optim::make_optimizer("adamw", optim::timm_param_groups(model.named_parameters()), h);
        for (int i = 0; i < warmup + iters; ++i) {
          const double t0 = now_ms();
          Tensor loss = cross_entropy(model.forward(x), y);
          opt->zero_grad();
          loss.backward();
          opt->step();
          loss.item();
          if (i >= warmup) times.push_back(now_ms() - t0);
        }
      }
    }
    std::sort(times.begin(), times.end());
    const double med = times[times.size() / 2];
    // What live tensors held at most (in the allocator's size classes), and what it keeps for reuse at the end.
    const kernels::MemoryStats mem = kernels::get(Device::cpu).memory_stats();
    const double per_batch = 2.0 * double(bc.batch) * (mode == "train" ? 3.0 : 1.0);
    const double flop = per_batch * forward_macs_per_image(c), flop_exec = per_batch * forward_macs_per_image(c, true);
    std::printf("spdlab %s %s batch=%lld median_ms=%.2f img_per_s=%.1f gflops=%.1f gflops_exec=%.1f "
                "peak_rss_mb=%.1f min_ms=%.2f base_rss_mb=%.1f tensor_peak_mb=%.1f cached_mb=%.1f threads=%d iters=%d "
                "warmup=%d isa=%s\n",
                config.c_str(), mode.c_str(), static_cast<long long>(bc.batch), med, double(bc.batch) * 1e3 / med,
                flop / (med * 1e6), flop_exec / (med * 1e6), peak_rss_mb(), times.front(), base_rss,
                double(mem.peak) / 1048576.0, double(mem.cached) / 1048576.0, get_num_threads(), iters, warmup, kernels::cpu_isa());
  } catch (const Error& e) {
    std::fprintf(stderr, "vit_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
