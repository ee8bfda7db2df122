// SGD: option checks and the one fused kernel call per tensor.
#include "optim/sgd.h"

#include <cmath>

#include "kernels/kernels.h"

namespace spdlab::optim {

namespace {
const SGDOptions& checked(const SGDOptions& o) {
  SPDLAB_CHECK(std::isfinite(o.lr) && o.lr >= 0, "SGDOptions: lr must be >= 0; got ", o.lr);
  SPDLAB_CHECK(std::isfinite(o.momentum) && o.momentum >= 0, "SGDOptions: momentum must be >= 0; got ", o.momentum);
  SPDLAB_CHECK(std::isfinite(o.dampening) && o.dampening >= 0 && o.dampening <= 1,
               "SGDOptions: dampening must be in [0, 1]; got ", o.dampening);
  SPDLAB_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "SGDOptions: weight_decay must be >= 0; got ",
               o.weight_decay);
  SPDLAB_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
               "SGDOptions: nesterov needs momentum > 0 and dampening 0; got momentum ", o.momentum, ", dampening ",
               o.dampening);
  return o;
}
}  // namespace

SGD::SGD(NamedTensors params, SGDOptions options) : SGD(one_group(std::move(params)), options) {}

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions options)
    : Optimizer(std::move(groups), checked(options).lr, options.weight_decay, false), opt_(options) {}

std::vector<std::string> SGD::slot_names() const {
  if (opt_.momentum == 0) return {};
  return {"momentum_buffer"};
}

void SGD::update(const Work& w, int64_t begin, int64_t end, size_t) {
  Param& p = *w.param;
  float* buf = p.slots.empty() ? nullptr : p.slots[0].data<float>() + begin;
  kernels::get(p.value.device())
      .sgd_step(p.value.data<float>() + begin, w.grad.data<float>() + begin, buf, end - begin, float(w.lr),
                float(opt_.momentum), float(opt_.dampening), float(w.decay), opt_.nesterov, p.step == 1);
}

}  // namespace spdlab::optim
