// Helpers shared by the study's commands (study.cpp, compare.cpp).
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "data/domains.h"
#include "data/loader.h"
#include "models/vit.h"
#include "optim/optim.h"

namespace spdlab::cli {

std::string command_line(int argc, char** argv);
std::pair<int64_t, int64_t> parse_range(const std::string& flag, const std::string& s, int64_t n);
std::vector<data::Domain> parse_domains(const std::vector<std::string>& names);
// Fails with the list of valid names, before any data is loaded.
void check_optimizer_name(const std::string& kind);
// The regularizers' flags, defined once for finetune and compare: --wd (AdamW's decoupled decay, SGD's coupled
// one), --lambda (SPD's projection strength), --alpha and --beta (L2-SP), and the Hyperparams they make for `kind`.
std::vector<struct Flag> regularizer_flags();
class Args;
optim::Hyperparams regularizer_hyperparams(const std::string& kind, double lr, const Args& a);
// Maps the study's flags onto one optimizer's hyperparameters: wd for adamw/sgd, lambda for spd, alpha/beta for
// l2sp; plain adam gets no decay.
optim::Hyperparams hyperparams_for(const std::string& kind, double lr, double wd, double lambda, double alpha,
                                   double beta);

// The model a checkpoint would build, from its header alone (a head-less tower is described with one class), so
// that data can be loaded at its input size before the model with the right head is.
models::ModelInfo probe_model(const std::string& path, const models::ModelSpec& spec);
// --augment for a user's own training images: "rrc" (timm's random resized crop and flip) or "none".
data::SampleTransform augment_transform_for(const std::string& name);
// The class names a fine-tuned checkpoint was trained on (metadata spdlab.classes), or none.
std::vector<std::string> checkpoint_classes(const std::string& path);
// A checkpoint fine-tuned by spdlab knows its classes' order: when `d` has the same class names, it is relabeled
// to that order, so the checkpoint's head keeps its meaning (sorted folder names need not match it).
void align_to_checkpoint(data::Dataset& d, const std::string& checkpoint, const std::string& what);
// `meta` plus spdlab.classes (a JSON array) when the data names its classes.
std::map<std::string, std::string> with_classes(std::map<std::string, std::string> meta, const data::Dataset& d);

}  // namespace spdlab::cli
