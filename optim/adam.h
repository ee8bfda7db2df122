// Adam (coupled weight decay and AMSGrad as in torch.optim.Adam), AdamW (decoupled decay, applied first:
// p *= 1 - lr wd), L2-SP (Li et al. 2018: g += alpha (w - w0) on anchored tensors, g += beta w on the
// others, then Adam) and MARS-SP (Gouk et al. 2021: Adam, then each layer projected back into a MARS-norm ball
// around w0). Each Adam step is one fused kernel pass per tensor; SPD is in spd.h.
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

struct MarsSPOptions {
  AdamOptions adam = {};  // weight_decay must stay 0: the constraint is MARS-SP's only regularizer
  double gamma = 1.0;     // the ball's radius: every row's L1 distance from its anchor stays <= gamma
};

// MARS-SP: a plain Adam step, then every anchored layer weight (2-D [out, in] or 4-D [out, in, kh, kw]) projected
// into {W : ||W - W0||_MARS <= gamma}, where the MARS norm is the maximum absolute row sum (the infinity operator
// norm). As in the authors' projected-gradient method, each output row j whose L1 distance n_j = sum |W_j - W0_j|
// exceeds gamma is scaled back: W_j = W0_j + (W_j - W0_j) / max(1, n_j / gamma). 1-D tensors (biases, norms),
// tokens and unanchored tensors are unconstrained.
class MarsSP : public Adam {
 public:
  MarsSP(NamedTensors params, MarsSPOptions options);
  MarsSP(std::vector<ParamGroup> groups, MarsSPOptions options);
  std::string kind() const override { return "mars_sp"; }
  const MarsSPOptions& options() const { return opt_; }

 protected:
  void finish_step(const std::vector<Work>& work, const std::vector<Piece>& pieces) override;

 private:
  MarsSPOptions opt_;
};

// MARS-SP's projection of one tensor, in place: w viewed as [rows = w.shape(0), the rest], each row scaled
// towards w0 until its L1 distance is at most gamma. w and w0 have one shape and device.
void mars_project(Tensor& w, const Tensor& w0, double gamma);

// Shared by Adam, L2-SP and SPD: validates the options; `who` names the options struct in errors.
const AdamOptions& check_adam_options(const AdamOptions& o, const char* who);
// The kernel's hyperparameters for a tensor at its `step`-th update (1-based).
kernels::AdamStep adam_step_params(const AdamOptions& o, double lr, double weight_decay, int64_t step);

}  // namespace spdlab::optim
