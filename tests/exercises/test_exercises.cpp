// The checks of docs/tour.md's exercises. Built twice: ./build/exercises with docs/exercises/stubs.cpp (what a
// student edits; every check fails until its exercise is solved) and ./build/exercises_solved with
// docs/solutions/solutions.cpp (CI: every check passes, so each exercise can be solved as stated).
#include <doctest/doctest.h>

#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"
#include "docs/exercises/exercises.h"
#include "optim/optim.h"
#include "optim/reference.h"

using namespace spdlab;
namespace ex = spdlab::exercises;

namespace {
double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(a.at(i) - b.at(i)));
  return m;
}
}  // namespace

TEST_SUITE("exercises") {

TEST_CASE("1.1 identity") {
  const Tensor i = ex::identity(4);
  Generator gen(1);
  const Tensor a = Tensor::randn({4, 3}, gen);
  CHECK(i.shape() == Shape{4, 4});
  CHECK(max_abs_diff(matmul(i, a), a) == 0);
}

TEST_CASE("1.2 element_count") {
  CHECK(ex::element_count({2, 3, 4}) == 24);
  CHECK(ex::element_count({}) == 1);
  CHECK(ex::element_count({5, 0}) == 0);
}

TEST_CASE("2.1 contiguous_strides") {
  for (const Shape& s : {Shape{2, 3, 4}, Shape{7}, Shape{1, 5, 1, 2}}) CHECK(ex::contiguous_strides(s) == Tensor::empty(s).strides());
}

TEST_CASE("2.2 last_column") {
  Tensor m = Tensor::arange(0, 12, 1, DType::f32).reshape({3, 4});
  Tensor c = ex::last_column(m);
  CHECK(c.to_vector_f32() == std::vector<float>{3, 7, 11});
  c.data<float>()[c.strides()[0]] = -1;  // writing through the view changes the matrix: no copy was made
  CHECK(m.at(7) == -1);
}

TEST_CASE("3.1 square as a recorded op") {
  Generator gen(2);
  const Tensor x = Tensor::randn({3, 2}, gen, DType::f64);
  CHECK(ex::square(x).to_vector_f64() == mul(x, x).to_vector_f64());
  CHECK(gradcheck([](const std::vector<Tensor>& v) { return ex::square(v[0]); }, {x}).ok);
  // Your own op, recorded under its name, not mul(x, x) (which passes the checks above too).
  const Tensor y = ex::square(x.detach().requires_grad_(true));
  REQUIRE(y.grad_fn() != nullptr);
  CHECK(y.grad_fn()->name == "square");
}

TEST_CASE("3.2 grad_of_cube_sum") {
  Generator gen(3);
  const Tensor x = Tensor::randn({5}, gen, DType::f64);
  CHECK(max_abs_diff(ex::grad_of_cube_sum(x), mul(mul(x, x), 3.0)) < 1e-12);
}

TEST_CASE("4.1 softmax_rows") {
  Generator gen(4);
  const Tensor x = Tensor::randn({3, 6}, gen, DType::f64);
  CHECK(max_abs_diff(ex::softmax_rows(x), softmax(x, 1)) < 1e-12);
  const Tensor big = mul(x, 1000.0);  // exp(1000) overflows: a stable softmax subtracts the row max first
  CHECK(max_abs_diff(ex::softmax_rows(big), softmax(big, 1)) < 1e-12);
  CHECK(gradcheck([](const std::vector<Tensor>& v) { return ex::softmax_rows(v[0]); }, {x}).ok);
}

TEST_CASE("4.2 cross_entropy_from_log_softmax") {
  Generator gen(5);
  const Tensor logits = Tensor::randn({4, 5}, gen, DType::f64);
  const Tensor target = Tensor::from_vector(std::vector<int64_t>{0, 4, 2, 2}, {4});
  CHECK(ex::cross_entropy_from_log_softmax(logits, target).item() == doctest::Approx(cross_entropy(logits, target).item()));
  CHECK(gradcheck([&](const std::vector<Tensor>& v) { return ex::cross_entropy_from_log_softmax(v[0], target); },
                  {logits}).ok);
}

TEST_CASE("5.1 axpy") {
  std::vector<float> x{1, 2, 3}, y{10, 20, 30};
  ex::axpy(2.0f, x.data(), y.data(), 3);
  CHECK(y == std::vector<float>{12, 24, 36});
}

TEST_CASE("5.2 row_sums") {
  Generator gen(6);
  const Tensor x = Tensor::randn({4, 9}, gen);
  std::vector<float> out(4);
  ex::row_sums(x.data<float>(), out.data(), 4, 9);
  const Tensor want = sum(x, {1});
  for (int i = 0; i < 4; ++i) CHECK(out[i] == doctest::Approx(want.at(i)).epsilon(1e-5));
}

TEST_CASE("6.1 linear_by_hand") {
  Generator gen(7);
  nn::Linear layer(5, 3, true, gen);
  const Tensor x = Tensor::randn({2, 5}, gen);
  CHECK(max_abs_diff(ex::linear_by_hand(x, layer), layer.forward(x)) < 1e-6);
}

TEST_CASE("6.2 count_parameters") {
  Generator gen(8);
  nn::Block block(16, 2, 4.0, 1e-6, 0.0, gen, nullptr);
  CHECK(ex::count_parameters(block) == block.num_parameters());
  CHECK(ex::count_parameters(block) == 4 * 16 + 16 * 48 + 48 + 16 * 16 + 16 + 16 * 64 + 64 + 64 * 16 + 16);
}

TEST_CASE("7.1 num_tokens") {
  for (const char* arch : {"vit_fmnist_tiny", "vit_tiny_patch16_224"}) {
    const models::ViTConfig cfg = models::vit_preset(arch);
    CHECK(ex::num_tokens(cfg) == models::VisionTransformer(cfg, 0).pos_embed.size(1));
  }
}

TEST_CASE("7.2 features_by_hand") {
  models::ViTConfig cfg = models::vit_preset("vit_fmnist_tiny");
  cfg.depth = 2;
  models::VisionTransformer m(cfg, 1);
  Generator gen(9);
  const Tensor x = Tensor::randn({2, 1, 28, 28}, gen);
  autograd::NoGradGuard ng;
  CHECK(max_abs_diff(ex::features_by_hand(m, x), m.forward_features(x)) < 1e-4);
}

TEST_CASE("8.1 sgd_momentum_step") {
  Tensor w = Tensor::from_vector(std::vector<float>{1, -2, 0.5f}, {3}).requires_grad_(true);
  auto sgd = optim::make_optimizer("sgd", optim::NamedTensors{{"w", w}}, {.lr = 0.1, .momentum = 0.9});
  std::vector<double> mine{1, -2, 0.5}, buf;
  Generator gen(10);
  for (int s = 0; s < 4; ++s) {
    const Tensor g = Tensor::randn({3}, gen);
    w.set_grad(g);
    sgd->step();
    const std::vector<float> gv = g.to_vector_f32();
    ex::sgd_momentum_step(mine, std::vector<double>(gv.begin(), gv.end()), buf, 0.1, 0.9, s == 0);
  }
  for (int i = 0; i < 3; ++i) CHECK(mine[i] == doctest::Approx(w.detach().at(i)).epsilon(1e-5));
}

TEST_CASE("8.2 adam_bias_correction") {
  CHECK(ex::adam_bias_correction(0.9, 1) == doctest::Approx(0.1));
  CHECK(ex::adam_bias_correction(0.999, 10) == doctest::Approx(1 - std::pow(0.999, 10)));
  CHECK(ex::adam_bias_correction(0.9, 1000) == doctest::Approx(1.0));
}

TEST_CASE("9.1 spd_condition") {
  const std::vector<double> w{1, 2}, w0{0, 0}, g{0.5, -1};
  CHECK(ex::spd_condition(g, w, w0) == doctest::Approx(1.5));  // -(0.5 * 1 + -1 * 2)
  std::vector<double> ww = w;
  optim::reference::AdamState<double> st;
  const auto step = optim::reference::spd_step(ww, g, w0, st, {});
  CHECK(ex::spd_condition(g, w, w0) == doctest::Approx(step.c));
}

TEST_CASE("9.2 spd_ratio") {
  CHECK(ex::spd_ratio(1.0, 2.0) == doctest::Approx(0.5));
  CHECK(ex::spd_ratio(2.0, 1.0) == 0.0);  // the step moved towards w0: nothing to undo
  CHECK(ex::spd_ratio(0.0, 0.0) == 0.0);
  CHECK(ex::spd_ratio(0.0, 3.0) == doctest::Approx(1.0));
}

}  // TEST_SUITE
