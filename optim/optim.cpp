// make_optimizer: maps a kind name and the flat Hyperparams onto each optimizer's options struct.
#include "optim/optim.h"

namespace spdlab::optim {

const std::vector<std::string>& optimizer_kinds() {
  static const std::vector<std::string> kinds = {"sgd", "adam", "adamw", "l2sp", "spd", "mars_sp", "ftp"};
  return kinds;
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, std::vector<ParamGroup> groups, const Hyperparams& h) {
  AdamOptions adam{.lr = h.lr, .beta1 = h.beta1, .beta2 = h.beta2, .eps = h.eps, .weight_decay = h.weight_decay,
                   .amsgrad = h.amsgrad};
  if (kind == "sgd")
    return std::make_unique<SGD>(std::move(groups), SGDOptions{.lr = h.lr, .momentum = h.momentum, .dampening = h.dampening,
                                                               .weight_decay = h.weight_decay, .nesterov = h.nesterov});
  if (kind == "adam") return std::make_unique<Adam>(std::move(groups), adam);
  if (kind == "adamw") return std::make_unique<AdamW>(std::move(groups), adam);
  if (kind == "l2sp") return std::make_unique<L2SP>(std::move(groups), L2SPOptions{adam, h.alpha, h.beta});
  if (kind == "mars_sp") {
    SPDLAB_CHECK(h.weight_decay == 0, "make_optimizer: mars_sp has no weight_decay (its one regularizer is the radius "
                                      "gamma); got weight_decay ", h.weight_decay);
    return std::make_unique<MarsSP>(std::move(groups), MarsSPOptions{adam, h.gamma});
  }
  if (kind == "ftp") return std::make_unique<FTP>(std::move(groups), FTPOptions{adam, h.kappa});
  if (kind == "spd") {
    SPDLAB_CHECK(h.weight_decay == 0, "make_optimizer: spd has no weight_decay (its only decay is lambda, "
                                      "Hyperparams::lambda); got weight_decay ", h.weight_decay);
    return std::make_unique<SPD>(std::move(groups), SPDOptions{adam, h.lambda});
  }
  std::string valid;
  for (const std::string& k : optimizer_kinds()) valid += (valid.empty() ? "" : ", ") + k;
  SPDLAB_FAIL("make_optimizer: unknown optimizer '", kind, "'; valid names: ", valid);
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, NamedTensors params, const Hyperparams& h) {
  return make_optimizer(kind, one_group(std::move(params)), h);
}

}  // namespace spdlab::optim
