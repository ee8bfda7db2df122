// LoRA adapters on a module tree: attach, merge, detach, save and load (nn/lora.h).
#include "nn/lora.h"

#include <algorithm>
#include <map>

#include "core/io/json.h"
#include "core/io/safetensors.h"

namespace spdlab::nn {

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0 &&
         (s.size() == suffix.size() || s[s.size() - suffix.size() - 1] == '.');
}

std::vector<std::pair<std::string, Linear*>> linears(Module& model) {
  std::vector<std::pair<std::string, Linear*>> out;
  for (auto& [name, m] : model.named_modules())
    if (auto* l = dynamic_cast<Linear*>(m); l && !is_lora_name(name + ".")) out.emplace_back(name, l);
  return out;
}

const char* kPrefixPeft = "base_model.model.";
}  // namespace

bool is_lora_name(const std::string& name) {
  return name.find(".lora_A.") != std::string::npos || name.find(".lora_B.") != std::string::npos ||
         name.rfind("lora_A.", 0) == 0 || name.rfind("lora_B.", 0) == 0;
}

std::vector<std::string> add_lora(Module& model, const LoRAOptions& o) {
  SPDLAB_CHECK(!o.targets.empty(), "add_lora: no targets given");
  // Every target is checked before any is adapted, so a failure leaves the model as it was.
  std::vector<std::pair<std::string, Linear*>> chosen;
  for (auto& [name, l] : linears(model)) {
    bool target = false;
    for (const auto& t : o.targets) target = target || ends_with(name, t);
    if (!target) continue;
    SPDLAB_CHECK(!l->lora_A, "add_lora: '", name, "' already has adapters");
    const int64_t most = std::min(l->weight.size(0), l->weight.size(1));
    SPDLAB_CHECK(o.rank >= 1 && o.rank <= most, "add_lora: rank ", o.rank, " does not fit '", name, "', whose weight is ",
                 shape_str(l->weight.shape()), ": expected a rank from 1 to ", most);
    chosen.emplace_back(name, l);
  }
  Generator gen(o.seed);
  std::vector<std::string> names;
  for (auto& [name, l] : chosen) {
    l->add_lora(o.rank, o.alpha, gen);
    names.push_back(name);
  }
  std::string wanted;
  for (const auto& t : o.targets) wanted += (wanted.empty() ? "" : ", ") + t;
  SPDLAB_CHECK(!names.empty(), "add_lora: no Linear module's name ends in any of the targets (", wanted, ")");
  return names;
}

bool has_lora(Module& model) {
  for (auto& [name, l] : linears(model))
    if (l->lora_A) return true;
  return false;
}

void merge_lora(Module& model) {
  for (auto& [name, l] : linears(model)) l->merge_lora();
}

void unmerge_lora(Module& model) {
  for (auto& [name, l] : linears(model)) l->unmerge_lora();
}

void remove_lora(Module& model, bool merge) {
  for (auto& [name, l] : linears(model)) l->remove_lora(merge);
}

NamedTensors lora_parameters(Module& model) {
  NamedTensors out;
  for (auto& [n, t] : model.named_parameters())
    if (is_lora_name(n)) out.emplace_back(n, t);
  return out;
}

void save_lora(Module& model, const LoRAOptions& o, const std::string& path, const NamedTensors& extra,
               std::map<std::string, std::string> metadata) {
  NamedTensors tensors = lora_parameters(model);
  SPDLAB_CHECK(!tensors.empty(), "save_lora: the model has no adapters to save to ", path);
  for (const auto& e : extra) tensors.push_back(e);
  json::Value::Array targets;
  for (const auto& t : o.targets) targets.push_back(json::Value::string(t));
  metadata["spdlab.lora"] = json::dump(json::Value::object({{"rank", json::Value::integer(o.rank)},
                                                            {"alpha", json::Value::number(o.alpha)},
                                                            {"targets", json::Value::array(targets)}}));
  io::save_safetensors(path, tensors, metadata);
}

LoRAOptions load_lora(Module& model, const std::string& path, const LoRAOptions* fallback) {
  std::map<std::string, std::string> meta;
  std::map<std::string, Tensor> raw = io::load_safetensors(path, &meta);
  LoRAOptions o;
  if (auto it = meta.find("spdlab.lora"); it != meta.end()) {
    const json::Value v = json::parse(it->second, path + ": spdlab.lora");
    const json::Value *rank = v.find("rank"), *alpha = v.find("alpha"), *targets = v.find("targets");
    SPDLAB_CHECK(rank && alpha && targets && targets->is_array(), path,
                 ": metadata spdlab.lora should hold rank, alpha and targets; got ", it->second);
    o.rank = rank->as_int();
    o.alpha = alpha->as_double();
    o.targets.clear();
    for (const auto& t : targets->as_array()) o.targets.push_back(t.as_string());
  } else {
    SPDLAB_CHECK(fallback != nullptr, path, ": no spdlab.lora metadata (rank, alpha, targets); pass the adapters' "
                 "rank and alpha (--lora-rank, --lora-alpha)");
    o = *fallback;
  }
  std::map<std::string, Tensor> state;
  for (auto& [k, t] : raw) state[k.rfind(kPrefixPeft, 0) == 0 ? k.substr(std::string(kPrefixPeft).size()) : k] = t;
  if (!has_lora(model)) add_lora(model, o);
  // Every adapter must be in the file; the file may also hold other tensors of the model (a trained head).
  std::vector<std::string> missing, unknown;
  std::map<std::string, Tensor> known;
  for (auto& [n, t] : model.state_dict()) known[n] = t;
  for (auto& [n, t] : lora_parameters(model))
    if (!state.count(n)) missing.push_back(n);
  for (auto& [n, t] : state)
    if (!known.count(n)) unknown.push_back(n);
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < 8; ++i) s += (i ? ", " : "") + v[i];
    if (v.size() > 8) s += ", ... (" + std::to_string(v.size()) + " in all)";
    return s;
  };
  SPDLAB_CHECK(missing.empty(), path, ": adapters missing from the file: ", join(missing));
  SPDLAB_CHECK(unknown.empty(), path, ": tensors the model does not have: ", join(unknown));
  model.load_state_dict(state, /*strict=*/false);
  return o;
}

}  // namespace spdlab::nn
