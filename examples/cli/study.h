// Helpers shared by the study's commands (study.cpp, compare.cpp).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "data/domains.h"
#include "optim/optim.h"

namespace spdlab::cli {

std::string command_line(int argc, char** argv);
std::pair<int64_t, int64_t> parse_range(const std::string& flag, const std::string& s, int64_t n);
std::vector<data::Domain> parse_domains(const std::vector<std::string>& names);
// Fails with the list of valid names, before any data is loaded.
void check_optimizer_name(const std::string& kind);
// Maps the study's flags onto one optimizer's hyperparameters: wd for adamw/sgd, lambda for spd, alpha/beta for
// l2sp; plain adam gets no decay.
optim::Hyperparams hyperparams_for(const std::string& kind, double lr, double wd, double lambda, double alpha,
                                   double beta);

}  // namespace spdlab::cli
