// Small tools around checkpoints: `inspect` prints a checkpoint's config, metadata and tensors; `predict`
// classifies image files with a model.
#include <algorithm>
#include <cstdio>
#include <numeric>

#include "core/autograd.h"
#include "core/io/image.h"
#include "core/io/safetensors.h"
#include "examples/cli/args.h"
#include "examples/cli/commands.h"
#include "examples/cli/train.h"
#include "models/vit.h"

namespace spdlab::cli {
namespace {

int run_inspect(int argc, char** argv) {
  Args a("inspect", "Prints a safetensors checkpoint's metadata and tensors (name, dtype, shape).",
         {{"model", "FILE", "a .safetensors file", ""}}, argc, argv);
  if (a.help_requested()) return std::fputs(a.usage().c_str(), stdout), 0;
  io::SafetensorsFile f(a.str("model"));
  std::printf("%s\n", f.path().c_str());
  if (!f.metadata().empty()) std::printf("metadata:\n");
  for (auto& [k, v] : f.metadata()) std::printf("  %-22s %s\n", k.c_str(), v.c_str());
  int64_t total = 0;
  std::printf("tensors:\n");
  for (const auto& n : f.names()) {
    const auto& info = f.info(n);
    int64_t numel = numel_of(info.shape);
    total += numel;
    std::printf("  %-40s %-5s %-20s %lld\n", n.c_str(), info.dtype.c_str(), shape_str(info.shape).c_str(),
                static_cast<long long>(numel));
  }
  std::printf("%zu tensors, %lld values\n", f.names().size(), static_cast<long long>(total));
  return 0;
}

int run_predict(int argc, char** argv) {
  Args a("predict", "Classifies image files (PNG, JPEG, BMP) with a model: resize, center crop, normalize, top-k.",
         {{"model", "FILE", "checkpoint: spdlab's, or timm / Hugging Face safetensors with --arch", ""},
          {"arch", "NAME", "architecture preset for a checkpoint without spdlab metadata (vit_tiny_patch16_224, ...)",
           ""},
          {"ignore", "LIST", "tensor-name patterns in the file to skip ('extra.*')", ""},
          {"image", "LIST", "comma-separated image paths", ""},
          {"top", "K", "classes to show per image", "3"},
          {"classes", "LIST", "class names, in label order (default: 0, 1, ...)", ""},
          device_flag()},
         argc, argv);
  if (a.help_requested()) return std::fputs(a.usage().c_str(), stdout), 0;
  auto images = a.list("image");
  int64_t top = a.integer("top", 1, kMaxImages);
  double t0 = now_seconds();
  models::LoadOptions load;
  if (a.has("ignore")) load.ignore = a.list("ignore");
  const Device device = apply_device(a);
  auto model = a.has("arch") ? models::load_vit(a.str("model"), models::vit_preset(a.str("arch")), load, device)
                             : models::load_vit(a.str("model"), device);
  model->eval();
  const auto& cfg = model->config();
  std::vector<std::string> names = a.has("classes") ? a.list("classes") : std::vector<std::string>{};
  autograd::NoGradGuard ng;
  for (const auto& path : images) {
    Tensor img = io::load_image(path, static_cast<int>(cfg.in_chans));  // [C, H, W] in [0, 1]
    int64_t h = img.size(1), w = img.size(2), s = cfg.img_size;
    // Shorter side to the model's size, then the central square, as timm's eval transform (crop_pct 1).
    int64_t nh = h <= w ? s : (h * s + w / 2) / w, nw = h <= w ? (w * s + h / 2) / h : s;
    img = io::center_crop(io::resize(img, nh, nw, io::Interp::bicubic), s, s);
    Tensor logits = model->forward(normalize_input(img.unsqueeze(0), cfg).to(device)).cpu();
    Tensor probs = softmax(logits, 1);
    std::vector<int64_t> idx(cfg.num_classes);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t i, int64_t j) { return probs.at(i) > probs.at(j); });
    std::printf("%s:", path.c_str());
    for (int64_t k = 0; k < std::min<int64_t>(top, cfg.num_classes); ++k) {
      int64_t c = idx[k];
      std::string label = c < static_cast<int64_t>(names.size()) ? names[c] : std::to_string(c);
      std::printf(" %s %.1f%%", label.c_str(), 100 * probs.at(c));
    }
    std::printf("\n");
  }
  std::fprintf(stderr, "predict: %zu image(s) in %.3f s including model load\n", images.size(), now_seconds() - t0);
  return 0;
}

Registrar inspect_reg("inspect", "print a checkpoint's metadata and tensors", run_inspect);
Registrar predict_reg("predict", "classify image files with a checkpoint", run_predict);

}  // namespace
}  // namespace spdlab::cli
