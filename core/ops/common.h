// Helpers shared by the op files: input checks and broadcasting. Not part of the public API.
#pragma once
#include "core/autograd.h"
#include "core/ops.h"
#include "kernels/kernels.h"

namespace spdlab::ops_detail {

inline void check_float(const Tensor& t, const char* op, const char* what = "input") {
  SPDLAB_CHECK(t.defined(), op, ": ", what, " is an undefined tensor");
  SPDLAB_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, op, ": expected ", what,
               " to be f32 or f64, got ", t.dtype(), " with shape ", shape_str(t.shape()));
}

inline void check_same(const Tensor& a, const Tensor& b, const char* op) {
  SPDLAB_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch: ", a.dtype(), " ", shape_str(a.shape()), " vs ",
               b.dtype(), " ", shape_str(b.shape()));
  SPDLAB_CHECK(a.device() == b.device(), op, ": device mismatch: ", a.device(), " vs ", b.device());
}

inline int64_t wrap_axis(int64_t axis, int64_t ndim, const char* op) {
  int64_t w = axis < 0 ? axis + ndim : axis;
  SPDLAB_CHECK(w >= 0 && w < std::max<int64_t>(ndim, 1), op, ": axis ", axis, " is out of range for a tensor with ",
               ndim, " dims");
  return w;
}

inline Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    SPDLAB_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
                 " cannot be broadcast (dim ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Strides of t seen as `shape` (t broadcast to it): 0 where t is broadcast.
inline Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  Shape st(shape.size(), 0);
  size_t lead = shape.size() - t.shape().size();
  for (size_t i = 0; i < t.shape().size(); ++i)
    st[lead + i] = t.shape()[i] == 1 ? 0 : t.strides()[i];
  return st;
}

inline kernels::Kernels& K(const Tensor& t) { return kernels::get(t.device()); }

// Forward and backward halves shared by the fused ops (linear in matmul.cpp, layer_norm in nn.cpp).

// The checks of linear(x, w, bias) under the name `op`; returns the bias made contiguous (or undefined).
Tensor check_linear(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias);
// y [rows, N] = pro(x) [rows, K] w^T (+ bias) (+ residual), for contiguous x and w; `x_pro` (a GELU, say) is
// applied to x as the product reads it, never written out; a residual (contiguous, y's shape) is added in the
// product's epilogue.
Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias,
                      const kernels::Kernels::Prologue& x_pro = {}, const Tensor& residual = Tensor());
// The checks of linear's residual against the output shape of x [..., K] w[N, K]^T; returns it contiguous (or
// undefined).
Tensor check_residual(const char* op, const Tensor& x, const Tensor& w, const Tensor& residual);
// {dx, dw, db} of y = pro(x) w^T + b, each only where asked for (undefined otherwise). dw = dy^T pro(x) applies the
// same prologue; with `dx_gelu_of` defined, dx = (dy w) * gelu'(dx_gelu_of) (the gradient through a GELU before
// the product) in the product's epilogue.
std::vector<Tensor> linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, bool nx, bool nw, bool nb,
                                    const kernels::Kernels::Prologue& x_pro = {},
                                    const Tensor& dx_gelu_of = Tensor());

// The checks of layer_norm(x, weight, bias, eps) under the name `op`.
void check_layer_norm(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);
// Normalizes the last axis of contiguous x; mean and rstd (f64, one per row) are allocated and filled.
Tensor layer_norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps, Tensor& mean, Tensor& rstd);
// {dx, dw, db} of layer_norm from the saved x, mean and rstd; dw and db only where asked for.
std::vector<Tensor> layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean,
                                        const Tensor& rstd, bool nw, bool nb);

}  // namespace spdlab::ops_detail
