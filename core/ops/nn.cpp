// Neural-network ops with hand-written fused backward: softmax, log_softmax, layer_norm, cross_entropy,
// attention; plus the indexing and shape ops a ViT needs (concat, index_select, gather, dropout, unfold_patches).
#include <cmath>

#include "core/ops/common.h"

namespace spdlab {
using namespace ops_detail;
using autograd::Grads;

namespace {

// Softmax over the last axis of a contiguous tensor.
Tensor softmax_last(const Tensor& x_in, bool log) {
  Tensor x = x_in.contiguous();
  int64_t cols = x.dim() ? x.size(-1) : 1, rows = x.numel() / std::max<int64_t>(cols, 1);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  K(x).softmax_fwd(x.dtype(), x.raw_data(), y.raw_data(), rows, cols, 1.0, log);
  Tensor yd = y.detach();
  return autograd::record(log ? "log_softmax" : "softmax", y, {x}, [yd, rows, cols, log](const Tensor& dy_in) -> Grads {
    Tensor dy = dy_in.contiguous(), dx = Tensor::empty_like(yd);
    kernels::get(yd.device()).softmax_bwd(yd.dtype(), yd.raw_data(), dy.raw_data(), dx.raw_data(), rows, cols, 1.0, log);
    return {dx};
  });
}

Tensor softmax_any(const Tensor& x, int64_t axis, bool log, const char* name) {
  check_float(x, name);
  int64_t a = wrap_axis(axis, x.dim(), name);
  if (x.dim() == 0 || a == x.dim() - 1) return softmax_last(x, log);
  return softmax_last(x.transpose(a, -1), log).transpose(a, -1);
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t axis) { return softmax_any(x, axis, false, "softmax"); }
Tensor log_softmax(const Tensor& x, int64_t axis) { return softmax_any(x, axis, true, "log_softmax"); }

void ops_detail::check_layer_norm(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias,
                                  double eps) {
  check_float(x, op);
  SPDLAB_CHECK(x.dim() >= 1, op, ": expected at least 1 dim, got a scalar");
  int64_t C = x.size(-1);
  for (const Tensor* p : {&weight, &bias}) {
    if (!p->defined()) continue;
    check_same(x, *p, op);
    SPDLAB_CHECK(p->dim() == 1 && p->size(0) == C, op, ": weight and bias must be [", C, "] for input ",
                 shape_str(x.shape()), ", got ", shape_str(p->shape()));
  }
  SPDLAB_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
}

Tensor ops_detail::layer_norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps, Tensor& mean,
                                      Tensor& rstd) {
  int64_t C = x.size(-1), rows = x.numel() / std::max<int64_t>(C, 1);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  mean = Tensor::empty({rows}, DType::f64, x.device());
  rstd = Tensor::empty({rows}, DType::f64, x.device());
  K(x).layer_norm_fwd(x.dtype(), x.raw_data(), w.defined() ? w.raw_data() : nullptr,
                      b.defined() ? b.raw_data() : nullptr, y.raw_data(), mean.data<double>(), rstd.data<double>(),
                      rows, C, eps);
  return y;
}

Grads ops_detail::layer_norm_backward(const Tensor& dy_in, const Tensor& x, const Tensor& w, const Tensor& mean,
                                      const Tensor& rstd, bool nw, bool nb) {
  int64_t C = x.size(-1), rows = x.numel() / std::max<int64_t>(C, 1);
  Tensor dy = dy_in.contiguous(), dx = Tensor::empty_like(x);
  Tensor dw = nw ? Tensor::zeros({C}, dy.dtype(), dy.device()) : Tensor();
  Tensor db = nb ? Tensor::zeros({C}, dy.dtype(), dy.device()) : Tensor();
  kernels::get(x.device()).layer_norm_bwd(x.dtype(), x.raw_data(), w.defined() ? w.raw_data() : nullptr,
                                          mean.data<double>(), rstd.data<double>(), dy.raw_data(), dx.raw_data(),
                                          nw ? dw.raw_data() : nullptr, nb ? db.raw_data() : nullptr, rows, C);
  return {dx, dw, db};
}

Tensor layer_norm(const Tensor& x_in, const Tensor& weight, const Tensor& bias, double eps) {
  check_layer_norm("layer_norm", x_in, weight, bias, eps);
  Tensor x = x_in.contiguous();
  Tensor w = weight.defined() ? weight.contiguous() : Tensor();
  Tensor b = bias.defined() ? bias.contiguous() : Tensor();
  Tensor mean, rstd;
  Tensor y = layer_norm_forward(x, w, b, eps, mean, rstd);
  if (!autograd::needs_grad({&x, &w, &b})) return y;
  Tensor xd = x.detach(), wd = w.defined() ? w.detach() : Tensor();
  bool nw = w.defined() && autograd::needs_grad({&w}), nb = b.defined() && autograd::needs_grad({&b});
  return autograd::record("layer_norm", y, {x, w, b}, [=](const Tensor& dy) -> Grads {
    return layer_norm_backward(dy, xd, wd, mean, rstd, nw, nb);
  });
}

Tensor layer_norm_linear(const Tensor& x_in, const Tensor& ln_weight, const Tensor& ln_bias, double eps,
                         const Tensor& weight, const Tensor& bias) {
  check_layer_norm("layer_norm_linear", x_in, ln_weight, ln_bias, eps);
  Tensor lb = check_linear("layer_norm_linear", x_in, weight, bias);
  Tensor x = x_in.contiguous(), w = weight.contiguous();
  Tensor gamma = ln_weight.defined() ? ln_weight.contiguous() : Tensor();
  Tensor beta = ln_bias.defined() ? ln_bias.contiguous() : Tensor();
  // The normalized x is never written: the products apply layer norm as they read x (a prologue). Forward's
  // product computes the statistics first, into mean and rstd; backward's dw = dy^T layer_norm(x) reads them.
  int64_t rows = x.numel() / std::max<int64_t>(x.size(-1), 1);
  Tensor mean = Tensor::empty({rows}, DType::f64, x.device()), rstd = Tensor::empty({rows}, DType::f64, x.device());
  kernels::Kernels::Prologue ln_x;
  ln_x.kind = kernels::Kernels::Prologue::layer_norm;
  ln_x.mean_out = mean.data<double>();
  ln_x.rstd_out = rstd.data<double>();
  ln_x.gamma = gamma.defined() ? gamma.raw_data() : nullptr;
  ln_x.beta = beta.defined() ? beta.raw_data() : nullptr;
  ln_x.eps = eps;
  Tensor y = linear_forward(x, w, lb, ln_x);
  if (!autograd::needs_grad({&x, &gamma, &beta, &w, &lb})) return y;
  ln_x = ln_x.with_saved_statistics();  // backward's products read what forward's computed
  Tensor xd = x.detach(), wd = w.detach();
  Tensor lnw = gamma.defined() ? gamma.detach() : Tensor(), lnb = beta.defined() ? beta.detach() : Tensor();
  bool need_lnw = lnw.defined() && autograd::needs_grad({&gamma});
  bool need_lnb = lnb.defined() && autograd::needs_grad({&beta});
  bool need_w = autograd::needs_grad({&w}), need_b = lb.defined() && autograd::needs_grad({&lb});
  // The lambda keeps mean, rstd, lnw and lnb alive, and with them the memory ln_x points into.
  return autograd::record("layer_norm_linear", y, {x, gamma, beta, w, lb}, [=](const Tensor& dy) -> Grads {
    Grads lin = linear_backward(dy, xd, wd, true, need_w, need_b, ln_x);
    Grads ln = layer_norm_backward(lin[0], xd, lnw, mean, rstd, need_lnw, need_lnb);
    return {ln[0], ln[1], ln[2], lin[1], lin[2]};
  });
}

Tensor cross_entropy(const Tensor& logits_in, const Tensor& target_in, double smoothing) {
  check_float(logits_in, "cross_entropy", "logits");
  SPDLAB_CHECK(logits_in.dim() == 2, "cross_entropy: expected logits [B, C], got ", shape_str(logits_in.shape()));
  SPDLAB_CHECK(target_in.dtype() == DType::i64, "cross_entropy: expected int64 targets, got ", target_in.dtype());
  SPDLAB_CHECK(target_in.dim() == 1 && target_in.size(0) == logits_in.size(0), "cross_entropy: expected targets [",
               logits_in.size(0), "] for logits ", shape_str(logits_in.shape()), ", got ", shape_str(target_in.shape()));
  SPDLAB_CHECK(smoothing >= 0 && smoothing <= 1, "cross_entropy: label_smoothing must be in [0, 1], got ", smoothing);
  int64_t B = logits_in.size(0), C = logits_in.size(1);
  SPDLAB_CHECK(B > 0, "cross_entropy: empty batch");
  SPDLAB_CHECK(target_in.device() == logits_in.device(), "cross_entropy: logits are on ", logits_in.device(),
               " but targets on ", target_in.device(), "; move both to one device");
  Tensor logits = logits_in.contiguous(), target = target_in.contiguous();
  {
    Tensor th = target.cpu();  // checked on the host: a bad class index must be an error, not a wild read
    const int64_t* t = th.data<int64_t>();
    for (int64_t i = 0; i < B; ++i)
      SPDLAB_CHECK(t[i] >= 0 && t[i] < C, "cross_entropy: target[", i, "] = ", t[i], " is outside [0, ", C, ")");
  }
  Tensor probs = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
  Tensor loss_rows = Tensor::empty({B}, DType::f64, logits.device());
  K(logits).cross_entropy_fwd(logits.dtype(), logits.raw_data(), target.data<int64_t>(), probs.raw_data(),
                              loss_rows.data<double>(), B, C, smoothing);
  Tensor rows_h = loss_rows.cpu();  // summed on the host in row order, as on the CPU
  double total = 0;
  for (int64_t i = 0; i < B; ++i) total += rows_h.data<double>()[i];
  Tensor loss = Tensor::full({}, total / B, logits.dtype(), logits.device());
  return autograd::record("cross_entropy", loss, {logits}, [=](const Tensor& dy) -> Grads {
    Tensor dl = Tensor::empty_like(probs);
    kernels::get(probs.device()).cross_entropy_bwd(probs.dtype(), probs.raw_data(), target.data<int64_t>(),
                                                   dl.raw_data(), B, C, smoothing, dy.item() / B);
    return {dl};
  });
}

Tensor attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, std::optional<double> scale) {
  SPDLAB_CHECK(q.dim() == 4 && k.dim() == 4 && k.shape() == v.shape() && q.size(3) == k.size(3),
               "attention_reference: expected q [B, H, N, D] and k, v [B, H, M, D], got ", shape_str(q.shape()), ", ",
               shape_str(k.shape()), ", ", shape_str(v.shape()));
  const double s = scale ? *scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  Tensor scores = mul(matmul(q, k.transpose(2, 3)), s);  // [B, H, N, M]: how much each query likes each key
  Tensor weights = softmax(scores, 3);                   // each row sums to 1
  return matmul(weights, v);                             // [B, H, N, D]: the weighted mean of the values
}

Tensor sigmoid(const Tensor& x) { return add(mul(tanh(mul(x, 0.5)), 0.5), 0.5); }

Tensor norm(const Tensor& x) { return sqrt(sum(mul(x, x))); }

Tensor eq(const Tensor& a, const Tensor& b) {
  const Tensor diff = sub(a.detach(), b.detach());  // where() takes nonzero as true: a difference means "not equal"
  return where(diff, Tensor::zeros({}, diff.dtype(), diff.device()), Tensor::ones({}, diff.dtype(), diff.device()));
}

Tensor Tensor::matmul(const Tensor& other) const { return spdlab::matmul(*this, other); }
Tensor Tensor::sum() const { return spdlab::sum(*this); }
Tensor Tensor::mean() const { return spdlab::mean(*this); }

Tensor scaled_dot_product_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                    std::optional<double> scale_opt) {
  for (const Tensor* t : {&q_in, &k_in, &v_in}) {
    check_float(*t, "scaled_dot_product_attention");
    check_same(q_in, *t, "scaled_dot_product_attention");
  }
  SPDLAB_CHECK(q_in.dim() == 4 && k_in.dim() == 4 && k_in.shape() == v_in.shape() && q_in.size(0) == k_in.size(0) &&
                   q_in.size(1) == k_in.size(1) && q_in.size(3) == k_in.size(3),
               "scaled_dot_product_attention: expected q [B, H, N, D] and k, v [B, H, M, D], got ",
               shape_str(q_in.shape()), ", ", shape_str(k_in.shape()), ", ", shape_str(v_in.shape()));
  // BLAS needs the head dim contiguous and a row stride it can use; anything else is copied once.
  auto prep = [](const Tensor& t) {
    bool ok = t.strides()[3] == 1 && t.strides()[2] >= t.size(3);
    return ok ? t : t.contiguous();
  };
  Tensor q = prep(q_in), k = prep(k_in), v = prep(v_in);
  int64_t B = q.size(0), H = q.size(1), N = q.size(2), M = k.size(2), D = q.size(3);
  double scale = scale_opt ? *scale_opt : 1.0 / std::sqrt(static_cast<double>(D));
  // The output is laid out [B, N, H, D], so the usual transpose(1, 2).reshape(B, N, H*D) that follows is free.
  Tensor out_bnhd = Tensor::empty({B, N, H, D}, q.dtype(), q.device());
  Tensor out = out_bnhd.permute({0, 2, 1, 3});
  // What backward needs is saved only when there will be a backward (the CPU keeps small heads' probabilities).
  const bool grad = autograd::needs_grad({&q, &k, &v});
  Tensor saved = grad ? Tensor::empty({K(q).attention_saved_numel(B, H, N, M)}, q.dtype(), q.device()) : Tensor();
  K(q).attention_fwd(q.dtype(), B, H, N, M, D, q.raw_data(), q.strides().data(), k.raw_data(), k.strides().data(),
                     v.raw_data(), v.strides().data(), out.raw_data(), out.strides().data(),
                     grad ? saved.raw_data() : nullptr, scale);
  if (!grad) return out;
  Tensor qd = q.detach(), kd = k.detach(), vd = v.detach();
  return autograd::record("scaled_dot_product_attention", out, {q, k, v}, [=](const Tensor& dy_in) -> Grads {
    Tensor dy = dy_in.strides()[3] == 1 && dy_in.strides()[2] >= D ? dy_in : dy_in.contiguous();
    Tensor dq = Tensor::empty({B, H, N, D}, qd.dtype(), qd.device());
    Tensor dk = Tensor::empty({B, H, M, D}, qd.dtype(), qd.device()), dv = Tensor::empty_like(dk);
    kernels::get(qd.device()).attention_bwd(qd.dtype(), B, H, N, M, D, qd.raw_data(), qd.strides().data(),
                                            kd.raw_data(), kd.strides().data(), vd.raw_data(), vd.strides().data(),
                                            saved.raw_data(), dy.raw_data(), dy.strides().data(), dq.raw_data(),
                                            dq.strides().data(), dk.raw_data(), dk.strides().data(), dv.raw_data(),
                                            dv.strides().data(), scale);
    return {dq, dk, dv};
  });
}

Tensor qkv_attention(const Tensor& qkv_in, int64_t num_heads, std::optional<double> scale_opt, int64_t queries) {
  check_float(qkv_in, "qkv_attention");
  SPDLAB_CHECK(qkv_in.dim() == 3 && qkv_in.size(2) % 3 == 0, "qkv_attention: expected qkv [B, N, 3*C], got ",
               shape_str(qkv_in.shape()));
  int64_t B = qkv_in.size(0), N = qkv_in.size(1), C = qkv_in.size(2) / 3;
  SPDLAB_CHECK(num_heads > 0 && C % num_heads == 0, "qkv_attention: C = ", C, " is not divisible by num_heads ",
               num_heads);
  SPDLAB_CHECK(queries == -1 || (queries >= 1 && queries <= N), "qkv_attention: queries must be -1 (all ", N,
               " tokens) or in [1, ", N, "], got ", queries);
  int64_t H = num_heads, D = C / H, Q = queries == -1 ? N : queries;
  double scale = scale_opt ? *scale_opt : 1.0 / std::sqrt(static_cast<double>(D));
  Tensor qkv = qkv_in.contiguous();
  // q, k, v of head h live at columns [h*D, (h+1)*D) of the three C-wide thirds of each token's row; the
  // queries are the first Q rows of the q third.
  const int64_t in_str[3] = {N * 3 * C, D, 3 * C}, out_str[3] = {Q * C, D, C};
  size_t es = dtype_size(qkv.dtype());
  char* base = static_cast<char*>(qkv.raw_data());
  Tensor out = Tensor::empty({B, Q, C}, qkv.dtype(), qkv.device());
  const bool grad = autograd::needs_grad({&qkv});
  Tensor saved = grad ? Tensor::empty({K(qkv).attention_saved_numel(B, H, Q, N)}, qkv.dtype(), qkv.device()) : Tensor();
  K(qkv).attention_fwd(qkv.dtype(), B, H, Q, N, D, base, in_str, base + C * es, in_str, base + 2 * C * es, in_str,
                       out.raw_data(), out_str, grad ? saved.raw_data() : nullptr, scale);
  if (!grad) return out;
  Tensor qd = qkv.detach();
  return autograd::record("qkv_attention", out, {qkv}, [=](const Tensor& dy_in) -> Grads {
    Tensor dy = dy_in.contiguous();
    // Rows past the queries feed only k and v, so their q columns get no gradient.
    Tensor dqkv = Q < N ? Tensor::zeros(qd.shape(), qd.dtype(), qd.device())
                        : Tensor::empty(qd.shape(), qd.dtype(), qd.device());
    char* x = static_cast<char*>(qd.raw_data());
    char* g = static_cast<char*>(dqkv.raw_data());
    kernels::get(qd.device()).attention_bwd(qd.dtype(), B, H, Q, N, D, x, in_str, x + C * es, in_str,
                                            x + 2 * C * es, in_str, saved.raw_data(), dy.raw_data(), out_str, g,
                                            in_str, g + C * es, in_str, g + 2 * C * es, in_str, scale);
    return {dqkv};
  });
}

Tensor concat(const std::vector<Tensor>& xs, int64_t axis) {
  SPDLAB_CHECK(!xs.empty(), "concat: expected at least one tensor");
  const Tensor& x0 = xs[0];
  int64_t a = wrap_axis(axis, x0.dim(), "concat");
  Shape out_shape = x0.shape();
  out_shape[a] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    check_same(x0, xs[i], "concat");
    SPDLAB_CHECK(xs[i].dim() == x0.dim(), "concat: tensor ", i, " has shape ", shape_str(xs[i].shape()),
                 ", expected ", x0.dim(), " dims like ", shape_str(x0.shape()));
    for (int64_t d = 0; d < x0.dim(); ++d)
      SPDLAB_CHECK(d == a || xs[i].shape()[d] == x0.shape()[d], "concat: tensor ", i, " has shape ",
                   shape_str(xs[i].shape()), ", which differs from ", shape_str(x0.shape()), " outside axis ", a);
    out_shape[a] += xs[i].shape()[a];
  }
  Tensor y = Tensor::empty(out_shape, x0.dtype(), x0.device());
  std::vector<int64_t> sizes;
  {
    autograd::NoGradGuard ng;
    int64_t at = 0;
    for (const Tensor& x : xs) {
      y.narrow(a, at, x.shape()[a]).copy_(x.detach());
      sizes.push_back(x.shape()[a]);
      at += x.shape()[a];
    }
  }
  return autograd::record("concat", y, xs, [a, sizes](const Tensor& dy) -> Grads {
    Grads g;
    int64_t at = 0;
    for (int64_t s : sizes) {
      g.push_back(dy.narrow(a, at, s).contiguous());
      at += s;
    }
    return g;
  });
}

namespace {
void check_index(const Tensor& index, const Tensor& x, int64_t n, const char* op) {
  SPDLAB_CHECK(index.dtype() == DType::i64, op, ": expected an int64 index, got ", index.dtype());
  SPDLAB_CHECK(index.device() == x.device(), op, ": the input is on ", x.device(), " but the index on ",
               index.device(), "; move both to one device");
  Tensor ih = index.cpu();
  const int64_t* p = ih.data<int64_t>();
  for (int64_t i = 0; i < index.numel(); ++i)
    SPDLAB_CHECK(p[i] >= 0 && p[i] < n, op, ": index ", p[i], " at position ", i, " is out of range [0, ", n, ")");
}

void outer_inner(const Shape& s, int64_t a, int64_t* outer, int64_t* inner) {
  *outer = 1;
  *inner = 1;
  for (int64_t d = 0; d < static_cast<int64_t>(s.size()); ++d) {
    if (d < a) *outer *= s[d];
    if (d > a) *inner *= s[d];
  }
}
}  // namespace

Tensor index_select(const Tensor& x_in, int64_t axis, const Tensor& index_in) {
  check_float(x_in, "index_select");
  int64_t a = wrap_axis(axis, x_in.dim(), "index_select");
  SPDLAB_CHECK(index_in.dim() == 1, "index_select: expected a 1-D index, got ", shape_str(index_in.shape()));
  Tensor x = x_in.contiguous(), index = index_in.contiguous();
  int64_t n = x.shape()[a], m = index.numel(), outer, inner;
  check_index(index, x, n, "index_select");
  outer_inner(x.shape(), a, &outer, &inner);
  Shape s = x.shape();
  s[a] = m;
  Tensor y = Tensor::empty(s, x.dtype(), x.device());
  K(x).index_select_fwd(x.dtype(), x.raw_data(), index.data<int64_t>(), y.raw_data(), outer, n, m, inner);
  Shape xs = x.shape();
  return autograd::record("index_select", y, {x}, [=](const Tensor& dy_in) -> Grads {
    Tensor dy = dy_in.contiguous(), dx = Tensor::zeros(xs, dy.dtype(), dy.device());
    kernels::get(dy.device()).index_select_bwd(dy.dtype(), dy.raw_data(), index.data<int64_t>(), dx.raw_data(), outer,
                                               n, m, inner);
    return {dx};
  });
}

Tensor gather(const Tensor& x_in, int64_t axis, const Tensor& index_in) {
  check_float(x_in, "gather");
  int64_t a = wrap_axis(axis, x_in.dim(), "gather");
  SPDLAB_CHECK(index_in.dim() == x_in.dim(), "gather: index ", shape_str(index_in.shape()), " must have as many dims as ",
               shape_str(x_in.shape()));
  for (int64_t d = 0; d < x_in.dim(); ++d)
    SPDLAB_CHECK(d == a || index_in.shape()[d] == x_in.shape()[d], "gather: index ", shape_str(index_in.shape()),
                 " must match input ", shape_str(x_in.shape()), " outside axis ", a);
  Tensor x = x_in.contiguous(), index = index_in.contiguous();
  int64_t n = x.shape()[a], m = index.shape()[a], outer, inner;
  check_index(index, x, n, "gather");
  outer_inner(x.shape(), a, &outer, &inner);
  Tensor y = Tensor::empty(index.shape(), x.dtype(), x.device());
  K(x).gather_fwd(x.dtype(), x.raw_data(), index.data<int64_t>(), y.raw_data(), outer, n, m, inner);
  Shape xs = x.shape();
  return autograd::record("gather", y, {x}, [=](const Tensor& dy_in) -> Grads {
    Tensor dy = dy_in.contiguous(), dx = Tensor::zeros(xs, dy.dtype(), dy.device());
    kernels::get(dy.device()).gather_bwd(dy.dtype(), dy.raw_data(), index.data<int64_t>(), dx.raw_data(), outer, n, m,
                                         inner);
    return {dx};
  });
}

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  check_float(x, "dropout");
  SPDLAB_CHECK(p >= 0 && p < 1, "dropout: p must be in [0, 1), got ", p);
  if (!training || p == 0) return x;
  // One draw from the generator keys a counter-based stream (kernels/philox.h): element i of the mask comes
  // from (key, i) alone, so every device draws the same mask for the same generator state.
  Tensor mask = Tensor::empty(x.shape(), x.dtype(), x.device());
  K(x).dropout_mask(x.dtype(), mask.raw_data(), mask.numel(), p, gen.next_u64(), 0);
  return mul(x, mask);
}

Tensor unfold_patches(const Tensor& x_in, int64_t P) {
  check_float(x_in, "unfold_patches");
  SPDLAB_CHECK(x_in.dim() == 4, "unfold_patches: expected [B, C, H, W], got ", shape_str(x_in.shape()));
  SPDLAB_CHECK(P > 0, "unfold_patches: patch size must be positive, got ", P);
  int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  SPDLAB_CHECK(H % P == 0 && W % P == 0, "unfold_patches: image ", H, "x", W, " is not divisible by patch size ", P);
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty({B, (H / P) * (W / P), C * P * P}, x.dtype(), x.device());
  K(x).unfold_patches_fwd(x.dtype(), x.raw_data(), y.raw_data(), B, C, H, W, P);
  return autograd::record("unfold_patches", y, {x}, [=](const Tensor& dy_in) -> Grads {
    Tensor dy = dy_in.contiguous(), dx = Tensor::zeros({B, C, H, W}, dy.dtype(), dy.device());
    kernels::get(dy.device()).unfold_patches_bwd(dy.dtype(), dy.raw_data(), dx.raw_data(), B, C, H, W, P);
    return {dx};
  });
}

}  // namespace spdlab
