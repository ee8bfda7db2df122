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
  SPDLAB_CHECK(proj_dim >= 0, "ViTConfig: proj_dim must be 0 (none) or positive, got ", proj_dim);
  SPDLAB_CHECK(std::isfinite(eps) && eps > 0, "ViTConfig: eps must be positive, got ", eps);
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
          {"std", join_floats(std)},
          {"patch_bias", patch_bias ? "true" : "false"},
          {"pre_norm", pre_norm ? "true" : "false"},
          {"act", nn::activation_name(act)},
          {"proj_dim", std::to_string(proj_dim)}};
}

std::string ViTConfig::describe() const {
  std::ostringstream os;
  os << "img_size " << img_size << ", patch " << patch_size << ", channels " << in_chans << ", width " << embed_dim
     << ", depth " << depth << ", heads " << num_heads << ", mlp " << std::llround(embed_dim * mlp_ratio)
     << ", classes " << num_classes << ", eps " << eps << ", " << nn::activation_name(act);
  if (pre_norm) os << ", norm_pre";
  if (!patch_bias) os << ", no patch bias";
  if (proj_dim > 0) os << ", proj " << proj_dim;
  os << ", mean " << join_floats(mean) << ", std " << join_floats(std);
  return os.str();
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
  // Written since CLIP towers were added; a file without them is a timm-style ViT. Read from spdlab's files only
  // (other tools' metadata may use these names for something else).
  const auto fmt = meta.find("format");
  if (fmt == meta.end() || fmt->second != "spdlab-vit") {
    c.validate();
    return c;
  }
  auto boolean = [&](const char* key, bool dflt) {
    if (!meta.count(key)) return dflt;
    const std::string& v = meta.at(key);
    SPDLAB_CHECK(v == "true" || v == "false", file, ": metadata '", key, "' should be true or false, got '", v, "'");
    return v == "true";
  };
  c.patch_bias = boolean("patch_bias", true);
  c.pre_norm = boolean("pre_norm", false);
  if (meta.count("act")) {
    try {
      c.act = nn::parse_activation(meta.at("act"));
    } catch (const Error& e) {
      SPDLAB_FAIL(file, ": metadata 'act': ", e.what());
    }
  }
  c.proj_dim = meta.count("proj_dim") ? integer("proj_dim") : 0;
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
                                                                                 cfg.in_chans, cfg.embed_dim, gen,
                                                                                 cfg.patch_bias));
  nn::init::normal_(cls_token, 1e-6, gen);
  nn::init::trunc_normal_(pos_embed, 0.02, gen);
  if (cfg.pre_norm) norm_pre = register_module("norm_pre", std::make_shared<nn::LayerNorm>(cfg.embed_dim, cfg.eps));
  for (int64_t i = 0; i < cfg.depth; ++i)
    blocks.push_back(register_module("blocks." + std::to_string(i),
                                     std::make_shared<nn::Block>(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.eps,
                                                                 cfg.drop_rate, gen, &drop_gen_, cfg.act)));
  norm = register_module("norm", std::make_shared<nn::LayerNorm>(cfg.embed_dim, cfg.eps));
  if (cfg.proj_dim > 0) proj = register_module("proj", std::make_shared<nn::Linear>(cfg.embed_dim, cfg.proj_dim, false, gen));
  head = register_module("head", make_head(cfg.num_classes, gen));
}

std::shared_ptr<nn::Linear> VisionTransformer::make_head(int64_t num_classes, Generator& gen) {
  return std::make_shared<nn::Linear>(cfg_.feature_dim(), num_classes, true, gen);
}

Tensor VisionTransformer::preprocess(const Tensor& pixels) const {
  const int64_t C = cfg_.in_chans;
  SPDLAB_CHECK(pixels.dim() == 4 && pixels.size(1) == C, "preprocess: expected pixels [B, ", C, ", H, W] in [0, 1], got ",
               shape_str(pixels.shape()));
  std::vector<float> inv;
  for (float v : cfg_.std) inv.push_back(1.0f / v);
  const Tensor mean = Tensor::from_vector(cfg_.mean, {1, C, 1, 1}).to(pixels.device());
  const Tensor scale = Tensor::from_vector(inv, {1, C, 1, 1}).to(pixels.device());
  return mul(sub(pixels, mean), scale);
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
    const Device dev = head->weight.device();
    head->weight = Tensor::empty({num_classes, cfg_.feature_dim()}, DType::f32, dev).requires_grad_(true);
    *head->bias = Tensor::zeros({num_classes}, DType::f32, dev).requires_grad_(true);
  }
  load_state_dict(sd, false);
}

Tensor VisionTransformer::forward_features(const Tensor& x) {
  int64_t B = x.size(0), D = cfg_.embed_dim;
  Tensor t = patch_embed->forward(x);  // [B, N, D]
  t = concat({cls_token.expand({B, 1, D}), t}, 1);
  t = add(t, pos_embed);  // [B, 1 + N, D]
  if (cfg_.drop_rate > 0 && is_training()) t = dropout(t, cfg_.drop_rate, true, drop_gen_);
  if (norm_pre) t = norm_pre->forward(t);
  // Only the class token reaches the head, so the last block computes its row alone (Block::forward_class_token:
  // timm's values up to rounding, at a fraction of the products). LayerNorm acts per token, so normalizing
  // only the class token equals timm's norm-then-pool.
  for (size_t i = 0; i + 1 < blocks.size(); ++i) t = blocks[i]->forward(t);
  if (!blocks.empty()) t = blocks.back()->forward_class_token(t);
  t = norm->forward(t.select(1, 0));
  return proj ? proj->forward(t) : t;
}

Tensor VisionTransformer::forward(const Tensor& x) { return head->forward(forward_features(x)); }

std::map<std::string, Tensor> hf_to_timm(const std::map<std::string, Tensor>& state) {
  for (auto& [k, t] : state)
    if (k.rfind("vit.", 0) == 0 || k.rfind("classifier.", 0) == 0) return to_timm_names(state, Layout::hf_vit);
  return state;
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

std::string layout_name(Layout l) {
  switch (l) {
    case Layout::timm: return "timm";
    case Layout::hf_vit: return "Hugging Face ViT";
    case Layout::openai_clip: return "OpenAI/open_clip CLIP";
    case Layout::hf_clip: return "Hugging Face CLIP";
  }
  return "?";
}

Layout detect_layout(const std::vector<std::string>& keys, const std::string& file) {
  auto any = [&](const char* prefix) {
    for (const auto& k : keys)
      if (k.rfind(prefix, 0) == 0) return true;
    return false;
  };
  if (any("visual.")) return Layout::openai_clip;
  if (any("vision_model.")) return Layout::hf_clip;
  if (any("vit.") || any("classifier.")) return Layout::hf_vit;
  if (any("patch_embed.") || any("cls_token") || any("blocks.")) return Layout::timm;
  std::string some;
  for (size_t i = 0; i < keys.size() && i < 4; ++i) some += (i ? ", " : "") + keys[i];
  SPDLAB_FAIL(file, ": not a Vision Transformer checkpoint spdlab knows (its tensors start with: ",
              some.empty() ? "none" : some, "); expected timm names (patch_embed.*, blocks.N.*), Hugging Face ViT (vit.*), "
              "OpenAI/open_clip CLIP (visual.*) or Hugging Face CLIP (vision_model.*)");
}

namespace {

// How one tensor of a CLIP file becomes a timm one.
enum class Part { as_is, cls, pos, transpose, q, k, v, drop };
struct Renamed {
  std::string key;
  Part part = Part::as_is;
};

Renamed rename_key(const std::string& k, Layout layout) {
  static const std::vector<std::pair<std::regex, std::string>> hf_vit = {
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
  static const std::regex hf_vit_qkv(
      R"(^vit\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$)");
  if (layout == Layout::timm) return {k};
  if (layout == Layout::hf_vit) {
    std::smatch m;
    if (std::regex_match(k, m, hf_vit_qkv))
      return {"blocks." + m[1].str() + ".attn.qkv." + m[3].str(),
              m[2] == "query" ? Part::q : m[2] == "key" ? Part::k : Part::v};
    if (k.rfind("vit.pooler.", 0) == 0) return {k, Part::drop};  // timm's ViT has no pooler
    for (auto& [re, fmt] : hf_vit)
      if (std::regex_match(k, re)) return {std::regex_replace(k, re, fmt)};
    return {k};  // reported as unexpected by load_state_dict
  }
  static const std::vector<std::pair<std::regex, std::string>> openai = {
      {std::regex(R"(^visual\.conv1\.weight$)"), "patch_embed.proj.weight"},
      {std::regex(R"(^visual\.ln_pre\.(weight|bias)$)"), "norm_pre.$1"},
      {std::regex(R"(^visual\.ln_post\.(weight|bias)$)"), "norm.$1"},
      {std::regex(R"(^visual\.transformer\.resblocks\.(\d+)\.ln_1\.(weight|bias)$)"), "blocks.$1.norm1.$2"},
      {std::regex(R"(^visual\.transformer\.resblocks\.(\d+)\.ln_2\.(weight|bias)$)"), "blocks.$1.norm2.$2"},
      {std::regex(R"(^visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$)"), "blocks.$1.attn.qkv.$2"},
      {std::regex(R"(^visual\.transformer\.resblocks\.(\d+)\.attn\.out_proj\.(weight|bias)$)"), "blocks.$1.attn.proj.$2"},
      {std::regex(R"(^visual\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.(weight|bias)$)"), "blocks.$1.mlp.fc1.$2"},
      {std::regex(R"(^visual\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.(weight|bias)$)"), "blocks.$1.mlp.fc2.$2"},
  };
  static const std::vector<std::pair<std::regex, std::string>> hf = {
      {std::regex(R"(^vision_model\.embeddings\.patch_embedding\.weight$)"), "patch_embed.proj.weight"},
      {std::regex(R"(^vision_model\.pre_layrnorm\.(weight|bias)$)"), "norm_pre.$1"},
      {std::regex(R"(^vision_model\.post_layernorm\.(weight|bias)$)"), "norm.$1"},
      {std::regex(R"(^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.(weight|bias)$)"), "blocks.$1.norm1.$2"},
      {std::regex(R"(^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.(weight|bias)$)"), "blocks.$1.norm2.$2"},
      {std::regex(R"(^vision_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)$)"), "blocks.$1.attn.proj.$2"},
      {std::regex(R"(^vision_model\.encoder\.layers\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$)"), "blocks.$1.mlp.$2.$3"},
      {std::regex(R"(^visual_projection\.weight$)"), "proj.weight"},
  };
  static const std::regex hf_qkv(R"(^vision_model\.encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)$)");
  if (layout == Layout::openai_clip) {
    if (k == "visual.class_embedding") return {"cls_token", Part::cls};
    if (k == "visual.positional_embedding") return {"pos_embed", Part::pos};
    if (k == "visual.proj") return {"proj.weight", Part::transpose};  // [D, E] used as x @ proj
    for (auto& [re, fmt] : openai)
      if (std::regex_match(k, re)) return {std::regex_replace(k, re, fmt)};
    if (k.rfind("visual.", 0) != 0 && k.rfind("head.", 0) != 0) return {k, Part::drop};  // the text tower
    return {k};
  }
  if (k == "vision_model.embeddings.class_embedding") return {"cls_token", Part::cls};
  if (k == "vision_model.embeddings.position_embedding.weight") return {"pos_embed", Part::pos};
  if (k == "vision_model.embeddings.position_ids") return {k, Part::drop};  // a buffer: 0, 1, 2, ...
  std::smatch m;
  if (std::regex_match(k, m, hf_qkv))
    return {"blocks." + m[1].str() + ".attn.qkv." + m[3].str(), m[2] == "q" ? Part::q : m[2] == "k" ? Part::k : Part::v};
  for (auto& [re, fmt] : hf)
    if (std::regex_match(k, re)) return {std::regex_replace(k, re, fmt)};
  if (k.rfind("vision_model.", 0) != 0 && k.rfind("head.", 0) != 0) return {k, Part::drop};  // text_model.*, ...
  return {k};
}

// The shape a tensor gets from its part (q, k, v shapes are joined by the caller).
Shape renamed_shape(const Shape& s, Part part) {
  if (part == Part::cls && s.size() == 1) return {1, 1, s[0]};
  if (part == Part::pos && s.size() == 2) return {1, s[0], s[1]};
  if (part == Part::transpose && s.size() == 2) return {s[1], s[0]};
  return s;
}

// Shapes in timm's names, for infer_config; only the header is needed.
std::map<std::string, Shape> timm_shapes(const io::SafetensorsFile& f, Layout layout) {
  std::map<std::string, Shape> out;
  for (const auto& n : f.names()) {
    Renamed r = rename_key(n, layout);
    if (r.part == Part::drop) continue;
    Shape s = renamed_shape(f.info(n).shape, r.part);
    if (r.part == Part::q || r.part == Part::k || r.part == Part::v) {
      Shape& q = out[r.key];
      if (q.empty()) q = s;
      else if (!s.empty()) q[0] += s[0];
    } else {
      out[r.key] = s;
    }
  }
  return out;
}

const std::vector<float> kClipMean = {0.48145466f, 0.4578275f, 0.40821073f};
const std::vector<float> kClipStd = {0.26862954f, 0.26130258f, 0.27577711f};

}  // namespace

std::map<std::string, Tensor> to_timm_names(const std::map<std::string, Tensor>& state, Layout layout,
                                            int64_t* dropped) {
  if (dropped) *dropped = 0;
  if (layout == Layout::timm) return state;
  std::map<std::string, Tensor> out;
  std::map<std::string, std::map<Part, Tensor>> qkv;
  for (const auto& [k, t] : state) {
    Renamed r = rename_key(k, layout);
    switch (r.part) {
      case Part::drop:
        if (dropped) ++*dropped;
        break;
      case Part::q:
      case Part::k:
      case Part::v:
        qkv[r.key][r.part] = t;
        break;
      case Part::transpose:
        SPDLAB_CHECK(t.dim() == 2, "'", k, "' should be a matrix [width, projection], got ", shape_str(t.shape()));
        out[r.key] = t.transpose(0, 1).contiguous();
        break;
      default:
        out[r.key] = t.reshape(renamed_shape(t.shape(), r.part));
    }
  }
  for (auto& [k, parts] : qkv) {
    SPDLAB_CHECK(parts.size() == 3, "'", k, "' needs the query, key and value tensors; the file has ", parts.size(),
                 " of them");
    out[k] = concat({parts[Part::q], parts[Part::k], parts[Part::v]}, 0);
  }
  return out;
}

ViTConfig infer_config(const std::map<std::string, Shape>& shapes, Layout layout, int64_t num_heads,
                       const std::string& file, std::vector<std::string>* assumed) {
  auto shape_of = [&](const std::string& k, size_t rank, const char* expected) -> const Shape& {
    auto it = shapes.find(k);
    SPDLAB_CHECK(it != shapes.end(), file, ": has no '", k, "' (in timm's names), so its architecture cannot be read; "
                 "expected ", expected);
    SPDLAB_CHECK(it->second.size() == rank, file, ": '", k, "' is ", shape_str(it->second), "; expected ", expected);
    return it->second;
  };
  auto note = [&](const std::string& s) {
    if (assumed) assumed->push_back(s);
  };
  ViTConfig c;
  const Shape& pw = shape_of("patch_embed.proj.weight", 4, "[width, channels, patch, patch]");
  SPDLAB_CHECK(pw[2] == pw[3] && pw[2] > 0, file, ": the patch projection is ", shape_str(pw),
               "; expected square patches [width, channels, patch, patch]");
  c.embed_dim = pw[0];
  c.in_chans = pw[1];
  c.patch_size = pw[2];
  const Shape& cls = shape_of("cls_token", 3, "a class token [1, 1, width]");
  SPDLAB_CHECK(cls[0] == 1 && cls[1] == 1 && cls[2] == c.embed_dim, file, ": the class token is ", shape_str(cls),
               "; expected [1, 1, ", c.embed_dim, "]");
  const Shape& pe = shape_of("pos_embed", 3, "[1, 1 + grid * grid, width]");
  const int64_t n = pe[1] - 1, g = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(std::max<int64_t>(n, 0)))));
  SPDLAB_CHECK(pe[0] == 1 && pe[2] == c.embed_dim && n > 0 && g * g == n, file, ": the position embedding is ",
               shape_str(pe), "; expected [1, 1 + grid * grid, ", c.embed_dim, "] (a class token and a square grid)");
  c.img_size = g * c.patch_size;
  // Depth: the blocks numbered 0..depth-1, each with an MLP of block 0's shape (so a file's names cannot make the
  // model allocate blocks that the file does not hold).
  int64_t depth = 0;
  for (const auto& [k, s] : shapes) {
    if (k.rfind("blocks.", 0) != 0) continue;
    char* end = nullptr;
    const long long i = std::strtoll(k.c_str() + 7, &end, 10);
    SPDLAB_CHECK(end != k.c_str() + 7 && *end == '.' && i >= 0 && i < 100000, file, ": '", k,
                 "' is not a block tensor spdlab knows; expected blocks.N.<name> with N from 0");
    depth = std::max<int64_t>(depth, i + 1);
  }
  c.depth = depth;
  if (depth > 0) {
    const Shape& fc1 = shape_of("blocks.0.mlp.fc1.weight", 2, "[mlp width, width]");
    c.mlp_ratio = static_cast<double>(fc1[0]) / static_cast<double>(c.embed_dim);
    for (int64_t i = 1; i < depth; ++i) {
      auto it = shapes.find("blocks." + std::to_string(i) + ".mlp.fc1.weight");
      SPDLAB_CHECK(it != shapes.end() && it->second == fc1, file, ": block ", i, " of ", depth,
                   it == shapes.end() ? " has no mlp.fc1.weight" : "'s mlp.fc1.weight differs from block 0's ",
                   it == shapes.end() ? "" : shape_str(it->second), "; expected blocks 0..", depth - 1,
                   " of one shape");
    }
  }
  c.patch_bias = shapes.count("patch_embed.proj.bias") > 0;
  c.pre_norm = shapes.count("norm_pre.weight") > 0;
  if (shapes.count("proj.weight")) {
    const Shape& p = shape_of("proj.weight", 2, "[projection, width]");
    c.proj_dim = p[0];
  }
  c.num_classes = 0;
  if (shapes.count("head.weight")) c.num_classes = shape_of("head.weight", 2, "[classes, features]")[0];
  if (num_heads > 0) {
    c.num_heads = num_heads;
  } else {
    SPDLAB_CHECK(c.embed_dim % 64 == 0, file, ": width ", c.embed_dim,
                 " is not a multiple of 64, so the heads cannot be taken as width / 64; pass --num-heads");
    c.num_heads = c.embed_dim / 64;
    note("heads " + std::to_string(c.num_heads) + " = width / 64 (a file does not record it; --num-heads overrides)");
  }
  const bool clip = layout == Layout::openai_clip || layout == Layout::hf_clip || c.pre_norm;
  if (clip) {
    c.eps = 1e-5;
    c.act = nn::Activation::quick_gelu;
    note("LayerNorm eps 1e-5 and QuickGELU, as OpenAI's CLIP weights (--act gelu for open_clip models trained with GELU)");
    if (c.in_chans == 3) {
      c.mean = kClipMean;
      c.std = kClipStd;
      note("normalization: OpenAI CLIP's mean and std (--mean, --std override)");
    } else {
      c.mean.assign(c.in_chans, 0.5f);
      c.std.assign(c.in_chans, 0.5f);
      note("normalization: mean = std = 0.5 per channel (--mean, --std override)");
    }
  } else {
    c.eps = layout == Layout::hf_vit ? 1e-12 : 1e-6;
    c.act = nn::Activation::gelu;
    c.mean.assign(c.in_chans, 0.5f);
    c.std.assign(c.in_chans, 0.5f);
    note(std::string("LayerNorm eps ") + (layout == Layout::hf_vit ? "1e-12 (Hugging Face ViT)" : "1e-6 (timm)") +
         ", exact GELU, normalization mean = std = 0.5 as timm's augreg ViTs (--mean, --std override)");
  }
  return c;
}

namespace {
// inspect_model on a file already open (load_model reads the header once for both).
ModelInfo inspect_file(const io::SafetensorsFile& f, const ModelSpec& spec) {
  const std::string& path = f.path();
  ModelInfo info;
  info.layout = detect_layout(f.names(), path);
  const auto& meta = f.metadata();
  auto fmt = meta.find("format");
  const std::map<std::string, Shape> shapes = timm_shapes(f, info.layout);
  auto head = shapes.find("head.weight");
  info.file_classes = head != shapes.end() && head->second.size() == 2 ? head->second[0] : 0;
  std::vector<std::string> assumed;
  if (!spec.arch.empty()) {
    info.cfg = vit_preset(spec.arch);
    if (info.file_classes > 0) info.cfg.num_classes = info.file_classes;
    info.notes.push_back("architecture: the preset " + spec.arch);
  } else if (fmt != meta.end() && fmt->second == "spdlab-vit") {
    info.cfg = ViTConfig::from_metadata(meta, path);
    info.spdlab_metadata = true;
    info.file_classes = info.cfg.num_classes;
  } else {
    info.cfg = infer_config(shapes, info.layout, spec.num_heads, path, &assumed);
    info.notes.push_back("architecture read from the tensor shapes (" + layout_name(info.layout) + " names)");
  }
  ViTConfig& c = info.cfg;
  if (spec.num_heads > 0 && (info.spdlab_metadata || !spec.arch.empty())) c.num_heads = spec.num_heads;
  for (const auto& a : assumed) info.notes.push_back("assumed: " + a);
  if (!spec.act.empty()) {
    c.act = nn::parse_activation(spec.act);
    info.notes.push_back("activation: " + spec.act + " (--act)");
  }
  auto per_channel = [&](const std::vector<float>& v, const char* what) {
    SPDLAB_CHECK(v.size() == 1 || static_cast<int64_t>(v.size()) == c.in_chans, "--", what, ": expected 1 or ",
                 c.in_chans, " values (one per channel), got ", v.size());
    return v.size() == 1 ? std::vector<float>(c.in_chans, v[0]) : v;
  };
  if (!spec.mean.empty()) c.mean = per_channel(spec.mean, "mean");
  if (!spec.std.empty()) c.std = per_channel(spec.std, "std");
  if (spec.num_classes > 0 && spec.num_classes != info.file_classes) {
    info.fresh_head = true;
    info.notes.push_back(info.file_classes > 0
                             ? "head replaced: the file's " + std::to_string(info.file_classes) + "-class head by a fresh " +
                                   std::to_string(spec.num_classes) + "-class one"
                             : "a fresh " + std::to_string(spec.num_classes) + "-class head (the file has none)");
    c.num_classes = spec.num_classes;
  }
  SPDLAB_CHECK(c.num_classes > 0, path, ": the file has no classification head (head.weight), as a CLIP image tower; "
               "pass --num-classes");
  try {
    c.validate();
  } catch (const Error& e) {
    SPDLAB_FAIL(path, ": ", e.what());
  }
  return info;
}
}  // namespace

ModelInfo inspect_model(const std::string& path, const ModelSpec& spec) {
  return inspect_file(io::SafetensorsFile(path), spec);
}

std::shared_ptr<VisionTransformer> load_model(const std::string& path, const ModelSpec& spec, Device device,
                                              ModelInfo* info_out) {
  io::SafetensorsFile f(path);
  ModelInfo info = inspect_file(f, spec);
  auto model = std::make_shared<VisionTransformer>(info.cfg, spec.head_seed);
  model->to(device);
  try {
    int64_t dropped = 0;
    std::map<std::string, Tensor> state = to_timm_names(f.load_all(), info.layout, &dropped);
    if (dropped > 0) info.notes.push_back("skipped " + std::to_string(dropped) + " tensors outside the image tower");
    LoadOptions opt;
    opt.ignore = spec.ignore;
    if (info.fresh_head) {
      opt.ignore.push_back("head.weight");
      opt.ignore.push_back("head.bias");
    }
    // spdlab's metadata and inferred configs describe these very tensors: a pos_embed of another grid means
    // they disagree, and load_state_dict reports it. A preset may differ from the file's grid (timm resamples).
    opt.resample_pos_embed = !spec.arch.empty();
    load_checkpoint(*model, state, opt);
  } catch (const Error& e) {
    SPDLAB_FAIL(path, ": ", e.what());
  }
  if (info_out) *info_out = info;
  return model;
}

std::shared_ptr<VisionTransformer> load_vit(const std::string& path, Device device) {
  return load_model(path, {}, device);
}

std::shared_ptr<VisionTransformer> load_vit(const std::string& path, const ViTConfig& cfg, const LoadOptions& opt,
                                            Device device) {
  io::SafetensorsFile f(path);
  auto model = std::make_shared<VisionTransformer>(cfg);
  model->to(device);
  try {
    load_checkpoint(*model, to_timm_names(f.load_all(), detect_layout(f.names(), path)), opt);
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
