// The exercises of docs/tour.md, two per step. Write your answers in docs/exercises/stubs.cpp (each now throws
// "not solved yet"), then build and run the checks:
//   cmake --build build --target exercises && ./build/exercises        (each solved exercise's test passes)
// Reference solutions are in docs/solutions/solutions.cpp; try first.
#pragma once
#include <vector>

#include "core/tensor.h"
#include "models/vit.h"
#include "nn/layers.h"

namespace spdlab::exercises {

// Step 1, tensors.
Tensor identity(int64_t n);                  // 1.1: the n x n identity matrix (f32), written element by element
int64_t element_count(const Shape& shape);   // 1.2: the number of elements of a tensor of this shape ([] -> 1)

// Step 2, views.
Shape contiguous_strides(const Shape& shape);  // 2.1: the row-major strides, in elements, of a fresh tensor
Tensor last_column(const Tensor& m);           // 2.2: column -1 of a matrix [R, C] as a view [R] (no copy)

// Step 3, the autograd tape.
Tensor square(const Tensor& x);        // 3.1: x * x as your own recorded op: a forward, and autograd::record
                                       //      with the backward dy * 2x
Tensor grad_of_cube_sum(const Tensor& x);  // 3.2: d/dx sum(x^3), found by calling backward (not by hand)

// Step 4, an op.
Tensor softmax_rows(const Tensor& x);  // 4.1: softmax over the last axis from exp, sum and div; stable for large x
Tensor cross_entropy_from_log_softmax(const Tensor& logits, const Tensor& target);  // 4.2: mean of -log p[target]

// Step 5, a kernel: plain loops over raw pointers, the way kernels/cpu is written.
void axpy(float a, const float* x, float* y, int64_t n);                 // 5.1: y += a x
void row_sums(const float* x, float* out, int64_t rows, int64_t cols);  // 5.2: out[r] = sum_c x[r, c]

// Step 6, modules.
Tensor linear_by_hand(const Tensor& x, const nn::Linear& layer);  // 6.1: x W^T + b with matmul and transpose
int64_t count_parameters(const nn::Module& m);                    // 6.2: the sum of numel over named_parameters()

// Step 7, the ViT.
int64_t num_tokens(const models::ViTConfig& cfg);  // 7.1: patches plus the class token
Tensor features_by_hand(models::VisionTransformer& m, const Tensor& x);  // 7.2: forward_features from the modules

// Step 8, an optimizer: torch.optim.SGD with momentum (dampening 0, no Nesterov, no decay) on plain vectors.
// 8.1: buf is the momentum buffer, passed in empty before the first step (size it then); buf = g on the first
// step, else momentum buf + g; then w -= lr buf.
void sgd_momentum_step(std::vector<double>& w, const std::vector<double>& g, std::vector<double>& buf, double lr,
                       double momentum, bool first_step);
double adam_bias_correction(double beta, int64_t step);     // 8.2: what Adam divides its moments by at step t

// Step 9, SPD.
double spd_condition(const std::vector<double>& g, const std::vector<double>& w, const std::vector<double>& w0);
                                                       // 9.1: c = -<g, w - w0>
double spd_ratio(double old_norm, double new_norm);    // 9.2: r = clamp((new - old) / new, 0, 1); 0 if new is 0

}  // namespace spdlab::exercises
