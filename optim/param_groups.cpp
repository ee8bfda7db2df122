// Parameter groups by timm's names: the decay split, linear probing, BitFit, layer-wise lr decay.
#include "optim/param_groups.h"

#include <cmath>
#include <map>
#include <set>

namespace spdlab::optim {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

std::string last_segment(const std::string& name) {
  size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

// timm's rule for tensors that get no decay.
bool no_decay(const std::string& name, const Tensor& t) {
  static const std::set<std::string> names = {"cls_token", "pos_embed", "dist_token", "reg_token"};
  return t.dim() <= 1 || ends_with(name, ".bias") || names.count(last_segment(name));
}

bool is_head(const std::string& name) { return starts_with(name, "head."); }

// Groups keyed by (layer, decays): for every trainable tensor that `layer_of` places (>= 0; -1 leaves it out),
// in layer order and, within a layer, the no-decay group first; lr_scale(layer) gives each group's lr scale.
template <typename LayerOf, typename Scale>
std::vector<ParamGroup> grouped(const NamedTensors& named, const char* who, LayerOf layer_of, Scale lr_scale) {
  std::map<std::pair<int64_t, bool>, ParamGroup> by_key;
  for (const auto& [name, t] : named) {
    SPDLAB_CHECK(t.defined(), who, ": parameter '", name, "' is an undefined tensor");
    if (!t.requires_grad()) continue;
    const int64_t layer = layer_of(name);
    if (layer < 0) continue;
    const bool decays = !no_decay(name, t);
    ParamGroup& g = by_key[{layer, decays}];
    g.lr_scale = lr_scale(layer);
    g.decay_scale = decays ? 1.0 : 0.0;
    g.params.emplace_back(name, t);
  }
  std::vector<ParamGroup> groups;
  for (auto& [key, g] : by_key) groups.push_back(std::move(g));
  return groups;
}

auto unit_scale = [](int64_t) { return 1.0; };

}  // namespace

std::vector<ParamGroup> timm_param_groups(const NamedTensors& named) {
  return grouped(named, "timm_param_groups", [](const std::string&) { return int64_t(0); }, unit_scale);
}

std::vector<ParamGroup> linear_probe_groups(const NamedTensors& named) {
  std::vector<ParamGroup> groups = grouped(
      named, "linear_probe_groups", [](const std::string& n) { return is_head(n) ? int64_t(0) : int64_t(-1); },
      unit_scale);
  SPDLAB_CHECK(!groups.empty(), "linear_probe_groups: no trainable head.weight or head.bias among the ",
               named.size(), " parameters (a model without a classification head cannot be probed)");
  return groups;
}

std::vector<ParamGroup> bitfit_groups(const NamedTensors& named) {
  std::vector<ParamGroup> groups = grouped(
      named, "bitfit_groups",
      [](const std::string& n) { return is_head(n) || ends_with(n, ".bias") ? int64_t(0) : int64_t(-1); }, unit_scale);
  SPDLAB_CHECK(!groups.empty(), "bitfit_groups: no trainable bias or head among the ", named.size(), " parameters");
  return groups;
}

std::vector<ParamGroup> lora_groups(const NamedTensors& named) {
  ParamGroup adapters;
  adapters.anchored = false;
  for (const auto& [name, t] : named)
    if ((name.find(".lora_A.") != std::string::npos || name.find(".lora_B.") != std::string::npos) && t.requires_grad())
      adapters.params.emplace_back(name, t);
  SPDLAB_CHECK(!adapters.params.empty(), "lora_groups: no trainable LoRA adapters (lora_A, lora_B) among the ",
               named.size(), " parameters; attach them first (nn::add_lora)");
  std::vector<ParamGroup> groups = {adapters};
  for (auto& g : grouped(
           named, "lora_groups", [](const std::string& n) { return is_head(n) ? int64_t(0) : int64_t(-1); }, unit_scale))
    groups.push_back(std::move(g));
  return groups;
}

int64_t vit_layer_id(const std::string& name, int64_t depth) {
  for (const char* stem : {"cls_token", "pos_embed", "reg_token", "dist_token", "patch_embed.", "norm_pre."})
    if (name == stem || starts_with(name, stem)) return 0;
  if (starts_with(name, "blocks.")) {
    const size_t end = name.find('.', 7);
    const std::string index = name.substr(7, end == std::string::npos ? std::string::npos : end - 7);
    if (!index.empty() && index.find_first_not_of("0123456789") == std::string::npos && index.size() < 10)
      return std::stoll(index) + 1;
  }
  return depth + 1;
}

std::vector<ParamGroup> layer_decay_groups(const NamedTensors& named, double decay) {
  SPDLAB_CHECK(std::isfinite(decay) && decay > 0 && decay <= 1, "layer_decay_groups: decay must be in (0, 1]; got ",
               decay);
  int64_t depth = 0;  // blocks.0 ... blocks.(depth - 1)
  for (const auto& [name, t] : named) {
    const int64_t id = vit_layer_id(name, 1 << 30);
    if (id != 0 && id != (1 << 30) + 1) depth = std::max(depth, id);
  }
  return grouped(
      named, "layer_decay_groups", [&](const std::string& n) { return vit_layer_id(n, depth); },
      [&](int64_t layer) { return std::pow(decay, static_cast<double>(depth + 1 - layer)); });
}

NamedTensors freeze_unlisted(const NamedTensors& named, const std::vector<ParamGroup>& groups) {
  std::set<const TensorImpl*> listed;
  for (const ParamGroup& g : groups)
    for (const auto& [n, t] : g.params) listed.insert(t.impl());
  NamedTensors frozen;
  for (const auto& [name, t] : named) {
    if (!t.defined() || listed.count(t.impl()) || !t.requires_grad()) continue;
    Tensor(t).requires_grad_(false);
    frozen.emplace_back(name, t);
  }
  return frozen;
}

}  // namespace spdlab::optim
