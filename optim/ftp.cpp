// FTP: the Adam pass of adam.cpp, then, in finish_step, each anchored tensor's radius update and projection as a
// few tensor ops (so on any device), with the radius itself on the host.
#include "optim/ftp.h"

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"

namespace spdlab::optim {

namespace {
constexpr double kFloor = 1e-8;  // the radius's first value and lower clip, and the norms' guard

const FTPOptions& checked(const FTPOptions& o) {
  check_adam_options(o.adam, "FTPOptions.adam");
  SPDLAB_CHECK(!o.adam.amsgrad, "FTPOptions: adam.amsgrad is not supported");
  SPDLAB_CHECK(std::isfinite(o.kappa) && o.kappa >= 0 && o.kappa <= 1, "FTPOptions: kappa must be in [0, 1]; got ",
               o.kappa);
  SPDLAB_CHECK(std::isfinite(o.mu) && o.mu > 0, "FTPOptions: mu must be > 0; got ", o.mu);
  return o;
}

AdamOptions with_decoupled_decay(AdamOptions o) {
  o.decoupled = true;  // the authors add lr * wd * w to the step: AdamW's decay
  return o;
}

// A tensor as the rows FTP measures: [first dim, the rest]; a 1-D (or 0-D) tensor is a single row.
Shape rows_of(const Tensor& t) {
  if (t.dim() <= 1) return {1, t.numel()};
  return {t.size(0), t.numel() / std::max<int64_t>(t.size(0), 1)};
}
}  // namespace

FTP::FTP(NamedTensors params, FTPOptions options) : FTP(one_group(std::move(params)), options) {}

FTP::FTP(std::vector<ParamGroup> groups, FTPOptions options)
    : Adam(std::move(groups), with_decoupled_decay(checked(options).adam), 0.0, 0.0), opt_(options) {
  radius_.resize(params_.size());
}

std::vector<std::string> FTP::slot_names() const { return {"exp_avg", "exp_avg_sq", "prev_dev"}; }

std::vector<double> FTP::radii() const {
  std::vector<double> out;
  for (const Radius& r : radius_) out.push_back(r.gamma);
  return out;
}

void FTP::finish_step(const std::vector<Work>& work, const std::vector<Piece>&) {
  autograd::NoGradGuard no_grad;
  for (const Work& w : work) {
    Param& p = *w.param;
    if (!p.anchor.defined()) continue;
    Radius& rad = radius_[static_cast<size_t>(&p - params_.data())];
    const Shape rows = rows_of(p.value);
    const Tensor w0 = p.anchor.reshape(rows);
    const Tensor d = p.value.reshape(rows) - w0;  // W~ - W0
    const Tensor n = sum(abs(d), {1}, true) + kFloor;
    const std::vector<double> nv = n.to_vector_f64();
    if (rad.inv_norm.empty()) {  // the tensor's first step
      rad = Radius{kFloor, 0, 0, {}};
    } else {
      // dL/dgamma through the last projection: sum_j <g_j, d'_j> / n'_j.
      const std::vector<double> dots = sum(w.grad.reshape(rows) * p.slots[2].reshape(rows), {1}).to_vector_f64();
      double grad = 0;
      for (size_t j = 0; j < dots.size(); ++j) grad += dots[j] * rad.inv_norm[j];
      if (grad > 0) grad *= opt_.kappa;
      const double b1 = 0.9, b2 = 0.999, t = static_cast<double>(p.step);
      rad.m = b1 * rad.m + (1 - b1) * grad;
      rad.v = b2 * rad.v + (1 - b2) * grad * grad;
      const double m_hat = rad.m / (1 - std::pow(b1, t)), v_hat = rad.v / (1 - std::pow(b2, t));
      rad.gamma -= opt_.mu * m_hat / (std::sqrt(v_hat) + kFloor);
      rad.gamma = std::clamp(rad.gamma, kFloor, std::max(kFloor, *std::max_element(nv.begin(), nv.end())));
    }
    // W_j = W0_j + d_j / max(1, n_j / gamma), that is min(1, gamma / n_j) d_j.
    const Tensor over = maximum(n * (1.0 / rad.gamma), Tensor::ones({1}, p.value.dtype(), p.value.device()));
    p.slots[2].copy_(d.reshape(p.value.shape()));
    p.value.copy_((w0 + d / over).reshape(p.value.shape()));
    rad.inv_norm.resize(nv.size());
    for (size_t j = 0; j < nv.size(); ++j) rad.inv_norm[j] = 1.0 / nv[j];
  }
}

// Saved per tensor as one f64 vector: gamma, m, v, then 1 / n_j of every row (absent before the first step).
void FTP::save_extra(NamedTensors& out) const {
  for (size_t i = 0; i < params_.size(); ++i) {
    const Radius& r = radius_[i];
    std::vector<double> v = {r.gamma, r.m, r.v};
    v.insert(v.end(), r.inv_norm.begin(), r.inv_norm.end());
    const int64_t len = static_cast<int64_t>(v.size());
    out.emplace_back("ftp." + params_[i].name, Tensor::from_vector(v, {len}));
  }
}

void FTP::check_extra(const std::map<std::string, Tensor>& state, std::vector<std::string>& problems,
                      std::vector<std::string>& consumed) const {
  for (const Param& p : params_) {
    const std::string key = "ftp." + p.name;
    const int64_t rows = rows_of(p.value)[0];
    auto it = state.find(key);
    if (it == state.end())
      problems.push_back("missing " + key);
    else if (it->second.dim() != 1 || it->second.dtype() == DType::i64 ||
             (it->second.numel() != 3 && it->second.numel() != 3 + rows))
      problems.push_back(key + " should hold 3 or " + std::to_string(3 + rows) + " floating values (gamma, its two "
                         "moments, and 1 / norm of each of " + std::to_string(rows) + " rows)");
    else
      consumed.push_back(key);
  }
}

void FTP::load_extra(const std::map<std::string, Tensor>& state) {
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::vector<double> v = state.at("ftp." + params_[i].name).to_vector_f64();
    radius_[i] = Radius{v[0], v[1], v[2], std::vector<double>(v.begin() + 3, v.end())};
  }
}

}  // namespace spdlab::optim
