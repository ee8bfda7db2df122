// SPD, Selective Projection Decay (Tian, Huang, Kira, NeurIPS 2024), on top of Adam, per tensor:
//   w~ = the plain Adam update of w (no weight decay); c = -<g, w - w0> (g this step's gradient, w before the step);
//   if c < 0: r = clamp((||w~ - w0|| - ||w - w0||) / ||w~ - w0||, 0, 1) and w = w~ - lambda r (w~ - w0); else w = w~.
// lambda is SPD's only decay (a group's decay_scale scales it). Without an anchor w0 = 0. Adam's moments never
// see the projection.
#pragma once
#include "optim/adam.h"

namespace spdlab::optim {

struct SPDOptions {
  AdamOptions adam = {};     // weight_decay must stay 0, and amsgrad/decoupled off: lambda is SPD's only decay
  double lambda = 1.0;  // times each group's decay_scale
};

// Per-tensor diagnostics, for a study's report (Optimizer::stats()): the same struct under SPD's name.
using SpdTensorStats = TensorStats;

class SPD : public Optimizer {
 public:
  SPD(NamedTensors params, SPDOptions options);
  SPD(std::vector<ParamGroup> groups, SPDOptions options);
  ~SPD() override;
  std::string kind() const override { return "spd"; }
  const SPDOptions& options() const { return opt_; }
  const std::vector<SpdTensorStats>& stats() const override { return stats_; }

 protected:
  std::vector<std::string> slot_names() const override;
  void update(const Work& w, int64_t begin, int64_t end, size_t piece) override;
  void start_step(const std::vector<Work>& work, const std::vector<Piece>& pieces) override;
  void finish_step(const std::vector<Work>& work, const std::vector<Piece>& pieces) override;
  void save_extra(NamedTensors& out) const override;
  void check_extra(const std::map<std::string, Tensor>& state, std::vector<std::string>& problems,
                   std::vector<std::string>& consumed) const override;
  void load_extra(const std::map<std::string, Tensor>& state) override;

 private:
  SPDOptions opt_;
  std::vector<SpdTensorStats> stats_;  // parallel to params_
  std::vector<kernels::SpdSums> sums_;  // one per piece of the current step (at least)
  void wait_for_sums();  // synchronize() every device that holds a parameter
};

}  // namespace spdlab::optim
