// Module bookkeeping: names, state dicts and the one-error load report.
#include "nn/module.h"

#include <set>
#include <sstream>

#include "core/autograd.h"
#include "core/ops.h"

namespace spdlab::nn {

bool matches_pattern(const std::string& key, const std::string& pattern) {
  if (!pattern.empty() && pattern.back() == '*') return key.rfind(pattern.substr(0, pattern.size() - 1), 0) == 0;
  return key == pattern;
}

Tensor& Module::register_parameter(const std::string& name, Tensor t) {
  if (t.dtype() != DType::i64 && !t.requires_grad()) t.requires_grad_(true);
  params_.emplace_back(name, std::make_unique<Tensor>(std::move(t)));
  return *params_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor t) {
  buffers_.emplace_back(name, std::make_unique<Tensor>(std::move(t)));
  return *buffers_.back().second;
}

void Module::collect(const std::string& prefix, bool params, NamedTensors& out) const {
  for (const auto& [n, t] : params ? params_ : buffers_) out.emplace_back(prefix + n, *t);
  for (const auto& [n, c] : children_) c->collect(prefix + n + ".", params, out);
}

void Module::collect_refs(const std::string& prefix, std::vector<std::pair<std::string, Tensor*>>& out) const {
  for (const auto& [n, t] : params_) out.emplace_back(prefix + n, t.get());
  for (const auto& [n, t] : buffers_) out.emplace_back(prefix + n, t.get());
  for (const auto& [n, c] : children_) c->collect_refs(prefix + n + ".", out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", true, out);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", false, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

NamedTensors Module::state_dict() const {
  NamedTensors out = named_parameters();
  for (auto& nb : named_buffers()) out.push_back(nb);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict,
                             const std::vector<std::string>& ignore) {
  auto ignored = [&](const std::string& k) {
    for (const auto& p : ignore)
      if (matches_pattern(k, p)) return true;
    return false;
  };
  std::vector<std::pair<std::string, Tensor*>> slots;
  collect_refs("", slots);
  std::vector<std::string> missing, mismatched, unexpected, nonfinite;
  std::set<std::string> known;
  for (auto& [name, slot] : slots) {
    known.insert(name);
    if (ignored(name)) continue;
    auto it = state.find(name);
    if (it == state.end()) {
      missing.push_back(name);
      continue;
    }
    if (it->second.shape() != slot->shape()) {
      std::ostringstream os;
      os << "'" << name << "' is " << shape_str(it->second.shape()) << " in the file but " << shape_str(slot->shape())
         << " in the model";
      mismatched.push_back(os.str());
    } else if ((it->second.dtype() == DType::i64) != (slot->dtype() == DType::i64)) {
      mismatched.push_back("'" + name + "' holds " + (it->second.dtype() == DType::i64 ? "integers" : "floats") +
                           " in the file but " + dtype_name(slot->dtype()) + " in the model");
    } else if (!all_finite(it->second)) {
      nonfinite.push_back(name);
    }
  }
  for (auto& [name, t] : state)
    if (!known.count(name) && !ignored(name)) unexpected.push_back(name);
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
    return s;
  };
  std::string err;
  if (!mismatched.empty()) {
    err += "shape or type mismatch: " + join(mismatched);
    for (const auto& m : mismatched)
      if (m.rfind("'head.", 0) == 0) {
        err += "; pass --ignore 'head.*' (or ignore {\"head.*\"}) to fine-tune with a new head";
        break;
      }
  }
  if (strict && !missing.empty()) err += std::string(err.empty() ? "" : "; ") + "missing keys: " + join(missing);
  if (strict && !unexpected.empty())
    err += std::string(err.empty() ? "" : "; ") + "unexpected keys: " + join(unexpected);
  if (!nonfinite.empty())
    err += std::string(err.empty() ? "" : "; ") + "non-finite values (NaN or inf; a diverged run?) in: " + join(nonfinite);
  SPDLAB_CHECK(err.empty(), "load_state_dict: ", err);
  autograd::NoGradGuard ng;
  for (auto& [name, slot] : slots) {
    if (ignored(name)) continue;
    auto it = state.find(name);
    if (it != state.end()) slot->copy_(it->second.to(slot->device()));  // straight from the file to the device
  }
}

void Module::replace_each(const std::function<Tensor(const Tensor&)>& convert) {
  std::vector<std::pair<std::string, Tensor*>> slots;
  collect_refs("", slots);
  autograd::NoGradGuard ng;
  for (auto& [name, slot] : slots) {
    const Tensor current = slot->detach();
    Tensor next = convert(current);
    if (next.impl() == current.impl()) continue;  // already as asked: the slot keeps its tensor
    if (slot->requires_grad()) next.requires_grad_(true);
    *slot = next;
  }
}

void Module::to(Device device) {
  replace_each([&](const Tensor& t) { return t.device() == device ? t : t.to(device); });
}

void Module::to(DType dtype) {
  SPDLAB_CHECK(dtype == DType::f32 || dtype == DType::f64, "Module::to: parameters are f32 or f64, not ", dtype);
  replace_each([&](const Tensor& t) { return t.dtype() == dtype || t.dtype() == DType::i64 ? t : t.to(dtype); });
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out;
  for (auto& [n, c] : children_) {
    out.emplace_back(n, c.get());
    for (auto& [sub, m] : c->named_modules()) out.emplace_back(n + "." + sub, m);
  }
  return out;
}

bool Module::remove_module(const std::string& name) {
  for (auto it = children_.begin(); it != children_.end(); ++it)
    if (it->first == name) {
      children_.erase(it);
      return true;
    }
  return false;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::requires_grad_(bool on) {
  for (auto& [n, t] : named_parameters()) {
    Tensor h = t;
    h.requires_grad_(on);
    if (!on) h.zero_grad();
  }
}

void Module::zero_grad() {
  for (auto& [n, t] : named_parameters()) {
    Tensor h = t;
    h.zero_grad();
  }
}

}  // namespace spdlab::nn
