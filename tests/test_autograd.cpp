// The tensor core and autograd engine: views, the tape, error messages, gradcheck over every op,
// and a 2-layer MLP trained with plain SGD to >95% accuracy, bit-identical across runs.
#include <doctest/doctest.h>

#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"
#include "nn/layers.h"

using namespace spdlab;
using autograd::NoGradGuard;

namespace {
Tensor rnd(const Shape& s, uint64_t seed, DType dt = DType::f64) {
  Generator g(seed);
  return Tensor::randn(s, g, dt);
}
Tensor pos(const Shape& s, uint64_t seed) {  // strictly positive, away from 0
  Generator g(seed);
  return Tensor::uniform(s, 0.5, 2.0, g, DType::f64);
}
}  // namespace

TEST_SUITE("autograd") {

TEST_CASE("views share storage and follow strides") {
  Tensor x = Tensor::arange(0, 24, 1, DType::f32).reshape({2, 3, 4});
  Tensor t = x.transpose(0, 2);
  CHECK(t.shape() == Shape{4, 3, 2});
  CHECK_FALSE(t.is_contiguous());
  CHECK(t.storage() == x.storage());
  CHECK(t.at(1 * 6 + 2 * 2 + 1) == 1 * 12 + 2 * 4 + 1);  // t[1,2,1] = x[1,2,1]
  Tensor n = x.narrow(2, 1, 2);
  CHECK(n.shape() == Shape{2, 3, 2});
  CHECK(n.at(0) == 1);
  CHECK(n.at(5) == 10);
  Tensor e = Tensor::arange(0, 3, 1, DType::f32).reshape({3, 1}).expand({3, 4});
  CHECK(e.strides()[1] == 0);
  CHECK(e.at(7) == 1);
  Tensor c = t.contiguous();
  CHECK(c.is_contiguous());
  for (int64_t i = 0; i < 24; ++i) CHECK(c.at(i) == t.at(i));
  CHECK(x.permute({2, 0, 1}).shape() == Shape{4, 2, 3});
  CHECK(x.unsqueeze(1).shape() == Shape{2, 1, 3, 4});
  CHECK(x.unsqueeze(1).squeeze(1).shape() == Shape{2, 3, 4});
  CHECK(x.select(1, 2).shape() == Shape{2, 4});
  CHECK(x.select(1, 2).at(4) == 20);
  CHECK(x.flatten(1).shape() == Shape{2, 12});
  CHECK(x.reshape({-1, 4}).shape() == Shape{6, 4});
}

TEST_CASE("creation and seeded generators") {
  Generator a(42), b(42);
  Tensor x = Tensor::randn({100}, a), y = Tensor::randn({100}, b);
  for (int64_t i = 0; i < 100; ++i) CHECK(x.at(i) == y.at(i));
  Tensor f = Tensor::full({2, 2}, 3.5);
  CHECK(f.at(3) == 3.5);
  CHECK(Tensor::arange(2, 11, 3).to_vector_i64() == std::vector<int64_t>{2, 5, 8});
  Generator u(7);
  Tensor r = Tensor::uniform({1000}, -1, 1, u);
  CHECK(max(r).item() < 1.0);
  CHECK(max(neg(r)).item() <= 1.0);
  CHECK(std::abs(mean(r).item()) < 0.1);
}

TEST_CASE("backward accumulates, frees the graph and explains misuse") {
  Tensor w = Tensor::from_vector(std::vector<double>{1, 2, 3}, {3});
  w.requires_grad_();
  Tensor y = sum(mul(w, w));
  y.backward(true);
  CHECK(w.grad().to_vector_f64() == std::vector<double>{2, 4, 6});
  y.backward();  // retained once, so this works and accumulates
  CHECK(w.grad().to_vector_f64() == std::vector<double>{4, 8, 12});
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("already freed"), Error);

  Tensor v = mul(w, 2.0);
  CHECK_THROWS_WITH_AS(v.backward(), doctest::Contains("needs a scalar"), Error);
  Tensor c = Tensor::ones({3}, DType::f64);
  CHECK_THROWS_WITH_AS(sum(c).backward(), doctest::Contains("does not require grad"), Error);
  v.backward(Tensor::ones({3}, DType::f64));
  CHECK(w.grad().to_vector_f64() == std::vector<double>{6, 10, 14});

  {
    NoGradGuard ng;
    Tensor z = mul(w, w);
    CHECK_FALSE(z.requires_grad());
  }
  CHECK_FALSE(w.detach().requires_grad());
  CHECK_THROWS_WITH_AS(w.fill_(0), doctest::Contains("in-place write to a tensor that requires grad"), Error);
}

TEST_CASE("shared subexpressions get the sum of their gradients") {
  Tensor x = Tensor::from_vector(std::vector<double>{0.5, -1.5}, {2});
  x.requires_grad_();
  Tensor a = exp(x);
  Tensor y = sum(add(mul(a, a), a));  // d/dx = 2 e^{2x} + e^x
  y.backward();
  for (int i = 0; i < 2; ++i) {
    double xv = x.at(i);
    CHECK(x.grad().at(i) == doctest::Approx(2 * std::exp(2 * xv) + std::exp(xv)).epsilon(1e-12));
  }
}

TEST_CASE("errors name the op and the shapes") {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 3}), c = Tensor::zeros({2, 3}, DType::f64);
  CHECK_THROWS_WITH_AS(add(a, b), doctest::Contains("add: shapes [2, 3] and [4, 3] cannot be broadcast"), Error);
  CHECK_THROWS_WITH_AS(matmul(a, b), doctest::Contains("matmul: inner dimensions differ: [2, 3] @ [4, 3]"), Error);
  CHECK_THROWS_WITH_AS(sum(a, {2}), doctest::Contains("sum: axis 2 is out of range for a tensor with 2 dims"), Error);
  CHECK_THROWS_WITH_AS(softmax(a, -3), doctest::Contains("softmax: axis -3 is out of range"), Error);
  CHECK_THROWS_WITH_AS(mul(a, c), doctest::Contains("mul: dtype mismatch: f32 [2, 3] vs f64 [2, 3]"), Error);
  CHECK_THROWS_WITH_AS(a.view({5}), doctest::Contains("view: shape [5] is invalid"), Error);
  CHECK_THROWS_WITH_AS(a.transpose(0, 1).view({6}), doctest::Contains("not contiguous"), Error);
  Tensor t = Tensor::from_vector(std::vector<int64_t>{0, 3}, {2});
  CHECK_THROWS_WITH_AS(cross_entropy(a, t), doctest::Contains("target[1] = 3 is outside [0, 3)"), Error);
  CHECK_THROWS_WITH_AS(linear(a, Tensor::zeros({4, 2})), doctest::Contains("linear: input [2, 3] has last dim 3"),
                       Error);
  CHECK_THROWS_WITH_AS(gelu_linear(a, Tensor::zeros({4, 3}), Tensor(), Tensor::zeros({2, 3})),
                       doctest::Contains("gelu_linear: residual must have the output's shape [2, 4], got [2, 3]"), Error);
  CHECK_THROWS_WITH_AS(layer_norm(a, Tensor::ones({4}), Tensor()), doctest::Contains("must be [3]"), Error);
  CHECK_THROWS_WITH_AS(index_select(a, 0, Tensor::from_vector(std::vector<int64_t>{2}, {1})),
                       doctest::Contains("index 2 at position 0 is out of range [0, 2)"), Error);
  CHECK_THROWS_WITH_AS(a.expand({3, 3}), doctest::Contains("expand: cannot expand [2, 3] to [3, 3]"), Error);
}

// Every differentiable op, through float64 central differences, broadcasting cases included.
TEST_CASE("gradcheck over every op") {
  using Fn = std::function<Tensor(const std::vector<Tensor>&)>;
  struct Case {
    const char* name;
    Fn fn;
    std::vector<Tensor> inputs;
  };
  Tensor idx = Tensor::from_vector(std::vector<int64_t>{2, 0, 2}, {3});
  Tensor gidx = Tensor::from_vector(std::vector<int64_t>{1, 0, 3, 3, 2, 0}, {2, 3});
  Tensor tgt = Tensor::from_vector(std::vector<int64_t>{1, 0, 3}, {3});
  Tensor cond = Tensor::from_vector(std::vector<double>{1, 0, 0, 1}, {4});
  std::vector<Case> cases = {
      {"add broadcast", [](auto& v) { return add(v[0], v[1]); }, {rnd({2, 3, 4}, 1), rnd({3, 1}, 2)}},
      {"sub broadcast", [](auto& v) { return sub(v[0], v[1]); }, {rnd({4}, 3), rnd({2, 1, 4}, 4)}},
      {"mul broadcast", [](auto& v) { return mul(v[0], v[1]); }, {rnd({2, 3}, 5), rnd({1, 3}, 6)}},
      {"div broadcast", [](auto& v) { return div(v[0], v[1]); }, {rnd({2, 3}, 7), pos({2, 1}, 8)}},
      {"maximum", [](auto& v) { return maximum(v[0], v[1]); }, {rnd({3, 4}, 9), rnd({4}, 10)}},
      {"scalar ops", [](auto& v) { return rsub(mul(add(v[0], 0.5), 3.0), 2.0); }, {rnd({5}, 11)}},
      {"pow", [](auto& v) { return pow(v[0], 2.5); }, {pos({6}, 12)}},
      {"neg", [](auto& v) { return neg(v[0]); }, {rnd({6}, 13)}},
      {"exp", [](auto& v) { return exp(v[0]); }, {rnd({6}, 14)}},
      {"log", [](auto& v) { return log(v[0]); }, {pos({6}, 15)}},
      {"sqrt", [](auto& v) { return sqrt(v[0]); }, {pos({6}, 16)}},
      {"rsqrt", [](auto& v) { return rsqrt(v[0]); }, {pos({6}, 17)}},
      {"tanh", [](auto& v) { return tanh(v[0]); }, {rnd({6}, 18)}},
      {"abs", [](auto& v) { return abs(v[0]); }, {pos({6}, 19)}},
      {"relu", [](auto& v) { return relu(sub(v[0], 1.2)); }, {pos({8}, 20)}},
      {"gelu", [](auto& v) { return gelu(v[0]); }, {rnd({8}, 21)}},
      {"gelu tanh", [](auto& v) { return gelu(v[0], GeluApprox::tanh); }, {rnd({8}, 22)}},
      {"quick_gelu (CLIP)", [](auto& v) { return nn::quick_gelu(v[0]); }, {rnd({8}, 23)}},
      {"sigmoid", [](auto& v) { return sigmoid(v[0]); }, {rnd({8}, 25)}},
      {"norm", [](auto& v) { return norm(v[0]); }, {rnd({2, 3}, 26)}},
      {"operators", [](auto& v) { return -(v[0] * v[1] + 2.0) / 3.0 - v[1] * 0.5 + 1.0 - v[0] / v[1]; },
       {rnd({2, 3}, 27), pos({2, 3}, 28)}},
      {"sum axes keepdim", [](auto& v) { return sum(v[0], {0, 2}, true); }, {rnd({2, 3, 4}, 23)}},
      {"sum all", [](auto& v) { return sum(v[0]); }, {rnd({2, 3}, 24)}},
      {"mean", [](auto& v) { return mean(v[0], {1}); }, {rnd({2, 3, 4}, 25)}},
      {"max", [](auto& v) { return max(v[0], {0, 2}); }, {rnd({3, 2, 4}, 26)}},
      {"var", [](auto& v) { return var(v[0], {1}, true, true); }, {rnd({3, 5}, 27)}},
      {"matmul 2d", [](auto& v) { return matmul(v[0], v[1]); }, {rnd({3, 4}, 28), rnd({4, 5}, 29)}},
      {"matmul batched broadcast", [](auto& v) { return matmul(v[0], v[1]); }, {rnd({2, 1, 3, 4}, 30), rnd({3, 4, 2}, 31)}},
      {"matmul batch @ 2d", [](auto& v) { return matmul(v[0], v[1]); }, {rnd({2, 3, 4}, 32), rnd({4, 2}, 33)}},
      {"matmul 1d", [](auto& v) { return matmul(v[0], v[1]); }, {rnd({4}, 34), rnd({2, 4, 3}, 35)}},
      {"matmul transposed", [](auto& v) { return matmul(v[0].transpose(0, 1), v[1]); }, {rnd({4, 3}, 36), rnd({4, 2}, 37)}},
      {"linear", [](auto& v) { return linear(v[0], v[1], v[2]); }, {rnd({2, 3, 4}, 38), rnd({5, 4}, 39), rnd({5}, 40)}},
      {"gelu_linear", [](auto& v) { return gelu_linear(v[0], v[1], v[2]); },
       {rnd({2, 3, 4}, 150), rnd({5, 4}, 151), rnd({5}, 152)}},
      {"gelu_linear no bias", [](auto& v) { return gelu_linear(v[0], v[1]); }, {rnd({3, 4}, 153), rnd({5, 4}, 154)}},
      {"linear + residual", [](auto& v) { return linear(v[0], v[1], v[2], v[3]); },
       {rnd({2, 3, 4}, 162), rnd({5, 4}, 163), rnd({5}, 164), rnd({2, 3, 5}, 165)}},
      {"gelu_linear + residual", [](auto& v) { return gelu_linear(v[0], v[1], Tensor(), v[2]); },
       {rnd({3, 4}, 166), rnd({5, 4}, 167), rnd({3, 5}, 168)}},
      {"linear + strided residual", [](auto& v) { return linear(v[0], v[1], v[2], v[3].narrow(1, 0, 2)); },
       {rnd({2, 2, 4}, 169), rnd({5, 4}, 170), rnd({5}, 171), rnd({2, 3, 5}, 172)}},
      {"softmax", [](auto& v) { return softmax(v[0], 1); }, {rnd({2, 5, 3}, 41)}},
      {"log_softmax", [](auto& v) { return log_softmax(v[0], -1); }, {rnd({3, 5}, 42)}},
      {"layer_norm", [](auto& v) { return layer_norm(v[0], v[1], v[2], 1e-5); }, {rnd({2, 3, 6}, 43), rnd({6}, 44), rnd({6}, 45)}},
      {"layer_norm_linear", [](auto& v) { return layer_norm_linear(v[0], v[1], v[2], 1e-5, v[3], v[4]); },
       {rnd({2, 3, 6}, 155), rnd({6}, 156), rnd({6}, 157), rnd({4, 6}, 158), rnd({4}, 159)}},
      {"layer_norm_linear plain",
       [](auto& v) { return layer_norm_linear(v[0], Tensor(), Tensor(), 1e-5, v[1]); },
       {rnd({5, 6}, 160), rnd({3, 6}, 161)}},
      {"cross_entropy", [tgt](auto& v) { return cross_entropy(v[0], tgt, 0.1); }, {rnd({3, 4}, 46)}},
      {"attention", [](auto& v) { return scaled_dot_product_attention(v[0], v[1], v[2]); },
       {rnd({2, 2, 3, 4}, 47), rnd({2, 2, 3, 4}, 48), rnd({2, 2, 3, 4}, 49)}},
      {"attention strided", [](auto& v) {
         Tensor q = v[0].permute({0, 2, 1, 3});  // [B, H, N, D] view of [B, N, H, D]
         return scaled_dot_product_attention(q, q, v[1], 0.7);
       }, {rnd({1, 3, 2, 4}, 50), rnd({1, 2, 3, 4}, 51)}},
      {"qkv_attention", [](auto& v) { return qkv_attention(v[0], 2); }, {rnd({2, 3, 12}, 63)}},
      {"qkv_attention one query", [](auto& v) { return qkv_attention(v[0], 2, std::nullopt, 1); },
       {rnd({2, 4, 12}, 162)}},
      {"qkv_attention 3 of 5 queries", [](auto& v) { return qkv_attention(v[0], 3, 0.6, 3); }, {rnd({1, 5, 18}, 163)}},
      {"concat", [](auto& v) { return concat({v[0], v[1]}, 1); }, {rnd({2, 3}, 52), rnd({2, 2}, 53)}},
      {"index_select", [idx](auto& v) { return index_select(v[0], 1, idx); }, {rnd({2, 3, 2}, 54)}},
      {"gather", [gidx](auto& v) { return gather(v[0], 1, gidx); }, {rnd({2, 4}, 55)}},
      {"where", [cond](auto& v) { return where(cond, v[0], v[1]); }, {rnd({3, 4}, 56), rnd({4}, 57)}},
      {"masked_fill", [cond](auto& v) { return masked_fill(v[0], cond, -2.0); }, {rnd({2, 4}, 58)}},
      {"unfold_patches", [](auto& v) { return unfold_patches(v[0], 2); }, {rnd({2, 2, 4, 6}, 59)}},
      {"views", [](auto& v) { return v[0].transpose(0, 1).narrow(0, 1, 2).reshape({-1}).unsqueeze(0).expand({3, 4}); },
       {rnd({2, 3}, 60)}},
      {"permute select", [](auto& v) { return v[0].permute({2, 0, 1}).select(1, 1); }, {rnd({2, 3, 4}, 61)}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    GradcheckResult r = gradcheck(c.fn, c.inputs, 1e-6, 1e-6, 1e-6);
    INFO(r.worst);
    CHECK(r.ok);
  }
}

TEST_CASE("qkv_attention equals split heads + attention + merge") {
  Tensor qkv = rnd({2, 5, 3 * 8}, 64);
  Tensor fused = qkv_attention(qkv, 4);
  Tensor parts = qkv.reshape({2, 5, 3, 4, 2}).permute({2, 0, 3, 1, 4});  // [3, B, H, N, D]
  Tensor ref = scaled_dot_product_attention(parts.select(0, 0), parts.select(0, 1), parts.select(0, 2))
                   .transpose(1, 2)
                   .reshape({2, 5, 8});
  for (int64_t i = 0; i < ref.numel(); ++i) CHECK(fused.at(i) == doctest::Approx(ref.at(i)).epsilon(1e-12));
}

TEST_CASE("qkv_attention with Q queries equals the first Q rows of the full op, gradients included") {
  for (DType dt : {DType::f64, DType::f32}) {
    for (int64_t Q : {1, 4}) {
      CAPTURE(dtype_name(dt));
      CAPTURE(Q);
      const int64_t B = 3, N = 9, C = 12;
      Tensor qkv_full = rnd({B, N, 3 * C}, 170, dt).requires_grad_(true);
      Tensor qkv_part = qkv_full.detach().clone().requires_grad_(true);
      Tensor w = rnd({B, Q, C}, 171, dt);
      Tensor full = qkv_attention(qkv_full, 3).narrow(1, 0, Q);
      Tensor part = qkv_attention(qkv_part, 3, std::nullopt, Q);
      REQUIRE(part.shape() == Shape{B, Q, C});
      sum(mul(full, w)).backward();
      sum(mul(part, w)).backward();
      const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
      for (int64_t i = 0; i < part.numel(); ++i) CHECK(part.at(i) == doctest::Approx(full.at(i)).epsilon(tol));
      Tensor gf = qkv_full.grad(), gp = qkv_part.grad();
      double worst = 0, scale = 0;
      for (int64_t i = 0; i < gf.numel(); ++i) {
        worst = std::max(worst, std::abs(gf.at(i) - gp.at(i)));
        scale = std::max(scale, std::abs(gf.at(i)));
      }
      CHECK(worst <= tol * scale);
      // The q columns of rows past the queries get exactly zero.
      for (int64_t b = 0; b < B; ++b)
        for (int64_t n = Q; n < N; ++n)
          for (int64_t c = 0; c < C; ++c) CHECK(gp.at((b * N + n) * 3 * C + c) == 0.0);
    }
  }
  CHECK_THROWS_WITH_AS(qkv_attention(rnd({1, 4, 6}, 1), 1, std::nullopt, 5),
                       doctest::Contains("queries must be -1 (all 4 tokens) or in [1, 4], got 5"), Error);
}

TEST_CASE("sums over empty dimensions") {
  Tensor x = Tensor::zeros({3, 4, 0});
  CHECK(sum(x, {1}).shape() == Shape{3, 0});                // nothing to write
  Tensor y = sum(Tensor::zeros({3, 0, 5}), {1});              // an empty sum is 0
  CHECK(y.shape() == Shape{3, 5});
  for (int64_t i = 0; i < y.numel(); ++i) CHECK(y.at(i) == 0.0);
}

TEST_CASE("float32 exp, GELU and softmax stay within a few ulp of float64") {
  // The float kernels use their own vectorizable exp and erf; check them over the whole float range.
  std::vector<float> xs;
  for (double v = -104.0; v <= 88.7; v += 0.0371) xs.push_back(static_cast<float>(v));
  xs.resize(xs.size() / 7 * 7);  // softmax below takes rows of 7
  Tensor x32 = Tensor::from_vector(xs, {static_cast<int64_t>(xs.size())});
  Tensor x64 = x32.to(DType::f64);
  auto worst_rel = [](const Tensor& a32, const Tensor& a64, double floor) {
    double w = 0;
    for (int64_t i = 0; i < a64.numel(); ++i) {
      double ref = a64.at(i);
      w = std::max(w, std::abs(double(a32.at(i)) - ref) / std::max(std::abs(ref), floor));
    }
    return w;
  };
  CHECK(worst_rel(exp(x32), exp(x64), 1e-37) < 4e-7);  // ~3 ulp; results below 1e-37 are checked absolutely
  Tensor g32 = gelu(div(x32, Tensor::full({}, 10.0f))), g64 = gelu(div(x64, Tensor::full({}, 10.0, DType::f64)));
  // GELU: within 2e-6 absolute below 1 (the rational erf is ~7 float ulp off near +-1, which shows in the
  // negative tail's tiny values) and within 2e-6 relative above.
  CHECK(worst_rel(g32, g64, 1.0) < 2e-6);
  Tensor s32 = softmax(x32.reshape({-1, 7}), 1), s64 = softmax(x64.reshape({-1, 7}), 1);
  CHECK(worst_rel(s32, s64, 1e-30) < 1e-5);
  // The edges: exp(-inf) = 0, exp(+inf) = inf, exp(nan) = nan, exp(0) = 1 exactly.
  Tensor e = exp(Tensor::from_vector(std::vector<float>{-INFINITY, INFINITY, NAN, 0.0f, -200.0f, 100.0f}, {6}));
  CHECK(e.at(0) == 0.0);
  CHECK(std::isinf(e.at(1)));
  CHECK(std::isnan(e.at(2)));
  CHECK(e.at(3) == 1.0);
  CHECK(e.at(4) == 0.0);
  CHECK(std::isinf(e.at(5)));
}

TEST_CASE("float32 attention (forward and backward) matches float64 at awkward sizes") {
  // The float kernels differ from the double ones (per-head AVX2 products where the CPU has them, BLAS
  // otherwise): row counts that are not multiples of the 6-row tile, key counts and head dims that leave a
  // partial 16-wide block, cross attention (N != M), strided views, and vit_tiny's 197 tokens.
  struct Shape5 { int64_t B, H, N, M, D; };
  for (Shape5 s : {Shape5{2, 3, 7, 7, 24}, Shape5{1, 2, 13, 5, 8}, Shape5{2, 1, 50, 50, 64}, Shape5{1, 1, 197, 197, 64},
                   Shape5{1, 2, 1, 33, 17}}) {
    CAPTURE(s.N);
    CAPTURE(s.M);
    CAPTURE(s.D);
    // q is a view into a wider tensor, so its rows are strided, as in qkv_attention.
    Tensor wide = rnd({s.B, s.H, s.N, 2 * s.D}, 170);
    std::vector<Tensor> in64 = {wide.narrow(3, 0, s.D), rnd({s.B, s.H, s.M, s.D}, 171), rnd({s.B, s.H, s.M, s.D}, 172)};
    std::vector<Tensor> in32 = {wide.to(DType::f32).narrow(3, 0, s.D), in64[1].to(DType::f32), in64[2].to(DType::f32)};
    for (auto* v : {&in64, &in32})
      for (Tensor& t : *v) t = t.detach().requires_grad_();
    Tensor r64 = rnd({s.B, s.H, s.N, s.D}, 173);
    Tensor o64 = scaled_dot_product_attention(in64[0], in64[1], in64[2]);
    Tensor o32 = scaled_dot_product_attention(in32[0], in32[1], in32[2]);
    sum(mul(o64, r64)).backward();
    sum(mul(o32, r64.to(DType::f32))).backward();
    auto worst = [](const Tensor& a32, const Tensor& a64) {
      double w = 0, scale = 1e-30;
      for (int64_t i = 0; i < a64.numel(); ++i) {
        w = std::max(w, std::abs(double(a32.contiguous().at(i)) - a64.contiguous().at(i)));
        scale = std::max(scale, std::abs(double(a64.contiguous().at(i))));
      }
      return w / scale;
    };
    CHECK(worst(o32, o64) < 1e-5);
    for (int i = 0; i < 3; ++i) CHECK(worst(in32[i].grad(), in64[i].grad()) < 1e-5);
  }
}

TEST_CASE("gradcheck catches a wrong gradient") {
  // x * x.detach() has the true derivative 2x but autograd sees only x: the checker must flag it.
  GradcheckResult r = gradcheck([](auto& v) { return mul(v[0], v[0].detach()); }, {rnd({4}, 70)});
  CHECK_FALSE(r.ok);
  CHECK(r.worst.find("analytic") != std::string::npos);
}

namespace {
// Two Gaussian-ish clusters per class on a ring: separable by a small MLP, not by a line.
std::pair<Tensor, Tensor> ring_data(int64_t n, uint64_t seed) {
  Generator g(seed);
  std::vector<float> x(n * 2);
  std::vector<int64_t> y(n);
  for (int64_t i = 0; i < n; ++i) {
    int64_t c = i % 2;
    double r = c == 0 ? 1.0 : 2.5, th = 2 * M_PI * g.next_double();
    x[2 * i] = static_cast<float>(r * std::cos(th) + 0.15 * g.next_normal());
    x[2 * i + 1] = static_cast<float>(r * std::sin(th) + 0.15 * g.next_normal());
    y[i] = c;
  }
  return {Tensor::from_vector(x, {n, 2}), Tensor::from_vector(y, {n})};
}

std::pair<std::vector<float>, double> train_mlp(uint64_t seed) {
  auto [x, y] = ring_data(512, 3);
  Generator g(seed);
  Tensor w1 = mul(Tensor::randn({32, 2}, g), 0.7), b1 = Tensor::zeros({32});
  Tensor w2 = mul(Tensor::randn({2, 32}, g), 0.2), b2 = Tensor::zeros({2});
  std::vector<Tensor*> params{&w1, &b1, &w2, &b2};
  for (Tensor* p : params) p->requires_grad_();
  std::vector<float> losses;
  for (int step = 0; step < 300; ++step) {
    Tensor loss = cross_entropy(linear(relu(linear(x, w1, b1)), w2, b2), y);
    for (Tensor* p : params) p->zero_grad();
    loss.backward();
    losses.push_back(static_cast<float>(loss.item()));
    NoGradGuard ng;
    for (Tensor* p : params) p->copy_(sub(*p, mul(p->grad(), 0.5)));
  }
  NoGradGuard ng;
  Tensor pred = argmax(linear(relu(linear(x, w1, b1)), w2, b2), 1);
  int64_t correct = 0;
  for (int64_t i = 0; i < 512; ++i) correct += pred.to_vector_i64()[i] == y.to_vector_i64()[i];
  return {losses, correct / 512.0};
}
}  // namespace

TEST_CASE("a 2-layer MLP learns a non-linear problem with SGD, deterministically") {
  auto [loss_a, acc_a] = train_mlp(11);
  auto [loss_b, acc_b] = train_mlp(11);
  MESSAGE("MLP: loss ", loss_a.front(), " -> ", loss_a.back(), ", train accuracy ", acc_a);
  CHECK(acc_a > 0.95);
  CHECK(loss_a.back() < 0.5 * loss_a.front());
  CHECK(loss_a == loss_b);  // bit-identical: std::vector<float> compares exactly
  CHECK(acc_a == acc_b);
}

}  // TEST_SUITE
