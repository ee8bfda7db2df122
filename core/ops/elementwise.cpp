// Elementwise ops with broadcasting: forward and backward side by side.
#include <cmath>

#include "core/ops/common.h"

namespace spdlab {
using namespace ops_detail;
using autograd::Grads;
using autograd::sum_to;
using kernels::Binary;
using kernels::Unary;

namespace {

Tensor binary(Binary op, const char* name, const Tensor& a, const Tensor& b) {
  check_float(a, name, "first operand");
  check_float(b, name, "second operand");
  check_same(a, b, name);
  Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor y = Tensor::empty(shape, a.dtype(), a.device());
  Shape sa = broadcast_strides(a, shape), sb = broadcast_strides(b, shape);
  K(a).binary_fwd(op, a.dtype(), {a.raw_data(), sa.data()}, {b.raw_data(), sb.data()}, y.raw_data(), shape.data(),
                  static_cast<int>(shape.size()));
  if (!autograd::needs_grad({&a, &b})) return y;
  Tensor ad = a.detach(), bd = b.detach();
  Shape as = a.shape(), bs = b.shape();
  return autograd::record(name, y, {a, b}, [op, ad, bd, as, bs](const Tensor& dy) -> Grads {
    switch (op) {
      case Binary::add: return {sum_to(dy, as), sum_to(dy, bs)};
      case Binary::sub: return {sum_to(dy, as), sum_to(neg(dy), bs)};
      case Binary::mul: return {sum_to(mul(dy, bd), as), sum_to(mul(dy, ad), bs)};
      case Binary::div: {
        Tensor da = div(dy, bd);
        return {sum_to(da, as), sum_to(neg(mul(da, div(ad, bd))), bs)};
      }
      case Binary::maximum: {
        // Ties send the gradient to the first operand, as a >= b ? a : b does in the forward.
        Tensor diff = sub(ad, bd).contiguous().cpu();
        Tensor mask_a = Tensor::empty(diff.shape(), dy.dtype());
        for (int64_t i = 0, n = diff.numel(); i < n; ++i) {
          bool a_wins = diff.at(i) >= 0;
          if (dy.dtype() == DType::f32) mask_a.data<float>()[i] = a_wins ? 1.f : 0.f;
          else mask_a.data<double>()[i] = a_wins ? 1.0 : 0.0;
        }
        mask_a = mask_a.to(dy.device());
        return {sum_to(mul(dy, mask_a), as), sum_to(mul(dy, rsub(mask_a, 1.0)), bs)};
      }
    }
    return {};
  });
}

Tensor unary(Unary op, const char* name, const Tensor& x_in, double alpha = 0) {
  check_float(x_in, name);
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  K(x).unary_fwd(op, x.dtype(), x.raw_data(), y.raw_data(), x.numel(), alpha);
  if (!autograd::needs_grad({&x})) return y;
  Tensor xd = x.detach(), yd = y.detach();
  return autograd::record(name, y, {x}, [op, xd, yd, alpha](const Tensor& dy_in) -> Grads {
    Tensor dy = dy_in.contiguous(), dx = Tensor::empty_like(xd);
    kernels::get(xd.device()).unary_bwd(op, xd.dtype(), xd.raw_data(), yd.raw_data(), dy.raw_data(), dx.raw_data(),
                                        xd.numel(), alpha);
    return {dx};
  });
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary(Binary::add, "add", a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(Binary::sub, "sub", a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(Binary::mul, "mul", a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(Binary::div, "div", a, b); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary(Binary::maximum, "maximum", a, b); }

Tensor add(const Tensor& a, double s) { return unary(Unary::add_scalar, "add", a, s); }
Tensor sub(const Tensor& a, double s) { return unary(Unary::add_scalar, "sub", a, -s); }
Tensor mul(const Tensor& a, double s) { return unary(Unary::mul_scalar, "mul", a, s); }
Tensor rsub(const Tensor& a, double s) { return unary(Unary::rsub_scalar, "rsub", a, s); }
Tensor pow(const Tensor& a, double e) { return unary(Unary::pow, "pow", a, e); }
Tensor neg(const Tensor& x) { return unary(Unary::neg, "neg", x); }
Tensor exp(const Tensor& x) { return unary(Unary::exp, "exp", x); }
Tensor log(const Tensor& x) { return unary(Unary::log, "log", x); }
Tensor sqrt(const Tensor& x) { return unary(Unary::sqrt, "sqrt", x); }
Tensor rsqrt(const Tensor& x) { return unary(Unary::rsqrt, "rsqrt", x); }
Tensor tanh(const Tensor& x) { return unary(Unary::tanh, "tanh", x); }
Tensor abs(const Tensor& x) { return unary(Unary::abs, "abs", x); }
Tensor relu(const Tensor& x) { return unary(Unary::relu, "relu", x); }
Tensor gelu(const Tensor& x, GeluApprox approx) {
  return approx == GeluApprox::tanh ? unary(Unary::gelu_tanh, "gelu", x) : unary(Unary::gelu, "gelu", x);
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_float(a, "where", "a");
  check_float(b, "where", "b");
  check_same(a, b, "where");
  SPDLAB_CHECK(cond.device() == a.device(), "where: cond is on ", cond.device(), ", values on ", a.device());
  Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor y = Tensor::empty(shape, a.dtype(), a.device());
  Shape sc = broadcast_strides(cond, shape), sa = broadcast_strides(a, shape), sb = broadcast_strides(b, shape);
  K(a).where_fwd(cond.dtype(), {cond.raw_data(), sc.data()}, a.dtype(), {a.raw_data(), sa.data()},
                 {b.raw_data(), sb.data()}, y.raw_data(), shape.data(), static_cast<int>(shape.size()));
  if (!autograd::needs_grad({&a, &b})) return y;
  Tensor cd = cond.detach();
  Shape as = a.shape(), bs = b.shape();
  return autograd::record("where", y, {a, b}, [cd, as, bs](const Tensor& dy) -> Grads {
    Tensor zero = Tensor::zeros({}, dy.dtype(), dy.device());
    return {sum_to(where(cd, dy, zero), as), sum_to(where(cd, zero, dy), bs)};
  });
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  check_float(x, "masked_fill");
  return where(mask, Tensor::full({}, value, x.dtype(), x.device()), x);
}

}  // namespace spdlab
