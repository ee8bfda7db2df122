// Products through BLAS gemm: matmul (2-D, batched with broadcast batch dims, 1-D operands) and linear.
// Transposed views are passed to BLAS as transpose flags and leading dimensions, never copied.
#include "core/ops/common.h"

namespace spdlab {
using namespace ops_detail;
using autograd::Grads;

namespace {

// How BLAS can read the last two dims of t as a [rows, cols] matrix without a copy.
struct MatLayout {
  bool ok = false, trans = false;
  int64_t ld = 0;
};

MatLayout mat_layout(const Tensor& t) {
  int64_t nd = t.dim(), rows = t.shape()[nd - 2], cols = t.shape()[nd - 1];
  int64_t sr = t.strides()[nd - 2], sc = t.strides()[nd - 1];
  if ((sc == 1 || cols == 1) && sr >= std::max<int64_t>(cols, 1)) return {true, false, sr};
  if ((sr == 1 || rows == 1) && sc >= std::max<int64_t>(rows, 1)) return {true, true, sc};
  if (rows <= 1 && cols <= 1) return {true, false, 1};
  return {};
}

// The batch dims of t (all but the last two) as one stride, if they collapse to one.
bool batch_stride(const Tensor& t, int64_t* stride) {
  int64_t nb = t.dim() - 2;
  int64_t s = 0;
  bool have = false;
  int64_t expect = 0;
  for (int64_t d = nb - 1; d >= 0; --d) {
    int64_t n = t.shape()[d], st = t.strides()[d];
    if (n == 1) continue;
    if (!have) {
      s = st;
      expect = st * n;
      have = true;
      continue;
    }
    if (st != expect) return false;
    expect = st * n;
  }
  *stride = s;
  return true;
}

// out [batch..., M, N] = a [batch..., M, K] @ b [batch..., K, N], where a and b already have the batch shape.
void gemm_into(const Tensor& a_in, const Tensor& b_in, Tensor& out) {
  Tensor a = a_in, b = b_in;
  MatLayout la = mat_layout(a), lb = mat_layout(b);
  int64_t sa = 0, sb = 0;
  if (!la.ok || !batch_stride(a, &sa)) {
    a = a.contiguous();
    la = mat_layout(a);
    batch_stride(a, &sa);
  }
  if (!lb.ok || !batch_stride(b, &sb)) {
    b = b.contiguous();
    lb = mat_layout(b);
    batch_stride(b, &sb);
  }
  int64_t nd = out.dim(), M = out.shape()[nd - 2], N = out.shape()[nd - 1], Kd = a.shape()[a.dim() - 1];
  int64_t batch = out.numel() / std::max<int64_t>(M * N, 1);
  if (M * N == 0) return;
  if (Kd == 0) {
    out.fill_(0);
    return;
  }
  K(out).gemm_batched(out.dtype(), batch, la.trans, lb.trans, M, N, Kd, 1.0, a.raw_data(), la.ld, sa, b.raw_data(),
                      lb.ld, sb, 0.0, out.raw_data(), N, M * N);
}

Tensor matmul_nd(const Tensor& a, const Tensor& b) {
  // a [..., M, K], b [..., K, N], both at least 2-D.
  int64_t M = a.size(-2), K = a.size(-1), K2 = b.size(-2), N = b.size(-1);
  SPDLAB_CHECK(K == K2, "matmul: inner dimensions differ: ", shape_str(a.shape()), " @ ", shape_str(b.shape()), " (",
               K, " vs ", K2, ")");
  Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  Shape batch = broadcast_shapes(ba, bb, "matmul (batch dims)");
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  if (b.dim() == 2 && a.dim() > 2 && mat_layout(a).ok && !mat_layout(a).trans && a.is_contiguous()) {
    // [..., M, K] @ [K, N]: fold the batch into M for one large product.
    Tensor a2 = a.detach().view({-1, K});
    Tensor o2 = out.view({-1, N});
    gemm_into(a2, b.detach(), o2);
  } else {
    Shape ea = batch, eb = batch;
    ea.push_back(M);
    ea.push_back(K);
    eb.push_back(K);
    eb.push_back(N);
    gemm_into(a.detach().expand(ea), b.detach().expand(eb), out);
  }
  if (!autograd::needs_grad({&a, &b})) return out;
  Tensor ad = a.detach(), bd = b.detach();
  Shape as = a.shape(), bs = b.shape();
  bool need_a = autograd::needs_grad({&a}), need_b = autograd::needs_grad({&b});
  return autograd::record("matmul", out, {a, b}, [=](const Tensor& dy) -> Grads {
    Tensor da, db;
    if (need_a) da = autograd::sum_to(matmul(dy, bd.transpose(-1, -2)), as);
    if (need_b) {
      if (bs.size() == 2 && dy.dim() > 2) {
        // sum over the batch of a^T dy is one product of the flattened operands.
        Tensor a2 = ad.reshape({-1, as.back()}), d2 = dy.reshape({-1, dy.size(-1)});
        db = matmul(a2.transpose(0, 1), d2);
      } else {
        db = autograd::sum_to(matmul(ad.transpose(-1, -2), dy), bs);
      }
    }
    return {da, db};
  });
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_float(a, "matmul", "first operand");
  check_float(b, "matmul", "second operand");
  check_same(a, b, "matmul");
  SPDLAB_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: both operands need at least 1 dim, got ", shape_str(a.shape()),
               " @ ", shape_str(b.shape()));
  if (a.dim() == 1 && b.dim() == 1) {
    SPDLAB_CHECK(a.size(0) == b.size(0), "matmul: inner dimensions differ: ", shape_str(a.shape()), " @ ",
                 shape_str(b.shape()));
    return matmul_nd(a.unsqueeze(0), b.unsqueeze(1)).reshape({});
  }
  if (a.dim() == 1) return matmul_nd(a.unsqueeze(0), b).squeeze(-2);
  if (b.dim() == 1) return matmul_nd(a, b.unsqueeze(1)).squeeze(-1);
  return matmul_nd(a, b);
}

Tensor ops_detail::check_linear(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_float(x, op, "input");
  check_float(w, op, "weight");
  check_same(x, w, op);
  SPDLAB_CHECK(w.dim() == 2, op, ": weight must be [out, in], got ", shape_str(w.shape()));
  SPDLAB_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1), op, ": input ", shape_str(x.shape()), " has last dim ",
               x.dim() ? x.size(-1) : 0, " but the weight ", shape_str(w.shape()), " expects ", w.size(1));
  if (!bias.defined()) return Tensor();
  check_same(x, bias, op);
  SPDLAB_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), op, ": bias must be [", w.size(0), "], got ",
               shape_str(bias.shape()));
  return bias.contiguous();
}

Tensor ops_detail::check_residual(const char* op, const Tensor& x, const Tensor& w, const Tensor& residual) {
  if (!residual.defined()) return Tensor();
  check_float(residual, op, "residual");
  check_same(x, residual, op);
  Shape out = x.shape();
  out.back() = w.size(0);
  SPDLAB_CHECK(residual.shape() == out, op, ": residual must have the output's shape ", shape_str(out), ", got ",
               shape_str(residual.shape()));
  return residual.contiguous();
}

// One product with the bias and the residual in its epilogue (see Kernels::gemm_ex).
Tensor ops_detail::linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias,
                                  const kernels::Kernels::Prologue& x_pro, const Tensor& residual) {
  int64_t N = w.size(0), Kd = w.size(1), rows = x.numel() / std::max<int64_t>(Kd, 1);
  Shape out_shape = x.shape();
  out_shape.back() = N;
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  kernels::Kernels::GemmEx ex;
  ex.a = x_pro;
  ex.bias = bias.defined() ? bias.raw_data() : nullptr;
  ex.residual = residual.defined() ? residual.raw_data() : nullptr;
  K(x).gemm_ex(x.dtype(), false, true, rows, N, Kd, x.raw_data(), Kd, w.raw_data(), Kd, y.raw_data(), N, ex);
  return y;
}

// dx = dy w, dw = dy^T x, db = the column sums of dy.
Grads ops_detail::linear_backward(const Tensor& dy_in, const Tensor& x, const Tensor& w, bool nx, bool nw, bool nb,
                                  const kernels::Kernels::Prologue& x_pro, const Tensor& dx_gelu_of) {
  Tensor dy = dy_in.contiguous();
  auto& k = kernels::get(dy.device());
  int64_t N = w.size(0), Kd = w.size(1), rows = x.numel() / std::max<int64_t>(Kd, 1);
  Tensor dx, dw, db;
  if (nx) dx = Tensor::empty(x.shape(), dy.dtype(), dy.device());
  if (nw) dw = Tensor::empty({N, Kd}, dy.dtype(), dy.device());
  if (nb) db = Tensor::empty({N}, dy.dtype(), dy.device());
  if (x_pro.kind == kernels::Kernels::Prologue::none && !dx_gelu_of.defined()) {
    // dx and dw are independent products of the same size (rows * N * Kd multiply-adds each).
    kernels::Kernels::Gemm g[2];
    int64_t n = 0;
    if (nx) g[n++] = {false, false, rows, Kd, N, 1.0, dy.raw_data(), N, w.raw_data(), Kd, 0.0, dx.raw_data(), Kd};
    if (nw) g[n++] = {true, false, N, Kd, rows, 1.0, dy.raw_data(), N, x.raw_data(), Kd, 0.0, dw.raw_data(), Kd};
    k.gemm_group(dy.dtype(), g, n);
  } else {
    kernels::Kernels::GemmExCall g[2];
    int64_t n = 0;
    if (nx) {
      g[n] = {false, false, rows, Kd, N, dy.raw_data(), N, w.raw_data(), Kd, dx.raw_data(), Kd, {}};
      g[n++].ex.gelu_grad = dx_gelu_of.defined() ? dx_gelu_of.raw_data() : nullptr;
    }
    if (nw) {
      g[n] = {true, false, N, Kd, rows, dy.raw_data(), N, x.raw_data(), Kd, dw.raw_data(), Kd, {}};
      g[n++].ex.b = x_pro;
    }
    kernels::Kernels::ColumnSums sums;  // db, beside the products
    if (nb) sums = {dy.raw_data(), db.raw_data(), rows, N};
    k.gemm_ex_group(dy.dtype(), g, n, sums);
    return {dx, dw, db};
  }
  if (nb) k.reduce(kernels::Reduce::sum, dy.dtype(), dy.raw_data(), db.raw_data(), 1, rows, N, nullptr);
  return {dx, dw, db};
}

// The residual's gradient is the output's.
Tensor linear(const Tensor& x_in, const Tensor& w, const Tensor& bias, const Tensor& residual) {
  Tensor bc = check_linear("linear", x_in, w, bias), rc = check_residual("linear", x_in, w, residual);
  Tensor x = x_in.contiguous(), wc = w.contiguous();
  Tensor y = linear_forward(x, wc, bc, {}, rc);
  if (!autograd::needs_grad({&x, &wc, &bc, &rc})) return y;
  Tensor xd = x.detach(), wd = wc.detach();
  bool nx = autograd::needs_grad({&x}), nw = autograd::needs_grad({&wc}), nb = bc.defined() && autograd::needs_grad({&bc});
  bool nr = rc.defined() && autograd::needs_grad({&rc});
  return autograd::record("linear", y, {x, wc, bc, rc}, [=](const Tensor& dy) -> Grads {
    Grads g = linear_backward(dy, xd, wd, nx, nw, nb);
    g.push_back(nr ? dy : Tensor());
    return g;
  });
}

// gelu(h) is never written out: the products apply it as they read h (a prologue), and backward's dh comes
// out of the dx product's epilogue.
Tensor gelu_linear(const Tensor& h_in, const Tensor& w, const Tensor& bias, const Tensor& residual) {
  Tensor bc = check_linear("gelu_linear", h_in, w, bias), rc = check_residual("gelu_linear", h_in, w, residual);
  Tensor h = h_in.contiguous(), wc = w.contiguous();
  kernels::Kernels::Prologue gelu;
  gelu.kind = kernels::Kernels::Prologue::gelu;
  Tensor y = linear_forward(h, wc, bc, gelu, rc);
  if (!autograd::needs_grad({&h, &wc, &bc, &rc})) return y;
  Tensor hd = h.detach(), wd = wc.detach();
  bool nh = autograd::needs_grad({&h}), nw = autograd::needs_grad({&wc}), nb = bc.defined() && autograd::needs_grad({&bc});
  bool nr = rc.defined() && autograd::needs_grad({&rc});
  return autograd::record("gelu_linear", y, {h, wc, bc, rc}, [=](const Tensor& dy) -> Grads {
    Grads g = linear_backward(dy, hd, wd, nh, nw, nb, gelu, hd);
    g.push_back(nr ? dy : Tensor());
    return g;
  });
}

}  // namespace spdlab
