// FTP, Fast Trainable Projection (Tian, Dai, Kira et al., NeurIPS 2023): Adam, then each anchored tensor projected
// into a ball around its pre-trained weights whose radius gamma is itself learned, one radius per tensor, by a
// small Adam of its own on the gradient the next step brings. SPD (spd.h) is the same authors' later method.
#pragma once
#include "optim/adam.h"

namespace spdlab::optim {

struct FTPOptions {
  AdamOptions adam = {};  // the weights' own Adam; weight_decay is decoupled (AdamW's), 0 by default
  double kappa = 1.0;     // gradient annealing: a positive gradient of gamma (one that would shrink it) is scaled by
                          // kappa in [0, 1]; 1 is plain, 0 lets the radii only grow
  double mu = 1e-2;       // the radii's Adam learning rate (the authors' fixed 1e-2; betas 0.9, 0.999, eps 1e-8)
};

// Per anchored tensor W with anchor W0, viewed as rows (its first dimension; a 1-D tensor is one row), each step:
//   1. W~ = the Adam step of W (with decoupled weight decay when set); d = W~ - W0;
//      n_j = sum |d_j| + 1e-8, the L1 (MARS) norm of each row j.
//   2. On the tensor's first step gamma = 1e-8. After that, the radius's gradient is what the current gradient g
//      says about the last projection: dL/dgamma = sum_j <g_j, d'_j> / n'_j, with d' and n' from the previous step;
//      a positive one is multiplied by kappa; gamma takes one Adam step with lr mu on it (bias-corrected by the
//      tensor's step count) and is clipped to [1e-8, max_j n_j].
//   3. W_j = W0_j + min(1, gamma / n_j) d_j.
// Unanchored tensors (a new head) take the Adam step alone. The state adds, per tensor, the previous d (a slot,
// "prev_dev") and gamma, its two moments and the previous 1 / n_j ("ftp.<name>").
// As the authors' code, which this follows: the first step pulls every anchored tensor back to about W0; the
// radius's gradient treats every row as constrained.
class FTP : public Adam {
 public:
  FTP(NamedTensors params, FTPOptions options);
  FTP(std::vector<ParamGroup> groups, FTPOptions options);
  std::string kind() const override { return "ftp"; }
  const FTPOptions& options() const { return opt_; }
  // The radius of every tensor, in parameter order (0 where unanchored or not stepped yet).
  std::vector<double> radii() const;

 protected:
  std::vector<std::string> slot_names() const override;
  void finish_step(const std::vector<Work>& work, const std::vector<Piece>& pieces) override;
  void save_extra(NamedTensors& out) const override;
  void check_extra(const std::map<std::string, Tensor>& state, std::vector<std::string>& problems,
                   std::vector<std::string>& consumed) const override;
  void load_extra(const std::map<std::string, Tensor>& state) override;

 private:
  struct Radius {
    double gamma = 0, m = 0, v = 0;
    std::vector<double> inv_norm;  // 1 / n_j of the previous step; empty before the first
  };
  FTPOptions opt_;
  std::vector<Radius> radius_;  // one per parameter
};

}  // namespace spdlab::optim
