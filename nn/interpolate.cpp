// interpolate: the WiSE-FT weight-space ensemble.
#include "nn/interpolate.h"

#include <cmath>
#include <map>

#include "core/autograd.h"
#include "core/ops.h"

namespace spdlab::nn {

NamedTensors interpolate(const NamedTensors& a, const NamedTensors& b, double alpha,
                         const std::vector<std::string>& take_b) {
  SPDLAB_CHECK(std::isfinite(alpha), "interpolate: alpha must be finite; got ", alpha);
  std::map<std::string, Tensor> bmap;
  for (const auto& [name, t] : b) bmap[name] = t;
  std::vector<std::string> problems;
  std::map<std::string, bool> seen;
  for (const auto& [name, ta] : a) {
    seen[name] = true;
    auto it = bmap.find(name);
    if (it == bmap.end()) {
      problems.push_back("'" + name + "' is in the first model only");
      continue;
    }
    const Tensor& tb = it->second;
    if (ta.dtype() == DType::i64)
      problems.push_back("'" + name + "' is i64; only floating-point tensors can be interpolated");
    else if (ta.shape() != tb.shape() || ta.dtype() != tb.dtype() || ta.device() != tb.device())
      problems.push_back(detail::cat("'", name, "' is ", ta.dtype(), " ", shape_str(ta.shape()), " on ", ta.device(),
                                     " in the first model and ", tb.dtype(), " ", shape_str(tb.shape()), " on ",
                                     tb.device(), " in the second"));
  }
  for (const auto& [name, t] : b)
    if (!seen.count(name)) problems.push_back("'" + name + "' is in the second model only");
  if (!problems.empty()) {
    std::string msg;
    for (size_t i = 0; i < problems.size() && i < 12; ++i) msg += (i ? "; " : "") + problems[i];
    if (problems.size() > 12) msg += "; and " + std::to_string(problems.size() - 12) + " more";
    SPDLAB_FAIL("interpolate: the two models differ: ", msg);
  }

  autograd::NoGradGuard no_grad;
  NamedTensors out;
  out.reserve(a.size());
  for (const auto& [name, ta] : a) {
    const Tensor& tb = bmap.at(name);
    bool from_b = alpha == 1.0;
    for (const auto& p : take_b) from_b = from_b || matches_pattern(name, p);
    if (from_b || alpha == 0.0) {
      out.emplace_back(name, (from_b ? tb : ta).detach().clone());  // the endpoints exactly
      continue;
    }
    out.emplace_back(name, ta.detach() * (1.0 - alpha) + tb.detach() * alpha);
  }
  return out;
}

}  // namespace spdlab::nn
