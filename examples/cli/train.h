// Training and evaluation loops shared by the pretrain, finetune, eval and compare commands:
// progress on stderr, metrics as JSON lines, and the per-layer measures the study reports.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/loader.h"
#include "models/vit.h"
#include "nn/lora.h"
#include "optim/optim.h"

namespace spdlab::cli {

class RunDir;

// A progress bar on a terminal, plain periodic lines otherwise (logs, CI). Shows step, loss, images/s, ETA.
class Progress {
 public:
  Progress(std::string label, int64_t total_steps);
  void update(int64_t step, double loss, int64_t images_done);  // loss < 0: not shown
  void finish();

 private:
  std::string label_;
  int64_t total_;
  double start_, last_print_ = -1;
  bool tty_;
};

double now_seconds();

struct TrainOptions {
  std::string optim = "adamw";
  optim::Hyperparams hp;
  // Which tensors train (optim/param_groups.h): "all"; "head" (linear probing); "bitfit" (biases and the head);
  // "llrd" (all, with layer-wise lr decay `layer_decay`); "lora" (LoRA adapters of rank `lora_rank` on every
  // block's qkv, proj, fc1 and fc2, and the head: train() attaches them, seeded by `seed`, where the model has
  // none, and leaves them attached and unmerged). The others are frozen for the run and unfrozen after.
  // Every trained tensor gets the optimizer's decay, as in the study's protocol.
  std::string params = "all";
  double layer_decay = 0.75;
  int64_t lora_rank = 8;
  double lora_alpha = 8;
  int64_t epochs = 1, batch_size = 64;
  double warmup_frac = 0.05;  // linear warmup, then cosine to 0
  double clip = 0;            // global grad-norm clip; 0 = off
  uint64_t seed = 0;
  bool anchor_to_init = true;  // L2-SP and SPD anchor every tensor at the initial (pre-trained) values
  std::string metrics_path;    // JSON lines, one per step, written (atomically) when the run ends; empty = none
  std::string label = "train";
  // Interruption and resume (run_state.h). With a run directory, every `checkpoint_every` steps (0: only when
  // SIGINT/SIGTERM stops the run) the model, the optimizer's state, the step, the data position, the dropout
  // generator and the metrics so far go to run->file("state.safetensors"); with `resume`, training continues
  // from there and ends with the same bits as an uninterrupted run (on the CPU).
  RunDir* run = nullptr;
  int64_t checkpoint_every = 0;
  bool resume = false;
};

struct TrainResult {
  double seconds = 0, final_loss = 0;
  int64_t steps = 0;
  int64_t resumed_at = 0;  // the step a resumed run continued from (0: from the start)
  std::vector<optim::SpdTensorStats> spd_stats;  // empty unless optim == spd
};

// The adapters train() attaches for params "lora".
nn::LoRAOptions lora_options(const TrainOptions& opt);
// The parameter groups TrainOptions::params names; check_params_name fails on an unknown name, listing them.
void check_params_name(const std::string& params);
std::vector<optim::ParamGroup> training_groups(const optim::NamedTensors& named, const std::string& params,
                                               double layer_decay);

// Trains in place. `transform` maps each stored image to its training domain(s).
TrainResult train(models::VisionTransformer& model, const data::Dataset& train_set, data::SampleTransform transform,
                  const TrainOptions& opt);

struct Flag;
class Args;

// The flags that say how to read a checkpoint without spdlab metadata (--arch, --num-heads, --num-classes, --act,
// --mean, --std), and the ModelSpec they make. Commands that load a model print the ModelInfo's notes (what was
// read from shapes, assumed or replaced), so nothing about an architecture is guessed silently.
std::vector<Flag> model_flags();
models::ModelSpec model_spec(const Args& a);
void print_model_info(const std::string& command, const std::string& path, const models::ModelInfo& info);
// --device, for every command that runs a model; apply_device reads it (cpu, cuda, cuda:N) and checks that
// the device exists before any work, with an error that names the flag.
Flag device_flag();
Device apply_device(const Args& a);

// Accuracy on `test`, each image passed through `transform` (none: as stored; the transform's seeds come from
// `seed`), in eval mode without grad. Batches of kEvalBatch.
constexpr int64_t kEvalBatch = 500;
double evaluate(models::VisionTransformer& model, const data::Dataset& test, data::SampleTransform transform,
                uint64_t seed, Progress* progress = nullptr, int64_t* progress_step = nullptr);
// Accuracy on `test` seen in `domain` (the domain's noise drawn from `seed`).
double evaluate(models::VisionTransformer& model, const data::Dataset& test, data::Domain domain, uint64_t seed,
                Progress* progress = nullptr, int64_t* progress_step = nullptr);

// ||theta - theta0|| per named tensor, and the layer a tensor belongs to ("blocks.3", "patch_embed", "head", ...).
std::vector<std::pair<std::string, double>> deviation_per_tensor(const models::VisionTransformer& model,
                                                                 const models::VisionTransformer& init);
std::string layer_of(const std::string& tensor_name);

// The directory a file goes into: its parent, or "." for a bare file name.
std::string dir_of(const std::string& file);
// Ensures the directory exists and is writable, with an error naming it otherwise.
void ensure_writable_dir(const std::string& dir);
// Checks, creating nothing, that `dir` is a writable directory or could be made as one (its nearest existing
// ancestor is a writable directory).
void check_out_dir(const std::string& dir);
// Writes text atomically (temp file and rename) with an error naming the path. With several ranks (mpirun),
// rank 0 writes and every rank waits until it has.
void write_text_atomic(const std::string& path, const std::string& text);
// Only rank 0 writes outputs: `write` runs there, then every rank waits for it (a barrier), so a rank that reads
// the file next finds it. Every rank must reach the same calls in the same order. `what` names the output.
void on_root(const std::string& what, const std::function<void()>& write);

}  // namespace spdlab::cli
