// The Vision Transformer: construction from a config, forward, and checkpoint I/O under timm's names.
#include "models/vit.h"

#include <cmath>
#include <regex>
#include <sstream>

#include "core/autograd.h"
#include "core/io/safetensors.h"

namespace spdlab::models {

namespace {
std::string join_floats(const std::vector<float>& v) {
  std::ostringstream os;
  os.precision(9);
  for (size_t i = 0; i < v.size(); ++i) os << (i ? "," : "") << v[i];
  return os.str();
}
}  // namespace

void ViTConfig::validate() const {
  SPDLAB_CHECK(img_size > 0 && in_chans > 0 && patch_size > 0 && embed_dim > 0 && depth >= 0 && num_heads > 0 &&
                   num_classes > 0,
               "ViTConfig: every size must be positive (img_size ", img_size, ", in_chans ", in_chans, ", patch_size ",
               patch_size, ", embed_dim ", embed_dim, ", depth ", depth, ", num_heads ", num_heads, ", num_classes ",
               num_classes, ")");
  SPDLAB_CHECK(img_size % patch_size == 0, "ViTConfig: img_size ", img_size, " is not divisible by patch_size ",
               patch_size);
  SPDLAB_CHECK(embed_dim % num_heads == 0, "ViTConfig: embed_dim ", embed_dim, " is not divisible by num_heads ",
               num_heads);
  SPDLAB_CHECK(mlp_ratio > 0, "ViTConfig: mlp_ratio must be positive, got ", mlp_ratio);
  SPDLAB_CHECK(static_cast<int64_t>(mean.size()) == in_chans && static_cast<int64_t>(std.size()) == in_chans,
               "ViTConfig: mean and std need one value per channel (", in_chans, "), got ", mean.size(), " and ",
               std.size());
  for (size_t c = 0; c < std.size(); ++c)
    SPDLAB_CHECK(std::isfinite(mean[c]) && std::isfinite(std[c]) && std[c] > 0, "ViTConfig: channel ", c,
                 " has mean ", mean[c], " and std ", std[c], "; expected finite values and std > 0");
}

std::map<std::string, std::string> ViTConfig::to_metadata() const {
  std::ostringstream r, e;
  r.precision(17);
  e.precision(17);
  r << mlp_ratio;
  e << eps;
  return {{"format", "spdlab-vit"},
          {"img_size", std::to_string(img_size)},
          {"in_chans", std::to_string(in_chans)},
          {"patch_size", std::to_string(patch_size)},
          {"embed_dim", std::to_string(embed_dim)},
          {"depth", std::to_string(depth)},
          {"num_heads", std::to_string(num_heads)},
          {"mlp_ratio", r.str()},
          {"num_classes", std::to_string(num_classes)},
          {"eps", e.str()},
          {"mean", join_floats(mean)},
          {"std", join_floats(std)}};
}

ViTConfig ViTConfig::from_metadata(const std::map<std::string, std::string>& meta, const std::string& file) {
  auto get = [&](const char* key) -> const std::string& {
    auto it = meta.find(key);
    SPDLAB_CHECK(it != meta.end(), file, ": the checkpoint's metadata has no '", key,
                 "'; it was not written by spdlab, so pass --arch with a preset name");
    return it->second;
  };
  auto integer = [&](const char* key) {
    const std::string& s = get(key);
    char* end = nullptr;
    long long v = std::strtoll(s.c_str(), &end, 10);
    SPDLAB_CHECK(!s.empty() && *end == '\0', file, ": metadata '", key, "' should be an integer, got '", s, "'");
    return static_cast<int64_t>(v);
  };
  auto number = [&](const std::string& s, const char* key) {
    char* end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    SPDLAB_CHECK(!s.empty() && *end == '\0' && std::isfinite(v), file, ": metadata '", key,
                 "' should be a number, got '", s, "'");
    return v;
  };
  auto floats = [&](const char* key) {
    std::vector<float> out;
    std::stringstream ss(get(key));
    std::string item;
    while (std::getline(ss, item, ',')) out.push_back(static_cast<float>(number(item, key)));
    return out;
  };
  ViTConfig c;
  c.img_size = integer("img_size");
  c.in_chans = integer("in_chans");
  c.patch_size = integer("patch_size");
  c.embed_dim = integer("embed_dim");
  c.depth = integer("depth");
  c.num_heads = integer("num_heads");
  c.mlp_ratio = number(get("mlp_ratio"), "mlp_ratio");
  c.num_classes = integer("num_classes");
  c.eps = meta.count("eps") ? number(meta.at("eps"), "eps") : 1e-6;
  if (meta.count("mean")) c.mean = floats("mean");
  else c.mean.assign(c.in_chans, 0.5f);
  if (meta.count("std")) c.std = floats("std");
  else c.std.assign(c.in_chans, 0.5f);
  c.validate();
  return c;
}

ViTConfig vit_preset(const std::string& name) {
  ViTConfig c;
  auto imagenet = [&](int64_t dim, int64_t heads) {
    c.img_size = 224;
    c.in_chans = 3;
    c.patch_size = 16;
    c.embed_dim = dim;
    c.depth = 12;
    c.num_heads = heads;
    c.num_classes = 1000;
    c.mean = {0.5f, 0.5f, 0.5f};  // timm's augreg ViTs use mean = std = 0.5
    c.std = {0.5f, 0.5f, 0.5f};
  };
  auto fmnist = [&](int64_t dim, int64_t depth, int64_t heads) {
    c.img_size = 28;
    c.in_chans = 1;
    c.patch_size = 4;
    c.embed_dim = dim;
    c.depth = depth;
    c.num_heads = heads;
    c.num_classes = 10;
    c.mean = {0.5f};
    c.std = {0.5f};
  };
  if (name == "vit_tiny_patch16_224") imagenet(192, 3);
  else if (name == "vit_small_patch16_224") imagenet(384, 6);
  else if (name == "vit_base_patch16_224") imagenet(768, 12);
  else if (name == "vit_fmnist_tiny") fmnist(96, 4, 4);
  else if (name == "vit_fmnist_small") fmnist(192, 6, 3);
  else {
    std::string all;
    for (const auto& n : vit_preset_names()) all += (all.empty() ? "" : ", ") + n;
    SPDLAB_FAIL("unknown architecture '", name, "'; expected one of: ", all);
  }
  return c;
}

std::vector<std::string> vit_preset_names() {
  return {"vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "vit_fmnist_tiny",
          "vit_fmnist_small"};
}

VisionTransformer::VisionTransformer(const ViTConfig& cfg, uint64_t seed)
    : cls_token(register_parameter("cls_token", Tensor::zeros({1, 1, cfg.embed_dim}))),
      pos_embed(register_parameter(
          "pos_embed", Tensor::zeros({1, 1 + (cfg.img_size / std::max<int64_t>(cfg.patch_size, 1)) *
                                                 (cfg.img_size / std::max<int64_t>(cfg.patch_size, 1)),
                                      cfg.embed_dim}))),
      cfg_(cfg),
      drop_gen_(seed ^ 0xD1B54A32D192ED03ull) {
  cfg.validate();
  Generator gen(seed);
  patch_embed = register_module("patch_embed", std::make_shared<nn::PatchEmbed>(cfg.img_size, cfg.patch_size,
                                                                                 cfg.in_chans, cfg.embed_dim, gen));
  nn::init::normal_(cls_token, 1e-6, gen);
  nn::init::trunc_normal_(pos_embed, 0.02, gen);
  for (int64_t i = 0; i < cfg.depth; ++i)
    blocks.push_back(register_module("blocks." + std::to_string(i),
                                     std::make_shared<nn::Block>(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.eps,
                                                                 cfg.drop_rate, gen, &drop_gen_)));
  norm = register_module("norm", std::make_shared<nn::LayerNorm>(cfg.embed_dim, cfg.eps));
  head = register_module("head", make_head(cfg.num_classes, gen));
}

std::shared_ptr<nn::Linear> VisionTransformer::make_head(int64_t num_classes, Generator& gen) {
  return std::make_shared<nn::Linear>(cfg_.embed_dim, num_classes, true, gen);
}

void VisionTransformer::reset_head(int64_t num_classes, uint64_t seed) {
  SPDLAB_CHECK(num_classes > 0, "reset_head: num_classes must be positive, got ", num_classes);
  Generator gen(seed);
  auto fresh = make_head(num_classes, gen);
  // Swap the weights in place so the registered slot (and its name) stays the same.
  std::map<std::string, Tensor> sd;
  for (auto& [n, t] : fresh->named_parameters()) sd["head." + n] = t.detach();
  cfg_.num_classes = num_classes;
  if (head->weight.size(0) != num_classes) {
    head->weight = Tensor::empty({num_classes, cfg_.embed_dim}).requires_grad_(true);
    *head->bias = Tensor::zeros({num_classes}).requires_grad_(true);
  }
  load_state_dict(sd, false);
}

Tensor VisionTransformer::forward_features(const Tensor& x) {
  int64_t B = x.size(0), D = cfg_.embed_dim;
  Tensor t = patch_embed->forward(x);  // [B, N, D]
  t = concat({cls_token.expand({B, 1, D}), t}, 1);
  t = add(t, pos_embed);  // [B, 1 + N, D]
  if (cfg_.drop_rate > 0 && is_training()) t = dropout(t, cfg_.drop_rate, true, drop_gen_);
  // Only the class token reaches the head, so the last block computes its row alone (Block::forward_class_token:
  // timm's values up to rounding, at a fraction of the products). LayerNorm acts per token, so normalizing
  // only the class token equals timm's norm-then-pool.
  for (size_t i = 0; i + 1 < blocks.size(); ++i) t = blocks[i]->forward(t);
  if (!blocks.empty()) t = blocks.back()->forward_class_token(t);
  return norm->forward(t.select(1, 0));
}

Tensor VisionTransformer::forward(const Tensor& x) { return head->forward(forward_features(x)); }

std::map<std::string, Tensor> hf_to_timm(const std::map<std::string, Tensor>& state) {
  bool hf = false;
  for (auto& [k, t] : state)
    if (k.rfind("vit.", 0) == 0 || k.rfind("classifier.", 0) == 0) hf = true;
  if (!hf) return state;
  static const std::vector<std::pair<std::regex, std::string>> rules = {
      {std::regex(R"(^vit\.embeddings\.cls_token$)"), "cls_token"},
      {std::regex(R"(^vit\.embeddings\.position_embeddings$)"), "pos_embed"},
      {std::regex(R"(^vit\.embeddings\.patch_embeddings\.projection\.(weight|bias)$)"), "patch_embed.proj.$1"},
      {std::regex(R"(^vit\.encoder\.layer\.(\d+)\.layernorm_before\.(weight|bias)$)"), "blocks.$1.norm1.$2"},
      {std::regex(R"(^vit\.encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)$)"), "blocks.$1.attn.proj.$2"},
      {std::regex(R"(^vit\.encoder\.layer\.(\d+)\.layernorm_after\.(weight|bias)$)"), "blocks.$1.norm2.$2"},
      {std::regex(R"(^vit\.encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)$)"), "blocks.$1.mlp.fc1.$2"},
      {std::regex(R"(^vit\.encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)$)"), "blocks.$1.mlp.fc2.$2"},
      {std::regex(R"(^vit\.layernorm\.(weight|bias)$)"), "norm.$1"},
      {std::regex(R"(^classifier\.(weight|bias)$)"), "head.$1"},
  };
  static const std::regex qkv_re(R"(^vit\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$)");
  std::map<std::string, Tensor> out;
  std::map<std::string, std::map<std::string, Tensor>> qkv;  // "blocks.N.attn.qkv.weight" -> {query,key,value}
  for (auto& [k, t] : state) {
    std::smatch m;
    if (std::regex_match(k, m, qkv_re)) {
      qkv["blocks." + m[1].str() + ".attn.qkv." + m[3].str()][m[2].str()] = t;
      continue;
    }
    if (k.rfind("vit.pooler.", 0) == 0) continue;  // timm's ViT has no pooler
    bool mapped = false;
    for (auto& [re, fmt] : rules)
      if (std::regex_match(k, re)) {
        out[std::regex_replace(k, re, fmt)] = t;
        mapped = true;
        break;
      }
    if (!mapped) out[k] = t;  // reported as unexpected by load_state_dict
  }
  for (auto& [k, parts] : qkv) {
    SPDLAB_CHECK(parts.size() == 3, "hf_to_timm: '", k, "' needs query, key and value; found ", parts.size(),
                 " of them");
    out[k] = concat({parts["query"], parts["key"], parts["value"]}, 0);
  }
  return out;
}

Tensor resample_pos_embed(const Tensor& pe, int64_t g1) {
  SPDLAB_CHECK(pe.dim() == 3 && pe.size(0) == 1, "resample_pos_embed: expected [1, 1 + g*g, D], got ",
               shape_str(pe.shape()));
  int64_t n = pe.size(1) - 1, D = pe.size(2);
  int64_t g0 = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
  SPDLAB_CHECK(g0 * g0 == n, "resample_pos_embed: ", n, " patch positions do not form a square grid");
  Tensor src = pe.cpu().to(DType::f32).contiguous();
  Tensor out = Tensor::empty({1, 1 + g1 * g1, D});
  const float* s = src.data<float>();
  float* o = out.data<float>();
  std::copy(s, s + D, o);  // class token
  double scale = static_cast<double>(g0) / g1;
  auto coord = [&](int64_t i, int64_t* lo, int64_t* hi, double* frac) {
    double c = std::max(0.0, (i + 0.5) * scale - 0.5);
    *lo = std::min<int64_t>(static_cast<int64_t>(c), g0 - 1);
    *hi = std::min<int64_t>(*lo + 1, g0 - 1);
    *frac = c - *lo;
  };
  for (int64_t y = 0; y < g1; ++y) {
    int64_t y0, y1;
    double fy;
    coord(y, &y0, &y1, &fy);
    for (int64_t x = 0; x < g1; ++x) {
      int64_t x0, x1;
      double fx;
      coord(x, &x0, &x1, &fx);
      const float* a = s + (1 + y0 * g0 + x0) * D;
      const float* b = s + (1 + y0 * g0 + x1) * D;
      const float* c = s + (1 + y1 * g0 + x0) * D;
      const float* d = s + (1 + y1 * g0 + x1) * D;
      float* dst = o + (1 + y * g1 + x) * D;
      for (int64_t k = 0; k < D; ++k)
        dst[k] = static_cast<float>((1 - fy) * ((1 - fx) * a[k] + fx * b[k]) + fy * ((1 - fx) * c[k] + fx * d[k]));
    }
  }
  return out;
}

void load_checkpoint(VisionTransformer& model, const std::map<std::string, Tensor>& state_in, const LoadOptions& opt) {
  std::map<std::string, Tensor> state = hf_to_timm(state_in);
  auto pe = state.find("pos_embed");
  if (opt.resample_pos_embed && pe != state.end() && pe->second.shape() != model.pos_embed.shape() &&
      pe->second.dim() == 3 && pe->second.size(2) == model.pos_embed.size(2)) {
    int64_t grid = model.config().img_size / model.config().patch_size;
    pe->second = resample_pos_embed(pe->second, grid);
  }
  model.load_state_dict(state, opt.strict, opt.ignore);
}

std::shared_ptr<VisionTransformer> load_vit(const std::string& path, Device device) {
  io::SafetensorsFile f(path);
  ViTConfig cfg = ViTConfig::from_metadata(f.metadata(), path);
  auto model = std::make_shared<VisionTransformer>(cfg);
  model->to(device);
  try {
    // The metadata describes these very tensors: a pos_embed of another grid means they disagree, and
    // load_state_dict reports it with every other disagreement.
    LoadOptions opt;
    opt.resample_pos_embed = false;
    load_checkpoint(*model, f.load_all(), opt);
  } catch (const Error& e) {
    SPDLAB_FAIL(path, ": ", e.what());
  }
  return model;
}

std::shared_ptr<VisionTransformer> load_vit(const std::string& path, const ViTConfig& cfg, const LoadOptions& opt,
                                            Device device) {
  io::SafetensorsFile f(path);
  auto model = std::make_shared<VisionTransformer>(cfg);
  model->to(device);
  try {
    load_checkpoint(*model, f.load_all(), opt);
  } catch (const Error& e) {
    SPDLAB_FAIL(path, ": ", e.what());
  }
  return model;
}

void save_vit(const VisionTransformer& model, const std::string& path,
              const std::map<std::string, std::string>& extra) {
  auto meta = model.config().to_metadata();
  for (auto& [k, v] : extra) meta[k] = v;
  io::save_safetensors(path, model.state_dict(), meta);
}

}  // namespace spdlab::models
