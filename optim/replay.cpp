// Trace loading with its checks, and the replay loop.
#include "optim/replay.h"

#include <fnmatch.h>

#include <set>

#include "core/autograd.h"
#include "core/io/safetensors.h"

namespace spdlab::optim {

namespace {
bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

std::string list_some(const std::vector<std::string>& items, const char* sep, size_t limit = 6) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < limit; ++i) out += (i ? sep : "") + items[i];
  if (items.size() > limit) out += sep + std::string("and ") + std::to_string(items.size() - limit) + " more";
  return out;
}

bool matches_any(const std::string& name, const std::vector<std::string>& patterns) {
  for (const std::string& p : patterns)
    if (::fnmatch(p.c_str(), name.c_str(), 0) == 0) return true;
  return false;
}
}  // namespace

Trace load_trace(const std::string& path) {
  io::SafetensorsFile file(path);
  const std::string where = "trace '" + path + "'";
  Trace tr;
  std::map<int64_t, std::map<std::string, Tensor>> by_step;
  std::vector<std::string> problems;
  auto load_float = [&](const std::string& key) {
    Tensor t = file.load(key);
    if (t.dtype() != DType::f32) problems.push_back(key + " is " + file.info(key).dtype + ", not a floating tensor");
    return t;
  };
  for (const std::string& key : file.names()) {
    if (starts_with(key, "param.")) {
      tr.start[key.substr(6)] = load_float(key);
    } else if (starts_with(key, "anchor.")) {
      tr.anchors[key.substr(7)] = load_float(key);
    } else if (starts_with(key, "grad.")) {
      size_t dot = key.find('.', 5);
      std::string step = key.substr(5, dot == std::string::npos ? std::string::npos : dot - 5);
      bool digits = !step.empty() && step.size() <= 9 && step.find_first_not_of("0123456789") == std::string::npos;
      if (!digits || dot == std::string::npos || dot + 1 == key.size()) {
        problems.push_back("'" + key + "' is not grad.<step>.<name>");
        continue;
      }
      by_step[std::stoll(step)][key.substr(dot + 1)] = load_float(key);
    }
  }
  SPDLAB_CHECK(problems.empty(), where, ": ", list_some(problems, "; "));
  SPDLAB_CHECK(!tr.start.empty(), where, " has no param.<name> tensors");
  SPDLAB_CHECK(!by_step.empty(), where, " has no steps (no grad.<t>.<name> tensors)");
  for (const auto& [name, t] : tr.start) tr.names.push_back(name);

  const int64_t steps = by_step.rbegin()->first + 1;
  for (const auto& [name, a] : tr.anchors) {
    auto it = tr.start.find(name);
    if (it == tr.start.end())
      problems.push_back("anchor." + name + " has no param." + name);
    else if (a.shape() != it->second.shape())
      problems.push_back("anchor." + name + " is " + shape_str(a.shape()) + " but param." + name + " is " +
                         shape_str(it->second.shape()));
  }
  std::vector<std::string> missing;
  for (int64_t t = 0; t < steps; ++t) {
    const auto& have = by_step[t];
    for (const auto& [name, g] : have) {
      auto it = tr.start.find(name);
      if (it == tr.start.end())
        problems.push_back("grad." + std::to_string(t) + "." + name + " has no param." + name);
      else if (g.shape() != it->second.shape())
        problems.push_back("grad." + std::to_string(t) + "." + name + " is " + shape_str(g.shape()) + " but param." +
                           name + " is " + shape_str(it->second.shape()));
    }
    for (const std::string& name : tr.names)
      if (!have.count(name)) missing.push_back("grad." + std::to_string(t) + "." + name);
  }
  if (!missing.empty())
    problems.push_back("missing gradients for " + std::to_string(steps) + " steps: " + list_some(missing, ", "));
  SPDLAB_CHECK(problems.empty(), where, ": ", list_some(problems, "; "));
  for (int64_t t = 0; t < steps; ++t) tr.grads.push_back(std::move(by_step[t]));
  return tr;
}

ReplayResult replay(const Trace& trace, const std::string& kind, const Hyperparams& h, const ReplayOptions& o) {
  NamedTensors params;
  {
    autograd::NoGradGuard no_grad;
    for (const std::string& name : trace.names) {
      const Tensor& s = trace.start.at(name);
      Tensor p = Tensor::empty(s.shape(), DType::f32, o.device);
      p.copy_(s.to(o.device));
      params.emplace_back(name, p.requires_grad_());
    }
  }
  for (const std::string& pattern : o.unanchored) {
    bool any = false;
    for (const std::string& name : trace.names) any = any || matches_any(name, {pattern});
    SPDLAB_CHECK(any, "replay: the unanchored pattern '", pattern, "' matches no tensor of the trace");
  }
  std::unique_ptr<Optimizer> opt = make_optimizer(kind, params, h);
  if (o.use_anchors && opt->uses_anchors()) {
    std::map<std::string, Tensor> anchors;
    for (const std::string& name : trace.names) {
      if (matches_any(name, o.unanchored)) continue;
      if (trace.anchors.empty())
        anchors[name] = trace.start.at(name);
      else if (auto it = trace.anchors.find(name); it != trace.anchors.end())
        anchors[name] = it->second;
    }
    opt->set_anchors(anchors);
  }
  ReplayResult out;
  NamedTensors history;
  for (size_t t = 0; t < trace.grads.size(); ++t) {
    for (auto& [name, p] : params) p.set_grad(trace.grads[t].at(name).to(DType::f32).to(o.device));
    opt->step();
    if (o.every_step)
      for (const auto& [name, p] : params) history.emplace_back("step." + std::to_string(t) + "." + name, p.detach().clone());
  }
  for (const auto& [name, p] : params) out.tensors.emplace_back("param." + name, p.detach());
  for (auto& e : history) out.tensors.push_back(std::move(e));
  if (auto* spd = dynamic_cast<const SPD*>(opt.get())) out.spd_stats = spd->stats();
  return out;
}

}  // namespace spdlab::optim
