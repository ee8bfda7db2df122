// The differentiable ops, named like PyTorch's so timm code ports line by line.
// Each op checks its inputs, calls a kernel through kernels::get(device), and records its backward.
#pragma once
#include <optional>

#include "core/tensor.h"

namespace spdlab {

// Elementwise binary with NumPy/PyTorch broadcasting. Inputs must share dtype and device.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
// Scalar forms.
Tensor add(const Tensor& a, double s);
Tensor sub(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor pow(const Tensor& a, double exponent);
Tensor rsub(const Tensor& a, double s);  // s - a

// Elementwise unary.
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor relu(const Tensor& x);
enum class GeluApprox { none, tanh };
Tensor gelu(const Tensor& x, GeluApprox approx = GeluApprox::none);

// Reductions over a set of axes (empty = all), keepdim like PyTorch.
Tensor sum(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);
Tensor max(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);
Tensor var(const Tensor& x, const std::vector<int64_t>& axes = {}, bool unbiased = true, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t axis);  // int64, not differentiable
// Whether no element is NaN or inf (integer tensors: always), on any device. A check, not differentiable:
// sum(x * 0) is 0 exactly when every element is finite, so it costs one product and one reduction.
bool all_finite(const Tensor& x);

// a [..., M, K] @ b [..., K, N] -> [..., M, N]; batch dims broadcast; 1-D operands as in PyTorch.
Tensor matmul(const Tensor& a, const Tensor& b);
// x [..., K] @ w[N, K]^T + bias[N] -> [..., N], one gemm (PyTorch's F.linear). With a residual (the output's
// shape), residual + that, added as the product writes its output: a pre-norm block's x + proj(...) in one pass.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor(), const Tensor& residual = Tensor());
// linear(gelu(h), w, bias, residual) (exact GELU) that keeps only h for backward and computes gelu(h) again
// there: a transformer MLP saves one [tokens, hidden] activation instead of two.
Tensor gelu_linear(const Tensor& h, const Tensor& w, const Tensor& bias = Tensor(), const Tensor& residual = Tensor());

Tensor softmax(const Tensor& x, int64_t axis);
Tensor log_softmax(const Tensor& x, int64_t axis);
// Normalizes over the last dim; weight/bias [C] optional.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
// linear(layer_norm(x, ln_weight, ln_bias, eps), weight, bias) that keeps x, not the normalized x, for
// backward and normalizes again there: a pre-norm transformer block saves two activations fewer.
Tensor layer_norm_linear(const Tensor& x, const Tensor& ln_weight, const Tensor& ln_bias, double eps,
                         const Tensor& weight, const Tensor& bias = Tensor());
// logits [B, C], target int64 [B]; mean over the batch.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, double label_smoothing = 0.0);
// q,k,v [B, H, N, D] -> [B, H, N, D]: softmax(q k^T * scale) v, scores never leave the op.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    std::optional<double> scale = std::nullopt);
// The fused form a ViT uses: qkv [B, N, 3*C] (q, k, v thirds, heads inside each) -> [B, N, C], equal to
// splitting into heads, scaled_dot_product_attention, and merging the heads, with no copies in between.
// queries = Q in [1, N] attends from the first Q tokens only (to all N keys and values) -> [B, Q, C], the
// first Q rows of the full result; -1 = all N.
Tensor qkv_attention(const Tensor& qkv, int64_t num_heads, std::optional<double> scale = std::nullopt,
                     int64_t queries = -1);

// The reference path of the two attention ops above: softmax(q k^T * scale) v written as matmul, softmax,
// matmul, with the gradients from autograd. Slower and heavier (the [N, M] scores are kept), and tested equal to
// them (tests/test_reference_paths.cpp): a student reads this, the model runs the fused op.
Tensor attention_reference(const Tensor& q, const Tensor& k, const Tensor& v,
                           std::optional<double> scale = std::nullopt);

// Composites a course expects, each a line over the ops above (so their gradients come with them).
Tensor sigmoid(const Tensor& x);  // 0.5 + 0.5 tanh(x / 2)
Tensor norm(const Tensor& x);     // the Euclidean norm of all elements, sqrt(sum(x * x)), a scalar
// 1 where a == b, else 0 (a's dtype, broadcast shape); not differentiable. (argmax(logits, 1) compared with the
// labels: accuracy = mean(eq(pred, labels)) on float tensors.)
Tensor eq(const Tensor& a, const Tensor& b);

// Operators, for code that reads like the math: a + b, a - b, a * b, a / b with tensors or numbers, and -a.
// Matrix products stay a named function, matmul(a, b) (or a.matmul(b)): C++ has no @.
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double s) { return add(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return sub(a, s); }
inline Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return mul(a, 1.0 / s); }  // a * (1 / s)
inline Tensor operator+(double s, const Tensor& a) { return add(a, s); }
inline Tensor operator-(double s, const Tensor& a) { return rsub(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
inline Tensor operator-(const Tensor& a) { return neg(a); }

Tensor concat(const std::vector<Tensor>& xs, int64_t axis);
Tensor index_select(const Tensor& x, int64_t axis, const Tensor& index);  // index int64 1-D
Tensor gather(const Tensor& x, int64_t axis, const Tensor& index);        // index int64, x's rank
// where(cond, a, b): cond is any dtype, nonzero = take a. Broadcasts all three.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);
// Inverted dropout: zeroes with probability p and scales by 1/(1-p) when training; identity otherwise.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);
// Non-overlapping patches: x [B, C, H, W] -> [B, (H/P)*(W/P), C*P*P], channel-major inside a patch
// (the order of a Conv2d weight [D, C, P, P] flattened), patches in row-major grid order.
Tensor unfold_patches(const Tensor& x, int64_t patch);

// Gradient checking in float64 by central differences. fn maps inputs to a tensor; the check
// uses the scalar sum(fn(inputs) * r) for a fixed random r, so any output shape works.
struct GradcheckResult {
  bool ok = true;
  double max_abs_err = 0, max_rel_err = 0;
  std::string worst;  // "input 1, element 7: analytic 0.5, numeric 0.49999"
};
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, double eps = 1e-6, double atol = 1e-6,
                          double rtol = 1e-6);

}  // namespace spdlab
