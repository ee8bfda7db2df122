// SGD with momentum, dampening, Nesterov and coupled weight decay, with torch.optim.SGD's semantics:
// d = g + wd p; buf = momentum buf + (1 - dampening) d (buf = d on a tensor's first step); p -= lr d or buf.
#pragma once
#include "optim/optimizer.h"

namespace spdlab::optim {

struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;
};

class SGD : public Optimizer {
 public:
  SGD(NamedTensors params, SGDOptions options);
  SGD(std::vector<ParamGroup> groups, SGDOptions options);
  std::string kind() const override { return "sgd"; }
  const SGDOptions& options() const { return opt_; }

 protected:
  std::vector<std::string> slot_names() const override;
  void update(const Work& w, int64_t begin, int64_t end, size_t piece) override;

 private:
  SGDOptions opt_;
};

}  // namespace spdlab::optim
