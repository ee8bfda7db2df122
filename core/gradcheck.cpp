// gradcheck: analytic gradients from autograd against float64 central differences.
#include <cmath>
#include <sstream>

#include "core/autograd.h"
#include "core/ops.h"
#include "kernels/kernels.h"

namespace spdlab {

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs_in, double eps, double atol, double rtol) {
  std::vector<Tensor> inputs;
  for (const Tensor& t : inputs_in) {
    if (t.dtype() == DType::i64) {
      inputs.push_back(t);
      continue;
    }
    SPDLAB_CHECK(t.dtype() == DType::f64, "gradcheck: floating inputs must be f64 for central differences, got ",
                 t.dtype(), " ", shape_str(t.shape()));
    Tensor c = t.detach().clone();
    c.requires_grad_(true);
    inputs.push_back(c);
  }
  Tensor out = fn(inputs);
  Generator gen(1234);
  Tensor r = Tensor::randn(out.shape(), gen, DType::f64).to(out.device());
  sum(mul(out, r)).backward();

  auto objective = [&]() {
    autograd::NoGradGuard ng;
    return sum(mul(fn(inputs), r)).item();
  };
  GradcheckResult res;
  double worst_excess = -1;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor& x = inputs[i];
    if (x.dtype() != DType::f64) continue;
    Tensor g = x.grad().defined() ? x.grad().detach().cpu() : Tensor();
    // Elements are perturbed in place through the device's copy (on the CPU a plain store).
    kernels::Kernels& k = kernels::get(x.device());
    double* p = x.data<double>();
    Tensor xh = x.detach().cpu();
    auto set = [&](int64_t j, double v) { k.copy_from_host(p + j, &v, sizeof v); };
    for (int64_t j = 0; j < x.numel(); ++j) {
      double orig = xh.data<double>()[j];
      set(j, orig + eps);
      double fp = objective();
      set(j, orig - eps);
      double fm = objective();
      set(j, orig);
      double numeric = (fp - fm) / (2 * eps);
      double analytic = g.defined() ? g.data<double>()[j] : 0.0;
      double err = std::abs(analytic - numeric);
      double rel = err / std::max(std::abs(numeric), 1e-12);
      res.max_abs_err = std::max(res.max_abs_err, err);
      res.max_rel_err = std::max(res.max_rel_err, std::min(rel, err));
      double excess = err - (atol + rtol * std::abs(numeric));
      if (excess > worst_excess) {
        worst_excess = excess;
        std::ostringstream os;
        os.precision(12);
        os << "input " << i << ", element " << j << ": analytic " << analytic << ", numeric " << numeric;
        res.worst = os.str();
      }
      if (excess > 0) res.ok = false;
    }
  }
  return res;
}

}  // namespace spdlab
