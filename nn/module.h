// Module: named parameters, buffers and sub-modules, so that named_parameters() yields timm's checkpoint
// keys ("blocks.0.attn.qkv.weight") with no mapping table. Modules are held by shared_ptr and never copied.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace spdlab::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  NamedTensors named_parameters() const;  // registration order, depth first: stable across runs
  NamedTensors named_buffers() const;
  std::vector<Tensor> parameters() const;
  NamedTensors state_dict() const;  // parameters then buffers
  int64_t num_parameters() const;

  // Copies tensors into the module by name. Every missing, unexpected and mis-shaped key is reported in one
  // Error. Keys matching an ignore pattern ("head.*": a trailing * matches any suffix) are skipped both ways.
  // strict=false tolerates missing and unexpected keys but never a shape mismatch.
  void load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true,
                       const std::vector<std::string>& ignore = {});

  // Moves every parameter and buffer to `device` (requires_grad kept, gradients dropped). Optimizers must be
  // made after the move: they hold the tensors they update.
  void to(Device device);
  // Every parameter and buffer cast to `dtype` (f32 or f64), keeping requires_grad: a model in float64 for
  // gradient checks and reference comparisons.
  void to(DType dtype);

  // Every module below this one, depth first in registration order, with its dotted name ("blocks.0.attn.qkv").
  std::vector<std::pair<std::string, Module*>> named_modules();

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  // Freezes (false) or unfreezes every parameter below this module.
  void requires_grad_(bool on);
  void zero_grad();

 protected:
  Tensor& register_parameter(const std::string& name, Tensor t);
  Tensor& register_buffer(const std::string& name, Tensor t);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }
  // Drops a registered child, so its parameters leave named_parameters(); false when there is none of that name.
  bool remove_module(const std::string& name);

 private:
  // Every parameter and buffer slot set to convert(its tensor, detached), requires_grad kept; a slot whose
  // conversion returns the tensor it was given is left as it is (to(Device) and to(DType) share this).
  void replace_each(const std::function<Tensor(const Tensor&)>& convert);
  void collect(const std::string& prefix, bool params, NamedTensors& out) const;
  void collect_refs(const std::string& prefix, std::vector<std::pair<std::string, Tensor*>>& out) const;
  // Owned slots: unique_ptr keeps each Tensor at a fixed address as more are registered.
  std::vector<std::pair<std::string, std::unique_ptr<Tensor>>> params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

bool matches_pattern(const std::string& key, const std::string& pattern);

}  // namespace spdlab::nn
