// The autograd engine: recording op nodes and running backward in reverse topological order.
#include "core/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "core/ops.h"
#include "kernels/kernels.h"

namespace spdlab::autograd {

namespace {
thread_local bool g_grad_enabled = true;
}

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }

static bool tracks(const Tensor& t) { return t.defined() && (t.requires_grad() || t.grad_fn()); }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && tracks(*t)) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (tracks(t)) return true;
  return false;
}

Tensor record(const char* name, Tensor y, std::vector<Tensor> inputs, BackwardFn fn) {
  if (!needs_grad(inputs)) return y;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs = std::move(inputs);
  node->backward = std::move(fn);
  y.impl()->grad_fn = std::move(node);
  y.impl()->requires_grad = true;
  return y;
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  int64_t lead = g.dim() - static_cast<int64_t>(shape.size());
  SPDLAB_CHECK(lead >= 0, "sum_to: cannot reduce ", shape_str(g.shape()), " to ", shape_str(shape));
  std::vector<int64_t> axes;
  for (int64_t i = 0; i < g.dim(); ++i)
    if (i < lead || (shape[i - lead] == 1 && g.shape()[i] != 1)) axes.push_back(i);
  Tensor r = axes.empty() ? g : sum(g, axes, true);
  return r.reshape(shape);
}

// acc + g, or g itself when acc is empty. Never in place: one gradient tensor can reach several inputs
// (add's backward hands dy to both), so writing into one would change the others.
static void accumulate(Tensor& acc, const Tensor& g) {
  if (!acc.defined()) {
    acc = g.is_contiguous() ? g : g.contiguous();
    return;
  }
  acc = add(acc, g);
}

void run_backward(const Tensor& root, const Tensor& grad_output, bool retain_graph) {
  SPDLAB_CHECK(root.requires_grad(), "backward: the tensor of shape ", shape_str(root.shape()),
               " does not require grad and has no grad_fn; set requires_grad_() on a leaf it depends on");
  SPDLAB_CHECK(grad_output.dtype() == root.dtype(), "backward: gradient dtype ", grad_output.dtype(),
               " does not match the tensor's ", root.dtype());
  NoGradGuard ng;

  if (!root.grad_fn()) {  // backward on a leaf: its gradient is the given one
    Tensor acc = root.grad();
    accumulate(acc, grad_output);
    const_cast<Tensor&>(root).set_grad(acc);
    return;
  }

  // Topological order of the nodes reachable from root (iterative DFS, post-order).
  // `order` owns the nodes: releasing one node's inputs must not free a node still waiting its turn.
  std::vector<std::shared_ptr<Node>> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<std::shared_ptr<Node>, size_t>> stack{{root.grad_fn(), 0}};
  seen.insert(root.grad_fn().get());
  while (!stack.empty()) {
    auto& [node, i] = stack.back();
    SPDLAB_CHECK(!node->released, "backward: the graph through '", node->name,
                 "' was already freed by an earlier backward; pass retain_graph=true to the first call");
    if (i < node->inputs.size()) {
      const Tensor& in = node->inputs[i++];
      if (in.defined() && in.grad_fn() && !seen.count(in.grad_fn().get())) {
        seen.insert(in.grad_fn().get());
        stack.push_back({in.grad_fn(), 0});
      }
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }

  std::unordered_map<Node*, Tensor> pending;
  pending[root.grad_fn().get()] = grad_output;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = it->get();
    auto found = pending.find(node);
    if (found == pending.end()) continue;  // no gradient flows here
    Tensor dy = std::move(found->second);
    pending.erase(found);
    Grads grads = node->backward(dy);
    SPDLAB_CHECK(grads.size() == node->inputs.size(), "backward of '", node->name, "' returned ", grads.size(),
                 " gradients for ", node->inputs.size(), " inputs");
    for (size_t i = 0; i < grads.size(); ++i) {
      const Tensor& in = node->inputs[i];
      const Tensor& g = grads[i];
      if (!in.defined() || !g.defined() || !tracks(in)) continue;
      SPDLAB_CHECK(g.shape() == in.shape(), "backward of '", node->name, "': gradient for input ", i, " has shape ",
                   shape_str(g.shape()), ", expected ", shape_str(in.shape()));
      if (in.grad_fn()) {
        accumulate(pending[in.grad_fn().get()], g);
      } else {
        Tensor acc = in.grad();
        accumulate(acc, g);
        const_cast<Tensor&>(in).set_grad(acc);
      }
    }
    if (!retain_graph) {
      node->released = true;
      node->backward = nullptr;  // frees saved tensors now, not when the graph's last handle dies
      node->inputs.clear();
    }
  }
}

}  // namespace spdlab::autograd
