// Your answers to the exercises of docs/tour.md. Replace a `not_solved(...)` line with your code; the tests in
// tests/exercises/test_exercises.cpp check each one (./build/exercises). No peeking at docs/solutions/ first.
#include "docs/exercises/exercises.h"

#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"

namespace spdlab::exercises {

namespace {
[[noreturn, maybe_unused]] void not_solved(const char* which) {
  SPDLAB_FAIL("exercise ", which, " is not solved yet: write it in docs/exercises/stubs.cpp (see docs/tour.md)");
}
}  // namespace

Tensor identity(int64_t n) { not_solved("1.1"); }
int64_t element_count(const Shape& shape) { not_solved("1.2"); }
Shape contiguous_strides(const Shape& shape) { not_solved("2.1"); }
Tensor last_column(const Tensor& m) { not_solved("2.2"); }
Tensor square(const Tensor& x) { not_solved("3.1"); }
Tensor grad_of_cube_sum(const Tensor& x) { not_solved("3.2"); }
Tensor softmax_rows(const Tensor& x) { not_solved("4.1"); }
Tensor cross_entropy_from_log_softmax(const Tensor& logits, const Tensor& target) {
  not_solved("4.2");
}
void axpy(float a, const float* x, float* y, int64_t n) { not_solved("5.1"); }
void row_sums(const float* x, float* out, int64_t rows, int64_t cols) { not_solved("5.2"); }
Tensor linear_by_hand(const Tensor& x, const nn::Linear& layer) { not_solved("6.1"); }
int64_t count_parameters(const nn::Module& m) { not_solved("6.2"); }
int64_t num_tokens(const models::ViTConfig& cfg) { not_solved("7.1"); }
Tensor features_by_hand(models::VisionTransformer& m, const Tensor& x) { not_solved("7.2"); }
void sgd_momentum_step(std::vector<double>& w, const std::vector<double>& g, std::vector<double>& buf, double lr,
                       double momentum, bool first_step) {
  not_solved("8.1");
}
double adam_bias_correction(double beta, int64_t step) { not_solved("8.2"); }
double spd_condition(const std::vector<double>& g, const std::vector<double>& w, const std::vector<double>& w0) {
  not_solved("9.1");
}
double spd_ratio(double old_norm, double new_norm) { not_solved("9.2"); }

}  // namespace spdlab::exercises
