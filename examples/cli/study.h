// Helpers shared by the study's commands (study.cpp, compare.cpp).
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "data/domains.h"
#include "data/loader.h"
#include "models/vit.h"
#include "nn/lora.h"
#include "optim/optim.h"

namespace spdlab::cli {

std::string command_line(int argc, char** argv);
std::pair<int64_t, int64_t> parse_range(const std::string& flag, const std::string& s, int64_t n);
std::vector<data::Domain> parse_domains(const std::vector<std::string>& names);
// Fails with the list of valid names, before any data is loaded.
void check_optimizer_name(const std::string& kind);

// The study's methods (compare --optims): an optimizer on every tensor (sgd, adam, adamw, l2sp, spd, mars_sp, ftp),
// or a choice of what trains, with AdamW: lp (linear probing: the head alone), bitfit (biases and the head), llrd
// (layer-wise lr decay), lpft (lp, then adamw on every tensor from the probed head; Kumar et al. 2022), lora
// (LoRA adapters and the head); and lora_spd, the adapters and the head with SPD in its PEFT mode.
struct Method {
  std::string optim;           // the optimizer
  std::string params = "all";  // TrainOptions::params
  bool probe_first = false;    // LP-FT: a linear-probing run before the fine-tuning one
};
const std::vector<std::string>& method_names();
// The colour a method (or "pretrained") has in every plot of a study.
std::string method_color(const std::string& name);
Method method_named(const std::string& name);  // an unknown name is an error listing the methods
// The regularizers' flags (and LoRA's shape), defined once for finetune and compare, and their values: each
// optimizer reads its own.
std::vector<struct Flag> regularizer_flags();
struct Regularizers {
  double wd = 0.05;      // --wd: AdamW's decoupled weight decay, SGD's coupled one (plain adam: none)
  double lambda = 1.0;   // --lambda: SPD's projection strength
  double alpha = 0.1;    // --alpha: L2-SP's pull towards the pre-trained weights
  double beta = 0.01;    // --beta: L2-SP's decay of tensors without an anchor
  double gamma = 1.0;    // --gamma: MARS-SP's radius
  double layer_decay = 0.75;  // --layer-decay: LLRD's factor per block (the llrd method, finetune --params llrd)
  double kappa = 1.0;    // --kappa: FTP's annealing of its radii's positive gradients
  int64_t lora_rank = 8;     // --lora-rank (the lora methods, finetune --params lora)
  double lora_alpha = 8;     // --lora-alpha: the adapters' scale is alpha / rank
};
class Args;
Regularizers regularizers_from(const Args& a);
// One optimizer's hyperparameters: wd for adamw/sgd, lambda for spd, alpha/beta for l2sp, gamma for mars_sp, kappa
// for ftp.
optim::Hyperparams hyperparams_for(const std::string& kind, double lr, const Regularizers& r);

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
// Where a LoRA run's adapters go beside its model file: run.safetensors -> run.lora.safetensors.
std::string adapter_path(const std::string& model_path);
// Writes a LoRA run's adapters and the head trained with them (nn::save_lora), with `meta`.
void save_lora_run(nn::Module& model, const nn::LoRAOptions& o, const std::string& path,
                   const std::map<std::string, std::string>& meta);
// `meta` plus spdlab.classes (a JSON array) when the data names its classes.
std::map<std::string, std::string> with_classes(std::map<std::string, std::string> meta, const data::Dataset& d);

}  // namespace spdlab::cli
