// Reference solutions to the exercises of docs/tour.md (docs/exercises/exercises.h). Built into
// ./build/exercises_solved, which CI runs to show that every exercise's test can pass.
#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"
#include "docs/exercises/exercises.h"

namespace spdlab::exercises {

Tensor identity(int64_t n) {
  Tensor t = Tensor::zeros({n, n});
  float* p = t.data<float>();  // a fresh tensor is contiguous: element (i, j) is at i * n + j
  for (int64_t i = 0; i < n; ++i) p[i * n + i] = 1.0f;
  return t;
}

int64_t element_count(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t step = 1;
  for (size_t i = shape.size(); i-- > 0;) {  // the last dim moves fastest
    strides[i] = step;
    step *= shape[i];
  }
  return strides;
}

Tensor last_column(const Tensor& m) { return m.select(1, m.size(1) - 1); }  // same storage, stride = row length

Tensor square(const Tensor& x) {
  Tensor y = mul(x.detach(), x.detach());  // the forward, computed without recording
  const Tensor xd = x.detach();
  return autograd::record("square", y, {x}, [xd](const Tensor& dy) -> autograd::Grads { return {dy * xd * 2.0}; });
}

Tensor grad_of_cube_sum(const Tensor& x) {
  Tensor leaf = x.detach().clone().requires_grad_(true);
  sum(leaf * leaf * leaf).backward();
  return leaf.grad();
}

Tensor softmax_rows(const Tensor& x) {
  const int64_t last = x.dim() - 1;
  Tensor shifted = x - max(x.detach(), {last}, true);  // exp of at most 0: no overflow, same result
  Tensor e = exp(shifted);
  return e / sum(e, {last}, true);
}

Tensor cross_entropy_from_log_softmax(const Tensor& logits, const Tensor& target) {
  Tensor logp = log_softmax(logits, 1);                   // [B, C]
  Tensor picked = gather(logp, 1, target.unsqueeze(1));    // [B, 1]: log p of each row's label
  return -mean(picked);
}

void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void row_sums(const float* x, float* out, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float s = 0;
    for (int64_t c = 0; c < cols; ++c) s += x[r * cols + c];
    out[r] = s;
  }
}

Tensor linear_by_hand(const Tensor& x, const nn::Linear& layer) {
  Tensor y = matmul(x, layer.weight.transpose(0, 1));  // weight is [out, in], as PyTorch's
  return layer.bias ? y + *layer.bias : y;
}

int64_t count_parameters(const nn::Module& m) {
  int64_t n = 0;
  for (const auto& [name, t] : m.named_parameters()) n += t.numel();
  return n;
}

int64_t num_tokens(const models::ViTConfig& cfg) {
  const int64_t grid = cfg.img_size / cfg.patch_size;
  return grid * grid + 1;
}

Tensor features_by_hand(models::VisionTransformer& m, const Tensor& x) {
  const int64_t B = x.size(0), D = m.config().embed_dim;
  Tensor t = m.patch_embed->forward(x);                      // [B, N, D]
  t = concat({m.cls_token.expand({B, 1, D}), t}, 1) + m.pos_embed;
  if (m.norm_pre) t = m.norm_pre->forward(t);
  for (const auto& block : m.blocks) t = block->forward(t);  // all rows (the model computes only row 0 in the last)
  t = m.norm->forward(t.select(1, 0));                       // the class token
  return m.proj ? m.proj->forward(t) : t;
}

void sgd_momentum_step(std::vector<double>& w, const std::vector<double>& g, std::vector<double>& buf, double lr,
                       double momentum, bool first_step) {
  if (buf.empty()) buf.assign(w.size(), 0.0);
  for (size_t i = 0; i < w.size(); ++i) {
    buf[i] = first_step ? g[i] : momentum * buf[i] + g[i];
    w[i] -= lr * buf[i];
  }
}

double adam_bias_correction(double beta, int64_t step) { return 1.0 - std::pow(beta, static_cast<double>(step)); }

double spd_condition(const std::vector<double>& g, const std::vector<double>& w, const std::vector<double>& w0) {
  double c = 0;
  for (size_t i = 0; i < g.size(); ++i) c -= g[i] * (w[i] - w0[i]);
  return c;
}

double spd_ratio(double old_norm, double new_norm) {
  if (new_norm == 0) return 0;
  return std::clamp((new_norm - old_norm) / new_norm, 0.0, 1.0);
}

}  // namespace spdlab::exercises
