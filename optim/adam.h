// Adam (coupled weight decay and AMSGrad as in torch.optim.Adam), AdamW (decoupled decay, applied first:
// p *= 1 - lr wd) and L2-SP (Li et al. 2018: g += alpha (w - w0) on anchored tensors, g += beta w on the
// others, then Adam). Each is one fused kernel pass per tensor; SPD is in spd.h.
#pragma once
#include "kernels/kernels.h"
#include "optim/optimizer.h"

namespace spdlab::optim {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
  bool amsgrad = false;
  bool decoupled = false;  // AdamW
};

struct L2SPOptions {
  AdamOptions adam = {};
  double alpha = 0.1;   // pull towards the anchor, for tensors that have one
  double beta = 0.01;   // plain L2, for tensors without an anchor (a new head)
};

class Adam : public Optimizer {
 public:
  Adam(NamedTensors params, AdamOptions options);
  Adam(std::vector<ParamGroup> groups, AdamOptions options);
  std::string kind() const override { return opt_.decoupled ? "adamw" : "adam"; }
  const AdamOptions& options() const { return opt_; }

 protected:
  // For L2-SP: the same pass on g + alpha (w - w0) or g + beta w, with anchors.
  Adam(std::vector<ParamGroup> groups, AdamOptions options, double l2sp_alpha, double l2sp_beta);
  std::vector<std::string> slot_names() const override;
  void update(const Work& w, int64_t begin, int64_t end, size_t piece) override;

 private:
  AdamOptions opt_;
  double l2sp_alpha_ = 0, l2sp_beta_ = 0;
};

// Adam with decoupled weight decay; the options' `decoupled` is set whatever it was.
class AdamW : public Adam {
 public:
  AdamW(NamedTensors params, AdamOptions options);
  AdamW(std::vector<ParamGroup> groups, AdamOptions options);
};

// Without anchors (none captured or set) every tensor takes the beta term.
class L2SP : public Adam {
 public:
  L2SP(NamedTensors params, L2SPOptions options);
  L2SP(std::vector<ParamGroup> groups, L2SPOptions options);
  std::string kind() const override { return "l2sp"; }
  const L2SPOptions& options() const { return opt_; }

 private:
  L2SPOptions opt_;
};

// Shared by Adam, L2-SP and SPD: validates the options; `who` names the options struct in errors.
const AdamOptions& check_adam_options(const AdamOptions& o, const char* who);
// The kernel's hyperparameters for a tensor at its `step`-th update (1-based).
kernels::AdamStep adam_step_params(const AdamOptions& o, double lr, double weight_decay, int64_t step);

}  // namespace spdlab::optim
