// Weight-space interpolation, the WiSE-FT ensemble (Wortsman et al., CVPR 2022): from a pre-trained model a
// (theta0) and its fine-tuned version b (theta1),
//   theta(alpha) = (1 - alpha) theta0 + alpha theta1,   tensor by tensor,
// so alpha = 0 is a and alpha = 1 is b, bit for bit. Evaluating theta(alpha) for alpha = 0, 0.1, ..., 1 traces
// the curve between the two models' in- and out-of-distribution accuracy.
#pragma once
#include <string>
#include <vector>

#include "nn/module.h"

namespace spdlab::nn {

// a and b must hold the same names with the same shapes and dtypes, on one device (every mismatch is listed in
// one error that names the tensors). Tensors whose name matches a pattern of `take_b` ("head.*": a trailing *
// matches any suffix, as in load_state_dict's ignore list) are b's unchanged for every alpha: WiSE-FT with the
// fine-tuned head. alpha is usually in [0, 1]; any finite value extrapolates. The result is in a's order.
NamedTensors interpolate(const NamedTensors& a, const NamedTensors& b, double alpha,
                         const std::vector<std::string>& take_b = {});

}  // namespace spdlab::nn
