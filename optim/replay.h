// Gradient-trace replay: apply a recorded sequence of gradients through any optimizer, so two implementations
// (spdlab and PyTorch, or two spdlab builds) can be compared tensor by tensor. `spdlab replay` is the tool.
// A trace holds param.<name> (start values, and the anchors unless anchor.<name> tensors are present) and
// grad.<t>.<name> for t = 0..T-1; other tensors (results stored beside a trace) are ignored.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "optim/optim.h"

namespace spdlab::optim {

struct Trace {
  std::vector<std::string> names;  // sorted; the order the optimizer sees them
  std::map<std::string, Tensor> start, anchors;
  std::vector<std::map<std::string, Tensor>> grads;  // grads[t][name]
};

// Reads and validates a trace; a missing gradient for a step, a shape mismatch, an anchor or gradient without
// its param.<name>, a non-floating tensor, or no steps at all is an Error naming the tensors.
Trace load_trace(const std::string& path);

struct ReplayOptions {
  bool use_anchors = true;              // false: no tensor has an anchor (SPD uses w0 = 0, L2-SP beta w)
  std::vector<std::string> unanchored;  // glob patterns ('head.*') of tensors that get no anchor
  bool every_step = false;              // also return step.<t>.<name> after each step
  Device device = Device::cpu;          // where the parameters, gradients and optimizer state live
};

struct ReplayResult {
  NamedTensors tensors;                  // param.<name> after the last step, then step.<t>.<name>
  std::vector<SpdTensorStats> spd_stats;  // SPD only
};

// Applies the T steps with a constant lr. Anchors matter only to the kinds that use them (l2sp, spd, mars_sp, ftp).
ReplayResult replay(const Trace& trace, const std::string& kind, const Hyperparams& h, const ReplayOptions& o);

}  // namespace spdlab::optim
