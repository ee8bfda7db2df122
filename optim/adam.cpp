// Adam, AdamW, L2-SP and MARS-SP: option checks and the one fused kernel call per tensor.
#include "optim/adam.h"

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"

namespace spdlab::optim {

const AdamOptions& check_adam_options(const AdamOptions& o, const char* who) {
  SPDLAB_CHECK(std::isfinite(o.lr) && o.lr >= 0, who, ": lr must be >= 0; got ", o.lr);
  SPDLAB_CHECK(o.beta1 >= 0 && o.beta1 < 1, who, ": beta1 must be in [0, 1); got ", o.beta1);
  SPDLAB_CHECK(o.beta2 >= 0 && o.beta2 < 1, who, ": beta2 must be in [0, 1); got ", o.beta2);
  SPDLAB_CHECK(std::isfinite(o.eps) && o.eps > 0, who, ": eps must be > 0; got ", o.eps);
  SPDLAB_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0, who, ": weight_decay must be >= 0; got ",
               o.weight_decay);
  return o;
}

const MarsSPOptions& checked(const MarsSPOptions& o) {
  check_adam_options(o.adam, "MarsSPOptions.adam");
  SPDLAB_CHECK(o.adam.weight_decay == 0 && !o.adam.decoupled,
               "MarsSPOptions: adam.weight_decay must be 0 (MARS-SP's one regularizer is the radius gamma); got ",
               o.adam.weight_decay);
  SPDLAB_CHECK(std::isfinite(o.gamma) && o.gamma > 0, "MarsSPOptions: gamma must be > 0; got ", o.gamma);
  return o;
}

kernels::AdamStep adam_step_params(const AdamOptions& o, double lr, double weight_decay, int64_t step) {
  kernels::AdamStep h{};
  h.lr = lr;
  h.beta1 = o.beta1;
  h.beta2 = o.beta2;
  h.eps = o.eps;
  h.weight_decay = weight_decay;
  h.bias_correction1 = 1.0 - std::pow(o.beta1, static_cast<double>(step));
  h.bias_correction2 = 1.0 - std::pow(o.beta2, static_cast<double>(step));
  h.decoupled = o.decoupled;
  h.amsgrad = o.amsgrad;
  return h;
}

namespace {
AdamOptions decoupled(AdamOptions o) {
  o.decoupled = true;
  return o;
}

const L2SPOptions& checked(const L2SPOptions& o) {
  check_adam_options(o.adam, "L2SPOptions.adam");
  SPDLAB_CHECK(std::isfinite(o.alpha) && o.alpha >= 0, "L2SPOptions: alpha must be >= 0; got ", o.alpha);
  SPDLAB_CHECK(std::isfinite(o.beta) && o.beta >= 0, "L2SPOptions: beta must be >= 0; got ", o.beta);
  return o;
}
}  // namespace

Adam::Adam(NamedTensors params, AdamOptions options) : Adam(one_group(std::move(params)), options) {}

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions options)
    : Optimizer(std::move(groups), check_adam_options(options, options.decoupled ? "AdamW options" : "AdamOptions").lr,
                options.weight_decay, false),
      opt_(options) {}

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions options, double l2sp_alpha, double l2sp_beta)
    : Optimizer(std::move(groups), options.lr, options.weight_decay, true),
      opt_(options),
      l2sp_alpha_(l2sp_alpha),
      l2sp_beta_(l2sp_beta) {}

std::vector<std::string> Adam::slot_names() const {
  if (opt_.amsgrad) return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  return {"exp_avg", "exp_avg_sq"};
}

void Adam::update(const Work& w, int64_t begin, int64_t end, size_t) {
  Param& p = *w.param;
  kernels::AdamStep h = adam_step_params(opt_, w.lr, w.decay, p.step);
  h.l2sp_alpha = l2sp_alpha_;
  h.l2sp_beta = l2sp_beta_;
  auto at = [&](const Tensor& t) { return t.data<float>() + begin; };
  kernels::get(p.value.device())
      .adam_step(at(p.value), at(w.grad), at(p.slots[0]), at(p.slots[1]), opt_.amsgrad ? at(p.slots[2]) : nullptr,
                 p.anchor.defined() ? at(p.anchor) : nullptr, end - begin, h);
}

AdamW::AdamW(NamedTensors params, AdamOptions options) : Adam(std::move(params), decoupled(options)) {}
AdamW::AdamW(std::vector<ParamGroup> groups, AdamOptions options) : Adam(std::move(groups), decoupled(options)) {}

L2SP::L2SP(NamedTensors params, L2SPOptions options) : L2SP(one_group(std::move(params)), options) {}

L2SP::L2SP(std::vector<ParamGroup> groups, L2SPOptions options)
    : Adam(std::move(groups), checked(options).adam, options.alpha, options.beta), opt_(options) {}

MarsSP::MarsSP(NamedTensors params, MarsSPOptions options) : MarsSP(one_group(std::move(params)), options) {}

MarsSP::MarsSP(std::vector<ParamGroup> groups, MarsSPOptions options)
    : Adam(std::move(groups), checked(options).adam, 0.0, 0.0), opt_(options) {}

void mars_project(Tensor& w, const Tensor& w0, double gamma) {
  SPDLAB_CHECK(w.shape() == w0.shape() && w.device() == w0.device() && w.dim() >= 1, "mars_project: w is ",
               shape_str(w.shape()), " on ", w.device(), " and w0 ", shape_str(w0.shape()), " on ", w0.device(),
               "; expected one shape (at least 1-D) and one device");
  SPDLAB_CHECK(std::isfinite(gamma) && gamma > 0, "mars_project: gamma must be > 0; got ", gamma);
  autograd::NoGradGuard no_grad;
  const Shape rows = {w.shape()[0], w.numel() / std::max<int64_t>(w.shape()[0], 1)};
  const Tensor base = w0.detach().reshape(rows);
  const Tensor d = w.detach().reshape(rows) - base;
  // max(1, n_j / gamma) for every row j: the factor each row's distance is divided by.
  const Tensor over = maximum(sum(abs(d), {1}, true) * (1.0 / gamma), Tensor::ones({1}, w.dtype(), w.device()));
  w.copy_((base + d / over).reshape(w.shape()));
}

void MarsSP::finish_step(const std::vector<Work>& work, const std::vector<Piece>&) {
  for (const Work& w : work) {
    Param& p = *w.param;
    if (p.anchor.defined() && (p.value.dim() == 2 || p.value.dim() == 4)) mars_project(p.value, p.anchor, opt_.gamma);
  }
}

}  // namespace spdlab::optim
