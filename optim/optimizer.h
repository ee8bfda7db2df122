// The optimizer base: named parameters in groups, per-tensor state, anchors, and state I/O as safetensors.
// Subclasses (sgd.h, adam.h, spd.h) supply the fused kernel call for a slice of a tensor; this file owns the
// rest, including spreading a step over the threads.
// Not a scheduler (schedulers.h) and not a gradient clipper (clip_grad_norm below only rewrites .grad).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace spdlab::optim {

// Parameters by name in a stable order, as Module::named_parameters() yields them.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// A set of parameters with their own learning-rate scale, decay scale and anchor policy.
// The group's lr is the optimizer's lr times lr_scale, so a scheduler's set_lr keeps the groups' ratios
// (layer-wise lr decay is a list of scales). Its decay is the optimizer's decay times decay_scale: the
// optimizer's weight_decay (sgd, adam, adamw, l2sp) or SPD's lambda; 0 exempts the group (timm's biases and norms).
struct ParamGroup {
  NamedTensors params;
  double lr_scale = 1.0;
  double decay_scale = 1.0;
  bool anchored = true;  // false: capture_anchors() leaves these unanchored (a fresh head, LoRA factors)
};

// All parameters in one group with the optimizer's own lr and weight decay.
std::vector<ParamGroup> one_group(NamedTensors params);

// Groups for timm's decay split, linear probing, BitFit and layer-wise lr decay: optim/param_groups.h.

// Per-tensor diagnostics of an optimizer that keeps them (SPD; the others keep none): where SPD's condition fired
// and how far each tensor has moved from its anchor.
struct TensorStats {
  std::string name;
  int64_t steps = 0;      // steps this tensor took (it had a gradient)
  int64_t fired = 0;      // of those, steps where c < 0
  bool fired_last = false;
  double last_r = 0;      // r on the last step that fired and projected
  double r_sum = 0;       // r summed over the steps that fired (mean r = r_sum / fired; 0 where guarded)
  double dev_norm = 0;    // ||w - w0|| after the last step
  // The last step alone, set on every step the tensor took (so never left over from an earlier one):
  double c = 0;           // -<g, w - w0>
  double r = 0;           // the projection ratio applied; 0 when the condition did not fire
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  virtual std::string kind() const = 0;  // "sgd", "adam", "adamw", "l2sp", "spd"
  // Per-tensor diagnostics, in parameter order; empty for optimizers that keep none (all but SPD).
  virtual const std::vector<TensorStats>& stats() const;

  // One update of every tensor that requires grad and has a .grad; the others keep their values and state.
  void step();
  // Drops every parameter's .grad (the next backward allocates fresh ones).
  void zero_grad();

  // The base learning rate; group i runs at lr() * lr_scale(i). Schedulers call set_lr before each step.
  void set_lr(double lr);
  double lr() const { return lr_; }
  int64_t steps() const { return steps_; }  // calls to step()
  size_t num_groups() const { return groups_.size(); }
  double group_lr(size_t group) const;
  double group_decay(size_t group) const;  // weight_decay, or SPD's lambda, times the group's decay_scale
  NamedTensors params() const;

  // Anchors w0 for L2-SP and SPD. capture_anchors copies the current values of every tensor in an anchored
  // group; set_anchors copies the given tensors (any dtype, converted) and leaves every other parameter
  // unanchored; unknown names or mis-shaped tensors are one error. For the other kinds both check their
  // input and keep nothing, so code that swaps optimizers by name can call them for every kind.
  bool uses_anchors() const { return uses_anchors_; }
  void capture_anchors();
  void set_anchors(const std::map<std::string, Tensor>& anchors);
  void clear_anchors();
  NamedTensors anchors() const;

  // Every moment buffer, per-tensor step count, the anchors and the lr, so a run resumes bit-identically.
  // Names: optimizer.<kind> (format marker), steps, lr, step.<param>, <slot>.<param>, anchor.<param>, ...
  // The other hyperparameters (betas, groups' scales and decays) come from the constructor, as from the code.
  NamedTensors state_dict() const;
  // Checks everything first (kind, unknown and missing names, shapes) and reports all problems in one error.
  void load_state_dict(const NamedTensors& state);
  void save_state(const std::string& path) const;  // atomic, via io::save_safetensors
  void load_state(const std::string& path);

 protected:
  struct Group {
    double lr_scale, decay;
    bool anchored;
  };
  struct Param {
    std::string name;
    Tensor value;  // the parameter itself (contiguous f32)
    size_t group = 0;
    int64_t step = 0;  // steps this tensor took, for its bias correction
    Tensor anchor;     // undefined: none
    std::vector<Tensor> slots;  // empty until the first step, then one per slot_names() entry
  };

  // One tensor's update in this step.
  struct Work {
    Param* param;
    Tensor grad;  // contiguous, the parameter's shape
    double lr, decay;  // the group's lr and decay (weight decay, or SPD's lambda)
  };
  // A fixed slice of one tensor. Pieces, not tensors, are spread over the threads, so one parallel region
  // serves a whole step (small tensors cost no region of their own) and a big tensor still splits; fixed
  // boundaries keep reductions independent of the thread count.
  struct Piece {
    size_t work;
    int64_t begin, end;
  };

  // decay: the optimizer's own decay, which each group scales: weight_decay, or SPD's lambda.
  Optimizer(std::vector<ParamGroup> groups, double lr, double decay, bool uses_anchors);

  // The per-tensor state buffers this optimizer keeps (PyTorch's names: exp_avg, momentum_buffer, ...).
  virtual std::vector<std::string> slot_names() const = 0;
  // Updates elements [begin, end) of w.param with one fused kernel call; param->step is already incremented.
  // Runs on any thread, concurrently with other pieces.
  virtual void update(const Work& w, int64_t begin, int64_t end, size_t piece) = 0;
  // Around the pieces of a step (SPD sizes its sums before and projects after).
  virtual void start_step(const std::vector<Work>& work, const std::vector<Piece>& pieces) {}
  virtual void finish_step(const std::vector<Work>& work, const std::vector<Piece>& pieces) {}
  // Runs fn(i) for each piece; threads take contiguous runs of pieces of about equal element counts. Work
  // smaller than one of the backend's pieces stays on the calling thread, so a backend that takes tensors
  // whole (a GPU) is always driven from one thread.
  static void for_each_piece(const std::vector<Work>& work, const std::vector<Piece>& pieces,
                             const std::function<void(size_t)>& fn);
  // Extra per-tensor state (SPD's diagnostics): written and read by name next to the slots.
  virtual void save_extra(NamedTensors& out) const {}
  virtual void check_extra(const std::map<std::string, Tensor>& state, std::vector<std::string>& problems,
                           std::vector<std::string>& consumed) const {}
  virtual void load_extra(const std::map<std::string, Tensor>& state) {}

  std::vector<Param> params_;
  std::vector<Group> groups_;

 private:
  double lr_;
  int64_t steps_ = 0;
  bool uses_anchors_;
};

// Global-norm clipping as torch.nn.utils.clip_grad_norm_: returns the norm of all gradients together and,
// when it exceeds max_norm, replaces each .grad with a scaled copy (never in place: gradients of different
// tensors may share storage). A non-finite norm is returned as is and nothing is scaled.
double clip_grad_norm(const NamedTensors& params, double max_norm);

// The name of the first tensor (or, with `grads`, the first tensor's gradient) that holds NaN or inf, or ""
// when all are finite. One reduction per tensor and a single wait for the device in the common case.
std::string first_nonfinite(const NamedTensors& tensors, bool grads = false);

}  // namespace spdlab::optim
