// The optimizer base: parameter checks, the step loop, anchors, state_dict and its safetensors file, clipping.
// The update rules themselves live in sgd.cpp, adam.cpp and spd.cpp.
#include "optim/optimizer.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <set>

#include "core/autograd.h"
#include "core/io/safetensors.h"
#include "core/ops.h"
#include "kernels/kernels.h"
#include "kernels/threads.h"

namespace spdlab::optim {

namespace {

// A contiguous f32 copy on `device` that shares nothing with `src` (state must not alias caller tensors).
Tensor owned_copy(const Tensor& src, Device device) {
  Tensor out = Tensor::empty(src.shape(), DType::f32, device);
  out.copy_(src.detach().to(device));
  return out;
}

Tensor scalar_i64(int64_t v) { return Tensor::from_vector(std::vector<int64_t>{v}, {1}); }

// "a, b, c" with at most `limit` items, then "and N more".
std::string join_limited(const std::vector<std::string>& items, size_t limit = 12) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < limit; ++i) out += (i ? "; " : "") + items[i];
  if (items.size() > limit) out += "; and " + std::to_string(items.size() - limit) + " more";
  return out;
}

}  // namespace

std::vector<ParamGroup> one_group(NamedTensors params) {
  std::vector<ParamGroup> groups(1);
  groups[0].params = std::move(params);
  return groups;
}

Optimizer::Optimizer(std::vector<ParamGroup> groups, double lr, double decay, bool uses_anchors)
    : lr_(lr), uses_anchors_(uses_anchors) {
  SPDLAB_CHECK(std::isfinite(lr) && lr >= 0, "Optimizer: lr must be >= 0; got ", lr);
  std::set<std::string> names;
  std::set<const TensorImpl*> seen;
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const ParamGroup& g = groups[gi];
    SPDLAB_CHECK(std::isfinite(g.lr_scale) && g.lr_scale >= 0, "Optimizer: group ", gi, " has lr_scale ", g.lr_scale,
                 "; it must be >= 0");
    SPDLAB_CHECK(std::isfinite(g.decay_scale) && g.decay_scale >= 0, "Optimizer: group ", gi, " has decay_scale ",
                 g.decay_scale, "; it must be >= 0");
    groups_.push_back({g.lr_scale, decay * g.decay_scale, g.anchored});
    for (const auto& [name, t] : g.params) {
      SPDLAB_CHECK(!name.empty(), "Optimizer: a parameter in group ", gi, " has an empty name");
      SPDLAB_CHECK(t.defined(), "Optimizer: parameter '", name, "' is an undefined tensor");
      SPDLAB_CHECK(names.insert(name).second, "Optimizer: parameter name '", name, "' appears twice");
      SPDLAB_CHECK(seen.insert(t.impl()).second, "Optimizer: parameter '", name,
                   "' is the same tensor as an earlier parameter");
      SPDLAB_CHECK(t.dtype() == DType::f32, "Optimizer: parameter '", name, "' is ", t.dtype(),
                   "; optimizers update f32 tensors");
      SPDLAB_CHECK(t.is_contiguous(), "Optimizer: parameter '", name, "' ", shape_str(t.shape()),
                   " is not contiguous; pass the contiguous tensor the model owns");
      SPDLAB_CHECK(t.is_leaf(), "Optimizer: parameter '", name, "' is not a leaf (it was computed by an op)");
      params_.push_back({name, t, gi, 0, Tensor(), {}});
    }
  }
  SPDLAB_CHECK(!params_.empty(), "Optimizer: got an empty parameter list");
}

void Optimizer::step() {
  autograd::NoGradGuard no_grad;
  const std::vector<std::string> slots = slot_names();
  std::vector<Work> work;
  std::vector<Piece> pieces;
  for (Param& p : params_) {
    if (!p.value.requires_grad()) continue;
    Tensor g = p.value.grad();
    if (!g.defined()) continue;
    SPDLAB_CHECK(g.dtype() == DType::f32 && g.shape() == p.value.shape() && g.device() == p.value.device(),
                 kind(), ": the gradient of '", p.name, "' is ", g.dtype(), " ", shape_str(g.shape()), " on ",
                 g.device(), "; expected f32 ", shape_str(p.value.shape()), " on ", p.value.device());
    if (p.slots.empty())
      for (size_t s = 0; s < slots.size(); ++s)
        p.slots.push_back(Tensor::zeros(p.value.shape(), DType::f32, p.value.device()));
    ++p.step;
    const Group& grp = groups_[p.group];
    // The backend says how to slice: the CPU in fixed pieces for its threads, a GPU each tensor whole
    // (a piece of INT64_MAX, hence min(n - b, piece) + b rather than b + piece, which would overflow).
    const int64_t piece = kernels::get(p.value.device()).optimizer_piece();
    for (int64_t b = 0, n = p.value.numel(); b < n; b += piece) pieces.push_back({work.size(), b, std::min(n - b, piece) + b});
    work.push_back({&p, g.contiguous(), lr_ * grp.lr_scale, grp.decay});
  }
  start_step(work, pieces);
  for_each_piece(work, pieces, [&](size_t i) { update(work[pieces[i].work], pieces[i].begin, pieces[i].end, i); });
  finish_step(work, pieces);
  ++steps_;
}

void Optimizer::for_each_piece(const std::vector<Work>& work, const std::vector<Piece>& pieces,
                               const std::function<void(size_t)>& fn) {
  std::vector<int64_t> start(pieces.size() + 1, 0);
  for (size_t i = 0; i < pieces.size(); ++i) start[i + 1] = start[i] + (pieces[i].end - pieces[i].begin);
  const int64_t total = start.back();
  int64_t piece = 0;
  for (const Work& w : work) piece = std::max(piece, kernels::get(w.param->value.device()).optimizer_piece());
  const int threads = static_cast<int>(std::min<int64_t>(get_num_threads(), static_cast<int64_t>(pieces.size())));
  if (threads <= 1 || total < piece) {
    for (size_t i = 0; i < pieces.size(); ++i) fn(i);
    return;
  }
  // Inside the region the kernels run serially (they see omp_in_parallel), one piece at a time.
  std::exception_ptr error;
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t lo = total * t / nt, hi = total * (t + 1) / nt;
    size_t i = static_cast<size_t>(std::lower_bound(start.begin(), start.end() - 1, lo) - start.begin());
    try {
      for (; i < pieces.size() && start[i] < hi; ++i) fn(i);
    } catch (...) {
#pragma omp critical(spdlab_optim_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

const std::vector<TensorStats>& Optimizer::stats() const {
  static const std::vector<TensorStats> none;
  return none;
}

void Optimizer::zero_grad() {
  for (Param& p : params_) p.value.zero_grad();
}

void Optimizer::set_lr(double lr) {
  SPDLAB_CHECK(std::isfinite(lr) && lr >= 0, kind(), ": set_lr expects a learning rate >= 0; got ", lr);
  lr_ = lr;
}

double Optimizer::group_lr(size_t group) const {
  SPDLAB_CHECK(group < groups_.size(), kind(), ": no group ", group, " (there are ", groups_.size(), ")");
  return lr_ * groups_[group].lr_scale;
}

double Optimizer::group_decay(size_t group) const {
  SPDLAB_CHECK(group < groups_.size(), kind(), ": no group ", group, " (there are ", groups_.size(), ")");
  return groups_[group].decay;
}

NamedTensors Optimizer::params() const {
  NamedTensors out;
  for (const Param& p : params_) out.emplace_back(p.name, p.value);
  return out;
}

// ---- anchors ----

void Optimizer::capture_anchors() {
  if (!uses_anchors_) return;
  autograd::NoGradGuard no_grad;
  for (Param& p : params_)
    p.anchor = groups_[p.group].anchored ? owned_copy(p.value, p.value.device()) : Tensor();
}

void Optimizer::set_anchors(const std::map<std::string, Tensor>& anchors) {
  std::vector<std::string> problems;
  std::set<std::string> known;
  for (const Param& p : params_) {
    known.insert(p.name);
    auto it = anchors.find(p.name);
    if (it == anchors.end()) continue;
    if (!it->second.defined())
      problems.push_back("'" + p.name + "' is an undefined tensor");
    else if (it->second.shape() != p.value.shape())
      problems.push_back("'" + p.name + "' is " + shape_str(it->second.shape()) + " but the parameter is " +
                         shape_str(p.value.shape()));
    else if (it->second.dtype() == DType::i64)
      problems.push_back("'" + p.name + "' is i64; anchors are floating");
  }
  for (const auto& [name, t] : anchors)
    if (!known.count(name)) problems.push_back("'" + name + "' is not a parameter of this optimizer");
  SPDLAB_CHECK(problems.empty(), kind(), ": set_anchors: ", join_limited(problems));
  if (!uses_anchors_) return;
  autograd::NoGradGuard no_grad;
  for (Param& p : params_) {
    auto it = anchors.find(p.name);
    p.anchor = it == anchors.end() ? Tensor() : owned_copy(it->second, p.value.device());
  }
}

void Optimizer::clear_anchors() {
  for (Param& p : params_) p.anchor = Tensor();
}

NamedTensors Optimizer::anchors() const {
  NamedTensors out;
  for (const Param& p : params_)
    if (p.anchor.defined()) out.emplace_back(p.name, p.anchor);
  return out;
}

// ---- state ----

NamedTensors Optimizer::state_dict() const {
  autograd::NoGradGuard no_grad;
  NamedTensors out;
  out.emplace_back("optimizer." + kind(), scalar_i64(1));
  out.emplace_back("steps", scalar_i64(steps_));
  out.emplace_back("lr", Tensor::from_vector(std::vector<double>{lr_}, {1}));
  const std::vector<std::string> slots = slot_names();
  for (const Param& p : params_) {
    out.emplace_back("step." + p.name, scalar_i64(p.step));
    for (size_t s = 0; s < p.slots.size(); ++s) out.emplace_back(slots[s] + "." + p.name, owned_copy(p.slots[s], Device::cpu));
    if (p.anchor.defined()) out.emplace_back("anchor." + p.name, owned_copy(p.anchor, Device::cpu));
  }
  save_extra(out);
  return out;
}

void Optimizer::load_state_dict(const NamedTensors& state) {
  std::map<std::string, Tensor> by_name;
  for (const auto& [name, t] : state) by_name[name] = t;
  std::vector<std::string> problems, consumed;
  auto take = [&](const std::string& name) -> const Tensor* {
    auto it = by_name.find(name);
    if (it == by_name.end()) return nullptr;
    consumed.push_back(name);
    return &it->second;
  };
  auto scalar = [&](const std::string& name, bool integer) -> const Tensor* {
    const Tensor* t = take(name);
    if (!t)
      problems.push_back("missing " + name);
    else if (t->numel() != 1 || (integer != (t->dtype() == DType::i64)))
      problems.push_back(name + " should be one " + (integer ? "i64" : "floating") + " value");
    else
      return t;
    return nullptr;
  };

  const std::string marker = "optimizer." + kind();
  if (!by_name.count(marker)) {
    for (const auto& [name, t] : by_name)
      SPDLAB_CHECK(name.rfind("optimizer.", 0) != 0, kind(), ": load_state_dict: the state is for optimizer '",
                   name.substr(10), "', not '", kind(), "'");
    SPDLAB_FAIL(kind(), ": load_state_dict: not an spdlab optimizer state (no ", marker, " entry)");
  }
  take(marker);
  const Tensor* steps = scalar("steps", true);
  const Tensor* lr = scalar("lr", false);
  const std::vector<std::string> slots = slot_names();
  std::vector<int64_t> param_steps(params_.size(), 0);
  for (size_t i = 0; i < params_.size(); ++i) {
    const Param& p = params_[i];
    if (const Tensor* st = scalar("step." + p.name, true)) param_steps[i] = static_cast<int64_t>(st->item());
    auto check_shape = [&](const std::string& key, const Tensor& t) {
      if (t.shape() != p.value.shape() || t.dtype() == DType::i64)
        problems.push_back("'" + key + "' is " + dtype_name(t.dtype()) + " " + shape_str(t.shape()) +
                           " in the state but the parameter is f32 " + shape_str(p.value.shape()));
    };
    for (const std::string& slot : slots) {
      const std::string key = slot + "." + p.name;
      const Tensor* t = take(key);
      if (t) check_shape(key, *t);
      if (!t && param_steps[i] > 0) problems.push_back("missing " + key);
      if (t && param_steps[i] == 0) problems.push_back(key + " is present but step." + p.name + " is 0");
    }
    if (const Tensor* a = take("anchor." + p.name)) check_shape("anchor." + p.name, *a);
  }
  check_extra(by_name, problems, consumed);
  std::set<std::string> used(consumed.begin(), consumed.end());
  std::vector<std::string> unexpected;
  for (const auto& [name, t] : by_name)
    if (!used.count(name)) unexpected.push_back(name);
  if (!unexpected.empty())
    problems.push_back("unexpected entries (another model, or other options such as amsgrad?): " +
                       join_limited(unexpected, 8));
  SPDLAB_CHECK(problems.empty(), kind(), ": load_state_dict: the state does not match this optimizer: ",
               join_limited(problems));

  autograd::NoGradGuard no_grad;
  steps_ = static_cast<int64_t>(steps->item());
  lr_ = lr->item();
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    p.step = param_steps[i];
    p.slots.clear();
    if (p.step > 0)
      for (const std::string& slot : slots) p.slots.push_back(owned_copy(by_name.at(slot + "." + p.name), p.value.device()));
    auto a = by_name.find("anchor." + p.name);
    p.anchor = a == by_name.end() ? Tensor() : owned_copy(a->second, p.value.device());
  }
  load_extra(by_name);
}

void Optimizer::save_state(const std::string& path) const {
  io::save_safetensors(path, state_dict(), {{"format", "spdlab-optim-v1"}, {"optimizer", kind()}});
}

void Optimizer::load_state(const std::string& path) {
  io::SafetensorsFile file(path);
  auto meta = file.metadata().find("optimizer");
  SPDLAB_CHECK(meta == file.metadata().end() || meta->second == kind(), kind(), ": load_state: '", path,
               "' holds the state of optimizer '", meta->second, "', not '", kind(), "'");
  NamedTensors state;
  for (const std::string& name : file.names()) state.emplace_back(name, file.load_exact(name));
  try {
    load_state_dict(state);
  } catch (const Error& e) {
    SPDLAB_FAIL(e.what(), " (file '", path, "')");
  }
}

// ---- clipping ----

double clip_grad_norm(const NamedTensors& params, double max_norm) {
  SPDLAB_CHECK(std::isfinite(max_norm) && max_norm > 0, "clip_grad_norm: max_norm must be > 0; got ", max_norm);
  autograd::NoGradGuard no_grad;
  std::vector<Tensor> with_grad;
  double total_sq = 0;
  for (const auto& [name, t] : params) {
    SPDLAB_CHECK(t.defined(), "clip_grad_norm: parameter '", name, "' is an undefined tensor");
    Tensor g = t.grad();
    if (!g.defined()) continue;
    with_grad.push_back(t);
    total_sq += sum(mul(g, g)).item();  // f32 squares summed in double by the reduction kernel
  }
  double total = std::sqrt(total_sq);
  double coef = max_norm / (total + 1e-6);
  if (std::isfinite(total) && coef < 1.0)
    for (Tensor& t : with_grad) t.set_grad(mul(t.grad(), coef));
  return total;
}

std::string first_nonfinite(const NamedTensors& tensors, bool grads) {
  autograd::NoGradGuard no_grad;
  auto pick = [&](const Tensor& t) { return grads ? t.grad() : t; };
  Tensor total;  // sum over tensors of sum(t * 0): 0 exactly when every element is finite
  for (const auto& [name, t] : tensors) {
    const Tensor x = pick(t);
    if (!x.defined() || x.dtype() == DType::i64) continue;
    Tensor s = sum(mul(x.detach(), 0.0)).to(DType::f64);
    if (total.defined() && s.device() != total.device()) s = s.to(total.device());
    total = total.defined() ? add(total, s) : s;
  }
  if (!total.defined() || std::isfinite(total.item())) return "";
  for (const auto& [name, t] : tensors)
    if (pick(t).defined() && !all_finite(pick(t))) return name;
  return "";
}

}  // namespace spdlab::optim
