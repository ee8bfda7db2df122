// Lab 2: writing your own op with its backward, and checking it with gradcheck.
//
// softplus(x) = log(1 + exp(x)), whose derivative is sigmoid(x). The forward is a plain loop over the values (any
// float dtype), and autograd::record attaches the backward: given dL/dy, return dL/dx = dL/dy * sigmoid(x).
// gradcheck compares that analytic gradient with central differences (f(x + e) - f(x - e)) / 2e.
//
// Why float64 for the check: the differences lose about half of the digits, so in float32 (7 digits) the
// numeric gradient is only good to about 1e-3 and real bugs hide in the noise; in float64 (16 digits) it is good
// to about 1e-8. So every op accepts f64, the check runs in f64, and the model runs in f32.
//
//   ./build/ex_custom_op
//
// It checks the right backward (passes) and a wrong one (the derivative of exp instead: fails, and says where).
#include <cmath>
#include <cstdio>

#include "core/autograd.h"
#include "core/ops.h"

using namespace spdlab;

// The forward for both float dtypes, on the CPU: one loop. (A real op also has a GPU kernel behind kernels::get.)
template <typename T>
void softplus_forward(const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 20 ? x[i] : std::log1p(std::exp(x[i]));  // no overflow for big x
}

Tensor softplus(const Tensor& x_in, bool wrong_backward = false) {
  SPDLAB_CHECK(x_in.device().is_cpu() && (x_in.dtype() == DType::f32 || x_in.dtype() == DType::f64),
               "softplus: expected an f32 or f64 tensor on the cpu, got ", x_in.dtype(), " on ", x_in.device());
  const Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  if (x.dtype() == DType::f64) softplus_forward(x.data<double>(), y.data<double>(), x.numel());
  else softplus_forward(x.data<float>(), y.data<float>(), x.numel());
  const Tensor xd = x.detach();  // capture inputs detached, never y itself (that would be a cycle)
  return autograd::record("softplus", y, {x}, [xd, wrong_backward](const Tensor& dy) -> autograd::Grads {
    // Backward runs with grad mode off; built from ops, it works for both dtypes and on any device.
    return {wrong_backward ? dy * exp(xd) : dy * sigmoid(xd)};
  });
}

int main() {
  Generator gen(1);
  const Tensor x = Tensor::randn({3, 4}, gen, DType::f64);
  auto fn_right = [](const std::vector<Tensor>& v) { return softplus(v[0]); };
  auto fn_wrong = [](const std::vector<Tensor>& v) { return softplus(v[0], true); };
  const GradcheckResult right = gradcheck(fn_right, {x});
  const GradcheckResult wrong = gradcheck(fn_wrong, {x});
  std::printf("softplus, backward = dy * sigmoid(x): %s (max abs error %.2e)\n", right.ok ? "passes" : "FAILS",
              right.max_abs_err);
  std::printf("softplus, backward = dy * exp(x):     %s (%s)\n", wrong.ok ? "passes?!" : "fails, as it should",
              wrong.worst.c_str());
  // The op in float32, inside a model: same code, another dtype.
  Tensor x32 = Tensor::randn({5}, gen).requires_grad_(true);
  softplus(x32).sum().backward();
  std::printf("float32: d/dx sum(softplus(x)) at x[0] = %.6f, sigmoid(x[0]) = %.6f\n", x32.grad().at(0),
              1.0 / (1.0 + std::exp(-x32.detach().at(0))));
  return right.ok && !wrong.ok ? 0 : 1;
}
