// The optimizers as a student reads them: Adam (and AdamW) and SPD as plain loops over one tensor's values, in the
// order of the papers' equations, with no fusion, no pieces and no devices. The fast paths (optim/adam.cpp,
// optim/spd.cpp and the kernels' adam_step / spd_adam_pass / spd_project) compute the same steps; the tests
// (tests/test_reference_paths.cpp) check them equal, in float and in double.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "optim/adam.h"
#include "optim/spd.h"

namespace spdlab::optim::reference {

template <typename T>
struct AdamState {
  std::vector<T> m, v;  // first and second moments, zero before the first step
  int64_t t = 0;        // steps taken
};

// One Adam step on w with gradient g (torch.optim.Adam; AdamW when o.decoupled). Not supported here: amsgrad.
template <typename T>
void adam_step(std::vector<T>& w, const std::vector<T>& grad, AdamState<T>& s, const AdamOptions& o) {
  if (s.m.empty()) s.m.assign(w.size(), T(0)), s.v.assign(w.size(), T(0));
  s.t += 1;
  const T lr = T(o.lr), b1 = T(o.beta1), b2 = T(o.beta2), eps = T(o.eps), wd = T(o.weight_decay);
  const T bc1 = T(1) - std::pow(b1, T(s.t)), bc2 = T(1) - std::pow(b2, T(s.t));  // bias corrections
  for (size_t i = 0; i < w.size(); ++i) {
    T g = grad[i];
    if (o.decoupled) w[i] *= T(1) - lr * wd;  // AdamW: decay the weight itself
    else g += wd * w[i];                      // Adam: decay through the gradient (L2)
    s.m[i] = b1 * s.m[i] + (T(1) - b1) * g;
    s.v[i] = b2 * s.v[i] + (T(1) - b2) * g * g;
    w[i] -= lr * (s.m[i] / bc1) / (std::sqrt(s.v[i]) / std::sqrt(bc2) + eps);
  }
}

// What one SPD step decided for a tensor.
struct SpdStep {
  double c = 0;        // -<g, w - w0>: negative when the loss reduction disagrees with the move away from w0
  bool fired = false;  // c < 0
  double r = 0;        // the projection ratio, 0 when it did not fire
};

// One SPD step (Tian, Huang and Kira 2024, Algorithm 1) on w with gradient g and anchor w0 (the pre-trained values):
//   1. c = -<g, w - w0>, with w before the step;
//   2. w~ = the plain Adam update of w (no weight decay);
//   3. if c < 0: r = clamp((||w~ - w0|| - ||w - w0||) / ||w~ - w0||, 0, 1) and w = w~ - lambda r (w~ - w0);
//      else w = w~.
template <typename T>
SpdStep spd_step(std::vector<T>& w, const std::vector<T>& g, const std::vector<T>& w0, AdamState<T>& s,
                 const SPDOptions& o) {
  SpdStep out;
  double old_sq = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    out.c -= double(g[i]) * double(w[i] - w0[i]);
    old_sq += double(w[i] - w0[i]) * double(w[i] - w0[i]);
  }
  AdamOptions plain = o.adam;
  plain.weight_decay = 0;  // SPD's lambda is its only decay
  adam_step(w, g, s, plain);
  double new_sq = 0;
  for (size_t i = 0; i < w.size(); ++i) new_sq += double(w[i] - w0[i]) * double(w[i] - w0[i]);
  out.fired = out.c < 0;
  if (out.fired && new_sq > 0) {
    const double old_norm = std::sqrt(old_sq), new_norm = std::sqrt(new_sq);
    out.r = std::clamp((new_norm - old_norm) / new_norm, 0.0, 1.0);
    const T scale = T(o.lambda * out.r);
    for (size_t i = 0; i < w.size(); ++i) w[i] -= scale * (w[i] - w0[i]);
  }
  return out;
}

}  // namespace spdlab::optim::reference
