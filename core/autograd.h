// Reverse-mode autograd: a dynamic tape of Nodes, one per recorded op, walked in topological order.
// Backward closures run with grad mode off (no higher-order gradients). The graph is freed after
// backward unless retain_graph is set; using a freed graph again is an error.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace spdlab::autograd {

using Grads = std::vector<Tensor>;  // one per input; an undefined Tensor means "no gradient"
using BackwardFn = std::function<Grads(const Tensor& dy)>;

struct Node {
  std::string name;
  std::vector<Tensor> inputs;  // the op's inputs, to walk the graph
  BackwardFn backward;
  bool released = false;
};

bool grad_enabled();

// Turns recording off in a scope (evaluation, optimizer steps, backward itself).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// True when an op on these inputs must record its backward.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Attaches `fn` as y's backward when grad mode is on and an input requires grad; returns y.
// Closures must not capture y itself (that would be a cycle); capture y.detach() instead.
Tensor record(const char* name, Tensor y, std::vector<Tensor> inputs, BackwardFn fn);

void run_backward(const Tensor& root, const Tensor& grad_output, bool retain_graph);

// Reduces a broadcast gradient g back to `shape` (sums over broadcast dims).
Tensor sum_to(const Tensor& g, const Shape& shape);

}  // namespace spdlab::autograd
