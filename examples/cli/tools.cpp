// Tools around checkpoints and data: `inspect` prints a checkpoint's architecture, metadata and tensors;
// `predict` classifies image files or a tensor of preprocessed images; `cache` decodes an image folder once into
// a memory-mapped file; `export` writes Fashion-MNIST (in any domain) as an image folder.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>

#include "core/autograd.h"
#include "core/io/image.h"
#include "core/io/json.h"
#include "core/io/safetensors.h"
#include "data/domains.h"
#include "data/image_folder.h"
#include "examples/cli/args.h"
#include "examples/cli/commands.h"
#include "examples/cli/data_source.h"
#include "examples/cli/study.h"
#include "examples/cli/train.h"
#include "kernels/threads.h"
#include "models/evaluate.h"
#include "models/vit.h"
#include "nn/interpolate.h"

namespace spdlab::cli {
namespace {

// A first argument that is not a flag is the value of `flag`: `spdlab inspect FILE` is `spdlab inspect --model
// FILE`. `storage` holds the inserted flag's text as long as the returned argv is used.
std::vector<char*> with_positional(int argc, char** argv, const char* flag, std::string& storage) {
  std::vector<char*> v(argv, argv + argc);
  if (argc > 2 && argv[2][0] != '-') {
    storage = flag;
    v.insert(v.begin() + 2, storage.data());
  }
  return v;
}

}  // namespace

// inspect A --diff B: how far two files of the same tensors are apart (two runs, two ranks, two kernel sets).
static int diff_files(const io::SafetensorsFile& a, const io::SafetensorsFile& b) {
  SPDLAB_CHECK(a.names() == b.names(), "--diff: ", b.path(), " holds other tensors than ", a.path(), " (", b.names().size(),
               " and ", a.names().size(), " names)");
  double worst_rel = 0, worst_abs = 0, d2 = 0, b2 = 0;
  std::string worst = "-";
  int64_t identical = 0;
  std::printf("%-40s %14s %14s\n", "tensor", "rel. diff", "max |a - b|");
  for (const auto& n : a.names()) {
    const Tensor x = a.load(n, DType::f64), y = b.load(n, DType::f64);
    SPDLAB_CHECK(x.shape() == y.shape(), "--diff: '", n, "' is ", shape_str(x.shape()), " in ", a.path(), " but ",
                 shape_str(y.shape()), " in ", b.path());
    const double* p = x.data<double>();
    const double* q = y.data<double>();
    double td2 = 0, tb2 = 0, tmax = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double d = p[i] - q[i];
      td2 += d * d;
      tb2 += q[i] * q[i];
      tmax = std::max(tmax, std::abs(d));
    }
    d2 += td2;
    b2 += tb2;
    identical += td2 == 0;
    const double rel = tb2 > 0 ? std::sqrt(td2 / tb2) : std::sqrt(td2);
    if (rel > worst_rel) worst_rel = rel, worst = n;
    worst_abs = std::max(worst_abs, tmax);
    std::printf("%-40s %14.3e %14.3e\n", n.c_str(), rel, tmax);
  }
  std::printf("diff: %zu tensors, %lld identical; largest relative difference %.3e (%s), overall %.3e, largest "
              "|a - b| %.3e\n",
              a.names().size(), static_cast<long long>(identical), worst_rel, worst.c_str(),
              b2 > 0 ? std::sqrt(d2 / b2) : std::sqrt(d2), worst_abs);
  return 0;
}

int run_inspect(int argc, char** argv) {
  std::string flag;
  std::vector<char*> args = with_positional(argc, argv, "--model", flag);
  std::vector<Flag> flags = {{"model", "FILE", "a .safetensors file (also accepted as the first argument)", ""},
                             {"diff", "FILE", "compare with another file of the same tensors: per tensor and overall, "
                                              "||a - b|| / ||b|| and the largest |a - b|", ""}};
  for (auto& f : model_flags()) flags.push_back(f);
  Args a("inspect",
         "Prints a safetensors checkpoint's architecture (from spdlab's metadata, or read from the tensor shapes for\n"
         "timm, Hugging Face and CLIP files), its metadata and its tensors (name, dtype, shape).\n"
         "Usage: spdlab inspect FILE [--num-heads N ...]",
         flags, static_cast<int>(args.size()), args.data());
  if (a.help_requested()) return std::fputs(a.usage().c_str(), stdout), 0;
  const std::string path = a.str("model");
  io::SafetensorsFile f(path);
  if (a.has("diff")) return diff_files(f, io::SafetensorsFile(a.str("diff")));
  std::printf("%s\n", f.path().c_str());
  try {
    const models::ModelSpec spec = model_spec(a);  // --num-classes, --num-heads, ... as a loading command reads them
    models::ModelInfo info = probe_model(path, spec);
    if (info.fresh_head && spec.num_classes == 0)  // a head-less tower, described with one class by probe_model
      info.notes.back() = "no classification head (an image tower): pass --num-classes to fine-tune it";
    std::printf("architecture (%s, %s names):\n  %s\n", info.spdlab_metadata ? "spdlab metadata" : "read from shapes",
                models::layout_name(info.layout).c_str(), info.cfg.describe().c_str());
    for (const auto& n : info.notes) std::printf("  %s\n", n.c_str());
  } catch (const Error& e) {
    std::printf("architecture: not a Vision Transformer spdlab can build (%s)\n", e.what());
  }
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
  std::vector<Flag> flags = {
      {"model", "FILE", "checkpoint: spdlab's, timm, Hugging Face or CLIP safetensors", ""},
      {"ignore", "LIST", "tensor-name patterns in the file to skip ('extra.*')", ""},
      {"image", "LIST", "comma-separated image paths (PNG, JPEG, BMP): resized, center-cropped, normalized", ""},
      {"input", "FILE", "a safetensors file with a float tensor 'pixel_values' [N, C, H, W], already preprocessed", ""},
      {"logits-out", "FILE", "with --input: write the tensor 'logits' [N, classes] to this safetensors file", ""},
      {"top", "K", "classes to show per image", "3"},
      {"classes", "LIST", "class names, in label order (default: the checkpoint's, or 0, 1, ...)", ""},
      device_flag()};
  for (auto& f : model_flags()) flags.push_back(f);
  Args a("predict",
         "Classifies image files (--image: resize, center crop, normalize, top-k) or a tensor of preprocessed\n"
         "images (--input, with --logits-out to save the logits).",
         flags, argc, argv);
  if (a.help_requested()) return std::fputs(a.usage().c_str(), stdout), 0;
  SPDLAB_CHECK(a.has("image") != a.has("input"), "predict: pass --image LIST or --input FILE (one of them)");
  SPDLAB_CHECK(!a.has("logits-out") || a.has("input"), "predict: --logits-out goes with --input");
  int64_t top = a.integer("top", 1, kMaxImages);
  const std::string logits_out = a.has("logits-out") ? a.str("logits-out") : "";
  if (!logits_out.empty()) check_out_dir(dir_of(logits_out));
  double t0 = now_seconds();
  models::ModelSpec spec = model_spec(a);
  if (a.has("ignore")) spec.ignore = a.list("ignore");
  const Device device = apply_device(a);
  models::ModelInfo info;
  auto model = models::load_model(a.str("model"), spec, device, &info);
  print_model_info("predict", a.str("model"), info);
  model->eval();
  const auto& cfg = model->config();
  std::vector<std::string> names = a.has("classes") ? a.list("classes") : std::vector<std::string>{};
  if (names.empty()) names = checkpoint_classes(a.str("model"));  // a checkpoint fine-tuned on folders names them
  autograd::NoGradGuard ng;
  auto show = [&](const std::string& label, const Tensor& logits_row) {
    Tensor probs = softmax(logits_row.unsqueeze(0), 1);
    std::vector<int64_t> idx(cfg.num_classes);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t i, int64_t j) { return probs.at(i) > probs.at(j); });
    std::printf("%s:", label.c_str());
    for (int64_t k = 0; k < std::min<int64_t>(top, cfg.num_classes); ++k) {
      int64_t c = idx[k];
      std::string name = c < static_cast<int64_t>(names.size()) ? names[c] : std::to_string(c);
      std::printf(" %s %.1f%%", name.c_str(), 100 * probs.at(c));
    }
    std::printf("\n");
  };
  if (a.has("input")) {
    const std::string in = a.str("input");
    io::SafetensorsFile f(in);
    SPDLAB_CHECK(f.has("pixel_values"), in, ": no tensor 'pixel_values'; expected [N, ", cfg.in_chans, ", ",
                 cfg.img_size, ", ", cfg.img_size, "] floats, already normalized");
    const auto& pi = f.info("pixel_values");
    SPDLAB_CHECK(pi.shape.size() == 4 && pi.shape[1] == cfg.in_chans && pi.shape[2] == cfg.img_size &&
                     pi.shape[3] == cfg.img_size,
                 in, ": 'pixel_values' is ", shape_str(pi.shape), "; the model takes [N, ", cfg.in_chans, ", ",
                 cfg.img_size, ", ", cfg.img_size, "]");
    const Tensor x = f.load("pixel_values", DType::f32);
    SPDLAB_CHECK(all_finite(x), in, ": 'pixel_values' holds NaN or inf");
    Tensor logits = Tensor::empty({x.size(0), cfg.num_classes});
    for (int64_t b = 0; b < x.size(0); b += kEvalBatch) {
      const int64_t n = std::min(kEvalBatch, x.size(0) - b);
      logits.narrow(0, b, n).copy_(models::logits(*model, x.narrow(0, b, n).contiguous().to(device)).cpu());
    }
    if (logits_out.empty())
      for (int64_t i = 0; i < x.size(0); ++i) show(in + "[" + std::to_string(i) + "]", logits.select(0, i));
    else {
      ensure_writable_dir(dir_of(logits_out));
      io::save_safetensors(logits_out, {{"logits", logits}}, {{"spdlab.model", a.str("model")}, {"spdlab.input", in}});
    }
    std::fprintf(stderr, "predict: %lld image(s) in %.3f s including model load%s%s\n",
                 static_cast<long long>(x.size(0)), now_seconds() - t0, logits_out.empty() ? "" : "; wrote ",
                 logits_out.c_str());
    return 0;
  }
  auto images = a.list("image");
  for (const auto& path : images) {
    Tensor img = io::load_image(path, static_cast<int>(cfg.in_chans));  // [C, H, W] in [0, 1]
    int64_t h = img.size(1), w = img.size(2), s = cfg.img_size;
    // Shorter side to the model's size, then the central square, as timm's eval transform (crop_pct 1).
    int64_t nh = h <= w ? s : (h * s + w / 2) / w, nw = h <= w ? (w * s + h / 2) / h : s;
    img = io::center_crop(io::resize(img, nh, nw, io::Interp::bicubic), s, s);
    show(path, model->forward(model->preprocess(img.unsqueeze(0).to(device))).cpu().select(0, 0));
  }
  std::fprintf(stderr, "predict: %zu image(s) in %.3f s including model load\n", images.size(), now_seconds() - t0);
  return 0;
}

int run_cache(int argc, char** argv) {
  std::string flag;
  std::vector<char*> args = with_positional(argc, argv, "--source", flag);  // spdlab cache folder:DIR ...
  Args a("cache",
         "Decodes an image folder once into a memory-mapped file that --train / --eval read as cache:FILE: every\n"
         "image resized (shorter side to --size, bilinear, antialiased), center-cropped, stored as 8 bits.\n"
         "Usage: spdlab cache folder:DIR --size S --out FILE",
         {{"source", "folder:DIR", "the image folder (DIR/<class>/<image>.png|jpg|jpeg|bmp)", ""},
          {"size", "S", "side of the stored images: the model's input size", "224"},
          {"channels", "C", "1 (gray) or 3 (RGB)", "3"},
          {"threads", "N", "decoding threads (default: all cores)", ""},
          {"out", "FILE", "the cache file (.safetensors)", ""}},
         static_cast<int>(args.size()), args.data());
  if (a.help_requested()) return std::fputs(a.usage().c_str(), stdout), 0;
  const std::string source = a.str("source");
  SPDLAB_CHECK(source.rfind("folder:", 0) == 0 && source.size() > 7, "cache: expected folder:DIR, got '", source, "'");
  const int64_t size = a.integer("size", 1, 8192), channels = a.integer("channels", 1, 3);
  SPDLAB_CHECK(channels == 1 || channels == 3, "--channels: expected 1 or 3, got ", channels);
  if (a.has("threads")) set_num_threads(static_cast<int>(a.integer("threads", 1, kMaxThreads)));
  const std::string out = a.str("out");
  check_out_dir(dir_of(out));
  const double t0 = now_seconds();
  data::Dataset d = load_image_source(source, channels, size, "cache");
  const double decode = now_seconds() - t0;
  ensure_writable_dir(dir_of(out));
  data::write_image_cache(out, d, source);
  std::fprintf(stderr, "cache: %lld images of %lld classes, %lldx%lldx%lld, decoded in %.1f s (%.0f images/s); wrote %s\n",
               static_cast<long long>(d.size()), static_cast<long long>(d.num_classes), static_cast<long long>(channels),
               static_cast<long long>(size), static_cast<long long>(size), decode, d.size() / std::max(decode, 1e-9),
               out.c_str());
  return 0;
}

int run_interpolate(int argc, char** argv) {
  Args a("interpolate",
         "WiSE-FT: writes theta(alpha) = (1 - alpha) A + alpha B, tensor by tensor, for two checkpoints with the same\n"
         "tensors (a pre-trained model A and its fine-tuned version B). alpha 0 is A and 1 is B, bit for bit. The\n"
         "output keeps B's metadata (architecture, class names), so it loads wherever B does.\n"
         "Usage: spdlab interpolate --a PRE.safetensors --b FT.safetensors --alpha 0.5 --out MIX.safetensors",
         {{"a", "FILE", "theta0: the pre-trained checkpoint", ""},
          {"b", "FILE", "theta1: the fine-tuned checkpoint", ""},
          {"alpha", "X", "the weight of B (0..1; outside extrapolates)", ""},
          {"take-b", "PATTERNS", "comma-separated tensor names taken from B for every alpha, e.g. 'head.*' (WiSE-FT "
                                 "with the fine-tuned head); a trailing * matches any suffix", ""},
          {"out", "FILE", "the interpolated checkpoint (.safetensors), written atomically", ""}},
         argc, argv);
  if (a.help_requested()) return std::fputs(a.usage().c_str(), stdout), 0;
  const double alpha = a.num("alpha");
  const std::string out = a.str("out");
  const std::vector<std::string> take_b = a.has("take-b") ? a.list("take-b") : std::vector<std::string>{};
  check_out_dir(dir_of(out));
  std::map<std::string, std::string> meta_a, meta_b;
  const std::map<std::string, Tensor> ta = io::load_safetensors(a.str("a"), &meta_a);
  const std::map<std::string, Tensor> tb = io::load_safetensors(a.str("b"), &meta_b);
  nn::NamedTensors na(ta.begin(), ta.end()), nb(tb.begin(), tb.end());
  for (const auto& p : take_b) {
    bool used = false;
    for (const auto& [n, t] : nb) used = used || nn::matches_pattern(n, p);
    SPDLAB_CHECK(used, "--take-b: '", p, "' matches no tensor of ", a.str("b"));
  }
  nn::NamedTensors mixed;
  try {
    mixed = nn::interpolate(na, nb, alpha, take_b);
  } catch (const Error& e) {
    SPDLAB_FAIL(e.what(), " (first: ", a.str("a"), ", second: ", a.str("b"), ")");
  }
  std::map<std::string, std::string> meta = meta_b;
  meta["spdlab.command"] = command_line(argc, argv);
  meta["spdlab.interpolate"] = json::dump(json::Value::object(
      {{"a", json::Value::string(a.str("a"))}, {"b", json::Value::string(a.str("b"))},
       {"alpha", json::Value::number(alpha)}, {"take_b", json::Value::string(a.has("take-b") ? a.str("take-b") : "")}}));
  ensure_writable_dir(dir_of(out));
  io::save_safetensors(out, mixed, meta);
  std::fprintf(stderr, "interpolate: %zu tensors, alpha %g%s; wrote %s\n", mixed.size(), alpha,
               take_b.empty() ? "" : (", " + a.str("take-b") + " from B").c_str(), out.c_str());
  return 0;
}

// Class names become directory names: '/' (Fashion-MNIST's "T-shirt/top") and other unsafe bytes become '_', and
// the label leads ("0_T-shirt_top"), so that sorting by name (ImageFolder's order) keeps the label order the
// shipped model's head was trained with.
static std::string dir_name(int64_t label, int64_t classes, const std::string& s) {
  const std::string number = std::to_string(label), widest = std::to_string(std::max<int64_t>(classes - 1, label));
  std::string out = std::string(widest.size() - number.size(), '0') + number + "_";
  for (char c : s) out += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ? c : '_';
  return out;
}

int run_export(int argc, char** argv) {
  Args a("export",
         "Writes Fashion-MNIST images, seen in one domain of PROTOCOL.md, as an image folder OUT/<class>/<index>.png:\n"
         "a dataset in the layout --train folder:DIR and --eval NAME=folder:DIR read. Class folders are named\n"
         "<label>_<name> (0_T-shirt_top, ...), so their sorted order is the label order.",
         {{"data", "SRC", "fmnist[:ROOT] or idx:IMAGES,LABELS", "fmnist"},
          {"split", "S", "train or test", "test"},
          {"range", "B:E", "images of the split to write", "0:1000"},
          {"domain", "D", "clean, noise, blur, contrast, invert, rotate or edge", "clean"},
          {"seed", "S", "seed of the noise domain", "0"},
          {"format", "EXT", "png, jpg or bmp", "png"},
          {"out", "DIR", "the folder to create (must not exist)", ""}},
         argc, argv);
  if (a.help_requested()) return std::fputs(a.usage().c_str(), stdout), 0;
  const std::string split = a.str("split"), ext = a.str("format"), out = a.str("out");
  SPDLAB_CHECK(split == "train" || split == "test", "--split: expected train or test, got '", split, "'");
  SPDLAB_CHECK(ext == "png" || ext == "jpg" || ext == "bmp", "--format: expected png, jpg or bmp, got '", ext, "'");
  const data::Domain domain = data::parse_domain(a.str("domain"));
  std::error_code ec;
  SPDLAB_CHECK(!std::filesystem::exists(out, ec), "--out '", out, "' exists; export writes a new folder");
  check_out_dir(out);
  SPDLAB_CHECK(a.str("data").rfind("folder:", 0) != 0, "export: --data folder:DIR is already an image folder; expected "
               "fmnist[:ROOT] or idx:IMAGES,LABELS");
  data::Dataset all = load_data(a.str("data"), split == "train", 1, 28, 1 << 24);
  auto [b, e] = parse_range("range", a.str("range"), all.size());
  const data::Dataset d = data::subset(all, b, e);
  // Written to OUT.partial and renamed at the end: a stopped export leaves no half folder under OUT.
  const std::string tmp = out + ".partial";
  std::filesystem::remove_all(tmp, ec);
  std::vector<std::string> classes;
  for (int64_t c = 0; c < d.num_classes; ++c)
    classes.push_back(
        dir_name(c, d.num_classes, c < static_cast<int64_t>(d.class_names.size()) ? d.class_names[c] : "class"));
  const Shape s = d.image_shape();
  const Tensor seen = data::apply_domain(domain, d.images.contiguous(), a.seed("seed"));
  Progress p("export " + out, d.size());
  for (int64_t i = 0; i < d.size(); ++i) {
    const int64_t label = d.labels.data<int64_t>()[i];
    const std::filesystem::path dir = std::filesystem::path(tmp) / classes[label];
    std::filesystem::create_directories(dir);
    char name[32];
    std::snprintf(name, sizeof name, "%06lld.%s", static_cast<long long>(b + i), ext.c_str());
    io::save_image((dir / name).string(), seen.select(0, i).reshape({s[0], s[1], s[2]}));
    p.update(i + 1, -1, i + 1);
  }
  p.finish();
  std::filesystem::rename(tmp, out);
  std::fprintf(stderr, "export: %lld %s images (%s) in %lld classes -> %s\n", static_cast<long long>(d.size()),
               split.c_str(), data::domain_name(domain).c_str(), static_cast<long long>(d.num_classes), out.c_str());
  return 0;
}


}  // namespace spdlab::cli
