// The optimizers behind one name: make_optimizer("spd", params, hyperparameters), for command-line tools and
// studies that swap optimizers with one flag. Includes every optimizer header.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "optim/adam.h"
#include "optim/ftp.h"
#include "optim/optimizer.h"
#include "optim/param_groups.h"
#include "optim/schedulers.h"
#include "optim/sgd.h"
#include "optim/spd.h"

namespace spdlab::optim {

// Every optimizer's hyperparameters in one flat struct; each kind reads the ones it has.
struct Hyperparams {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // adam, adamw, l2sp, spd
  double weight_decay = 0;  // coupled (sgd, adam, l2sp), decoupled (adamw); spd has none and rejects it
  double lambda = 1.0;      // spd: the projection strength, SPD's only decay
  double momentum = 0, dampening = 0;             // sgd
  bool nesterov = false;                          // sgd
  bool amsgrad = false;                           // adam, adamw, l2sp
  double alpha = 0.1, beta = 0.01;                // l2sp
  double gamma = 1.0;                             // mars_sp: the radius of the MARS-norm ball around w0
  double kappa = 1.0;                             // ftp: the annealing of the radii's positive gradients
};

const std::vector<std::string>& optimizer_kinds();  // sgd, adam, adamw, l2sp, spd, mars_sp, ftp
// An unknown kind is an Error listing the valid names.
std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, std::vector<ParamGroup> groups, const Hyperparams& h);
std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, NamedTensors params, const Hyperparams& h);

}  // namespace spdlab::optim
