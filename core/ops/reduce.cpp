// Reductions over any set of axes (sum, mean, max, var, argmax), with keepdim like PyTorch.
// The kernel sees x as [outer, r, inner]; axes that are not one contiguous block are permuted to the end first.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/ops/common.h"

namespace spdlab {
using namespace ops_detail;
using autograd::Grads;

namespace {

struct ReducePlan {
  std::vector<int64_t> axes;  // sorted, unique
  Shape keep_shape;           // with 1s at reduced axes
  Shape out_shape;            // as returned (keepdim or not)
  Tensor src;                 // contiguous tensor the kernel reads
  int64_t outer = 1, r = 1, inner = 1;
  std::vector<int64_t> perm;  // empty when src is x itself
};

ReducePlan plan_reduce(const Tensor& x, const std::vector<int64_t>& axes_in, bool keepdim, const char* op) {
  ReducePlan p;
  int64_t nd = x.dim();
  for (int64_t a : axes_in) p.axes.push_back(wrap_axis(a, nd, op));
  if (axes_in.empty())
    for (int64_t a = 0; a < nd; ++a) p.axes.push_back(a);
  std::sort(p.axes.begin(), p.axes.end());
  SPDLAB_CHECK(std::adjacent_find(p.axes.begin(), p.axes.end()) == p.axes.end(), op, ": an axis appears twice");
  std::vector<bool> red(nd, false);
  for (int64_t a : p.axes) red[a] = true;
  for (int64_t d = 0; d < nd; ++d) {
    p.keep_shape.push_back(red[d] ? 1 : x.shape()[d]);
    if (!red[d] || keepdim) p.out_shape.push_back(red[d] ? 1 : x.shape()[d]);
  }
  bool block = p.axes.empty() || p.axes.back() - p.axes.front() + 1 == static_cast<int64_t>(p.axes.size());
  if (block && x.is_contiguous()) {
    p.src = x;
    int64_t a0 = p.axes.empty() ? nd : p.axes.front(), a1 = p.axes.empty() ? nd - 1 : p.axes.back();
    for (int64_t d = 0; d < nd; ++d) {
      if (d < a0) p.outer *= x.shape()[d];
      else if (d <= a1) p.r *= x.shape()[d];
      else p.inner *= x.shape()[d];
    }
  } else {
    for (int64_t d = 0; d < nd; ++d)
      if (!red[d]) p.perm.push_back(d);
    for (int64_t a : p.axes) p.perm.push_back(a);
    p.src = x.detach().permute(p.perm).contiguous();
    for (int64_t d = 0; d < nd; ++d) (red[d] ? p.r : p.outer) *= x.shape()[d];
  }
  return p;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  check_float(x, "sum");
  ReducePlan p = plan_reduce(x.detach(), axes, keepdim, "sum");
  Tensor y = Tensor::empty(p.out_shape, x.dtype(), x.device());
  K(x).reduce(kernels::Reduce::sum, x.dtype(), p.src.raw_data(), y.raw_data(), p.outer, p.r, p.inner, nullptr);
  Shape xs = x.shape(), ks = p.keep_shape;
  return autograd::record("sum", y, {x}, [xs, ks](const Tensor& dy) -> Grads {
    return {dy.reshape(ks).expand(xs).contiguous()};
  });
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  check_float(x, "mean");
  Tensor s = sum(x, axes, keepdim);
  int64_t count = s.numel() == 0 ? 0 : x.numel() / s.numel();
  return mul(s, 1.0 / static_cast<double>(count));
}

Tensor max(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  check_float(x, "max");
  SPDLAB_CHECK(x.numel() > 0, "max: cannot reduce an empty tensor of shape ", shape_str(x.shape()));
  ReducePlan p = plan_reduce(x.detach(), axes, keepdim, "max");
  Tensor y = Tensor::empty(p.out_shape, x.dtype(), x.device());
  Tensor arg = Tensor::empty({p.outer * p.inner}, DType::i64, x.device());
  K(x).reduce(kernels::Reduce::max, x.dtype(), p.src.raw_data(), y.raw_data(), p.outer, p.r, p.inner,
              arg.data<int64_t>());
  Shape xs = x.shape(), ks = p.keep_shape, src_shape = p.src.shape();
  std::vector<int64_t> perm = p.perm;
  int64_t outer = p.outer, r = p.r, inner = p.inner;
  return autograd::record("max", y, {x}, [=](const Tensor& dy_in) -> Grads {
    Tensor dy = dy_in.contiguous();
    Tensor dsrc = Tensor::empty(src_shape, dy.dtype(), dy.device());
    kernels::get(dy.device()).max_bwd(dy.dtype(), dy.raw_data(), arg.data<int64_t>(), dsrc.raw_data(), outer, r,
                                      inner);
    if (perm.empty()) return {dsrc};
    std::vector<int64_t> inv(perm.size());
    for (size_t i = 0; i < perm.size(); ++i) inv[perm[i]] = static_cast<int64_t>(i);
    return {dsrc.permute(inv).contiguous()};
  });
}

Tensor var(const Tensor& x, const std::vector<int64_t>& axes, bool unbiased, bool keepdim) {
  check_float(x, "var");
  Tensor mu = mean(x, axes, true);
  Tensor d = sub(x, mu);
  Tensor s = sum(mul(d, d), axes, keepdim);
  int64_t count = x.numel() / std::max<int64_t>(mu.numel(), 1);
  SPDLAB_CHECK(!unbiased || count > 1, "var: the unbiased variance needs at least 2 elements per reduction, got ",
               count);
  return mul(s, 1.0 / static_cast<double>(unbiased ? count - 1 : count));
}

Tensor argmax(const Tensor& x, int64_t axis) {
  check_float(x, "argmax");
  ReducePlan p = plan_reduce(x.detach(), {axis}, false, "argmax");
  Tensor y = Tensor::empty(p.out_shape, x.dtype(), x.device());
  Tensor arg = Tensor::empty(p.out_shape, DType::i64, x.device());
  K(x).reduce(kernels::Reduce::max, x.dtype(), p.src.raw_data(), y.raw_data(), p.outer, p.r, p.inner,
              arg.data<int64_t>());
  return arg;
}

bool all_finite(const Tensor& x) {
  if (x.dtype() != DType::f32 && x.dtype() != DType::f64) return true;
  autograd::NoGradGuard ng;
  return std::isfinite(sum(mul(x.detach(), 0.0)).item());
}

}  // namespace spdlab
