// The reference paths a student reads, tested equal to the fused paths the library runs: attention (matmul,
// softmax, matmul) against the fused attention ops, the ViT block written module by module against
// Block::forward, and Adam / AdamW / SPD as plain loops (optim/reference.h) against the optimizers' kernels.
// Each at three shapes, in float32 and float64; values and gradients.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "kernels/cpu/common.h"
#include "kernels/threads.h"
#include "nn/layers.h"
#include "optim/reference.h"

using namespace spdlab;

namespace {

double max_rel_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double m = 0, scale = 1e-30;
  for (int64_t i = 0; i < a.numel(); ++i) {
    m = std::max(m, std::abs(a.at(i) - b.at(i)));
    scale = std::max(scale, std::abs(b.at(i)));
  }
  return m / scale;  // relative to the largest value
}

// Values and the gradients of sum(out * r) with respect to every input, for two functions of the same inputs.
struct Compared {
  double value = 0, grad = 0;
};
Compared compare(const std::function<Tensor(const std::vector<Tensor>&)>& fast,
                 const std::function<Tensor(const std::vector<Tensor>&)>& ref, const std::vector<Tensor>& inputs,
                 uint64_t seed) {
  auto run = [&](const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor>& grads) {
    std::vector<Tensor> leaves;
    for (const Tensor& t : inputs) leaves.push_back(t.detach().clone().requires_grad_(true));
    Tensor out = f(leaves);
    Generator gen(seed);
    Tensor r = Tensor::randn(out.shape(), gen, out.dtype());
    sum(mul(out, r)).backward();
    for (const Tensor& l : leaves) grads.push_back(l.grad());
    return out.detach();
  };
  std::vector<Tensor> ga, gb;
  Tensor a = run(fast, ga), b = run(ref, gb);
  Compared c;
  c.value = max_rel_diff(a, b);
  for (size_t i = 0; i < ga.size(); ++i) c.grad = std::max(c.grad, max_rel_diff(ga[i], gb[i]));
  return c;
}

double tolerance(DType dt) { return dt == DType::f64 ? 1e-12 : 2e-5; }

}  // namespace

TEST_SUITE("reference_paths") {

TEST_CASE("attention_reference equals scaled_dot_product_attention and qkv_attention, values and gradients") {
  struct Shape5 {
    int64_t B, H, N, M, D;
  };
  for (DType dt : {DType::f32, DType::f64})
    for (Shape5 s : {Shape5{1, 1, 3, 3, 4}, Shape5{2, 3, 5, 7, 8}, Shape5{2, 2, 17, 17, 16}}) {
      Generator gen(s.N * 31 + s.D);
      std::vector<Tensor> qkv = {Tensor::randn({s.B, s.H, s.N, s.D}, gen, dt), Tensor::randn({s.B, s.H, s.M, s.D}, gen, dt),
                                 Tensor::randn({s.B, s.H, s.M, s.D}, gen, dt)};
      Compared c = compare([](const std::vector<Tensor>& v) { return scaled_dot_product_attention(v[0], v[1], v[2]); },
                           [](const std::vector<Tensor>& v) { return attention_reference(v[0], v[1], v[2]); }, qkv, 7);
      CAPTURE(dt);
      CAPTURE(s.N);
      MESSAGE("attention ", std::string(dtype_name(dt)), " N ", s.N, ": values ", c.value, ", gradients ", c.grad, " (max relative)");
      CHECK(c.value < tolerance(dt));
      CHECK(c.grad < tolerance(dt));
      if (s.N != s.M) continue;
      // The fused form a ViT runs: qkv [B, N, 3C] with the heads inside each third.
      const int64_t C = s.H * s.D;
      Tensor packed = Tensor::randn({s.B, s.N, 3 * C}, gen, dt);
      const int64_t H = s.H, B = s.B, N = s.N, D = s.D;
      Compared p = compare([H](const std::vector<Tensor>& v) { return qkv_attention(v[0], H); },
                           [=](const std::vector<Tensor>& v) {
                             Tensor h = v[0].reshape({B, N, 3, H, D}).permute({2, 0, 3, 1, 4});
                             Tensor a = attention_reference(h.select(0, 0), h.select(0, 1), h.select(0, 2));
                             return a.transpose(1, 2).reshape({B, N, H * D});
                           },
                           {packed}, 8);
      CHECK(p.value < tolerance(dt));
      CHECK(p.grad < tolerance(dt));
    }
}

TEST_CASE("attention's backward gets forward's probabilities bit for bit, kept or recomputed") {
  // The CPU kernel keeps the probabilities p of heads of at most 4096 (attention_keeps_probabilities); of larger
  // ones it keeps two numbers per query row, and backward computes p again. With v the identity (N = M = D),
  // forward's out is p itself; with out's gradient the identity too, v's gradient p^T dout is p transposed. Both
  // products only add exact zeros, so v.grad = out^T holds to the bit exactly when backward's p is forward's, in
  // the right head. Shapes: small heads kept (N = 24, 19), recomputed by the AVX2 kernels (N = 65: 4225 > 4096)
  // and by OpenBLAS's (f64 at N = 70; a head past 1024 tokens).
  struct Case {
    DType dt;
    int64_t B, H, N;
  };
  CHECK(cpu::attention_keeps_probabilities(64, 64));
  CHECK(!cpu::attention_keeps_probabilities(65, 65));
  for (Case c : {Case{DType::f32, 2, 3, 24}, Case{DType::f64, 2, 2, 19}, Case{DType::f32, 2, 2, 65},
                 Case{DType::f64, 1, 2, 70}, Case{DType::f32, 1, 1, 1030}}) {
    CAPTURE(c.N);
    const int64_t N = c.N;
    Generator gen(N);
    Tensor q = Tensor::randn({c.B, c.H, N, N}, gen, c.dt), k = Tensor::randn({c.B, c.H, N, N}, gen, c.dt);
    Tensor eye = Tensor::zeros({N, N}, c.dt);
    for (int64_t i = 0; i < N; ++i) eye.narrow(0, i, 1).narrow(1, i, 1).fill_(1.0);
    Tensor v = eye.reshape({1, 1, N, N}).expand({c.B, c.H, N, N}).contiguous().requires_grad_(true);
    Tensor out = scaled_dot_product_attention(q, k, v);
    sum(mul(out, eye.reshape({1, 1, N, N}).expand({c.B, c.H, N, N}))).backward();
    Tensor p = out.detach().contiguous(), pt = v.grad().transpose(2, 3).contiguous();
    int64_t differ = 0;
    for (int64_t i = 0; i < p.numel(); ++i) differ += p.at(i) != pt.at(i);
    CHECK(differ == 0);
    CHECK(p.at(1) > 0);  // not a vacuous comparison of zeros
  }
}

TEST_CASE("Block::forward_reference equals Block::forward, values and gradients (input and every weight)") {
  struct BlockShape {
    int64_t dim, heads, tokens, batch;
  };
  for (DType dt : {DType::f32, DType::f64})
    for (BlockShape s : {BlockShape{8, 1, 3, 1}, BlockShape{24, 3, 10, 2}, BlockShape{64, 4, 17, 2}}) {
      Generator gen(s.dim);
      nn::Block block(s.dim, s.heads, 4.0, 1e-6, 0.0, gen, nullptr);
      // Weights far from their initial scale, so every path carries signal.
      {
        autograd::NoGradGuard ng;
        for (auto& [n, t] : block.named_parameters()) t.copy_(mul(Tensor::randn(t.shape(), gen), 0.3));
      }
      block.to(dt);
      Tensor x = Tensor::randn({s.batch, s.tokens, s.dim}, gen, dt);
      Compared c = compare([&](const std::vector<Tensor>& v) { return block.forward(v[0]); },
                           [&](const std::vector<Tensor>& v) { return block.forward_reference(v[0]); }, {x}, 9);
      CAPTURE(dt);
      CAPTURE(s.dim);
      MESSAGE("block ", std::string(dtype_name(dt)), " dim ", s.dim, ": values ", c.value, ", input gradient ", c.grad, " (max relative)");
      CHECK(c.value < tolerance(dt));
      CHECK(c.grad < tolerance(dt));
      // The weights' gradients too: one backward through each path, compared tensor by tensor.
      auto weight_grads = [&](bool reference) {
        for (auto& [n, t] : block.named_parameters()) t.zero_grad();
        Generator g2(11);
        Tensor out = reference ? block.forward_reference(x) : block.forward(x);
        sum(mul(out, Tensor::randn(out.shape(), g2, dt))).backward();
        std::vector<Tensor> grads;
        for (auto& [n, t] : block.named_parameters()) grads.push_back(t.grad().clone());
        return grads;
      };
      const std::vector<Tensor> fast = weight_grads(false), ref = weight_grads(true);
      double worst = 0;
      for (size_t i = 0; i < fast.size(); ++i) worst = std::max(worst, max_rel_diff(fast[i], ref[i]));
      MESSAGE("block ", std::string(dtype_name(dt)), " dim ", s.dim, ": weight gradients ", worst, " (max relative)");
      CHECK(worst < tolerance(dt));
    }
}

TEST_CASE("a residual added in the product's epilogue equals adding it after the product, bit for bit") {
  // Block::forward adds the residual stream inside proj's and fc2's products; Block::forward_reference adds it
  // after them. Float addition commutes, so the two must agree to the bit, values and every gradient. Shapes:
  // below and above the size where the AVX2 kernels run spdlab's own SGEMM (the composed path, the fused one).
  struct Case {
    DType dt;
    int64_t rows, in, out;
  };
  for (Case c : {Case{DType::f32, 6, 8, 5}, Case{DType::f32, 200, 192, 96}, Case{DType::f64, 40, 32, 24}})
    for (bool gelu_first : {false, true}) {
      CAPTURE(c.rows);
      CAPTURE(gelu_first);
      Generator gen(c.rows + c.in);
      const Tensor x0 = Tensor::randn({2, c.rows / 2, c.in}, gen, c.dt), w0 = Tensor::randn({c.out, c.in}, gen, c.dt),
                   b0 = Tensor::randn({c.out}, gen, c.dt), r0 = Tensor::randn({2, c.rows / 2, c.out}, gen, c.dt),
                   dy = Tensor::randn({2, c.rows / 2, c.out}, gen, c.dt);
      auto run = [&](bool fused) {
        std::vector<Tensor> v;
        for (const Tensor& t : {x0, w0, b0, r0}) v.push_back(t.clone().requires_grad_(true));
        Tensor out = fused ? (gelu_first ? gelu_linear(v[0], v[1], v[2], v[3]) : linear(v[0], v[1], v[2], v[3]))
                           : add(v[3], gelu_first ? gelu_linear(v[0], v[1], v[2]) : linear(v[0], v[1], v[2]));
        sum(mul(out, dy)).backward();
        std::vector<Tensor> all{out.detach()};
        for (const Tensor& t : v) all.push_back(t.grad());
        return all;
      };
      const std::vector<Tensor> fused = run(true), after = run(false);
      for (size_t i = 0; i < fused.size(); ++i) {
        CAPTURE(i);  // 0: the output, then the gradients of x, w, bias, residual
        int64_t differ = 0;
        for (int64_t j = 0; j < fused[i].numel(); ++j) differ += fused[i].at(j) != after[i].at(j);
        CHECK(differ == 0);
      }
      CHECK(max_rel_diff(fused[4], dy) == 0.0);  // the residual's gradient is out's
    }
}

TEST_CASE("Adam, AdamW and SPD steps equal their plain-loop references, in float and in double") {
  int projected = 0;  // SPD steps that fired with r > 0, over every shape
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{7}, std::vector<int64_t>{16, 9}, std::vector<int64_t>{3, 40, 11}}) {
    for (const std::string kind : {"adam", "adamw", "spd"}) {
      Generator gen(static_cast<uint64_t>(shape.back()));
      Tensor w = Tensor::randn(shape, gen);
      const int64_t n = w.numel();
      std::vector<float> w32 = w.to_vector_f32(), anchor32 = w32;
      std::vector<double> w64(w32.begin(), w32.end()), anchor64 = w64;
      Tensor param = w.clone().requires_grad_(true);
      optim::AdamOptions adam{.lr = 0.05, .weight_decay = kind == "spd" ? 0.0 : 0.1,
                              .decoupled = kind == "adamw"};
      optim::SPDOptions spd_opt{.adam = {.lr = 0.05}, .lambda = 0.7};
      std::unique_ptr<optim::Optimizer> fast;
      if (kind == "spd") fast = std::make_unique<optim::SPD>(optim::NamedTensors{{"w", param}}, spd_opt);
      else fast = std::make_unique<optim::Adam>(optim::NamedTensors{{"w", param}}, adam);
      fast->capture_anchors();
      optim::reference::AdamState<float> s32;
      optim::reference::AdamState<double> s64;
      int fired = 0;
      for (int step = 0; step < 6; ++step) {
        Tensor g = Tensor::randn(shape, gen);
        // Every other step a gradient along w - w0 (its descent leads back towards w0), so SPD's condition
        // c = -<g, w - w0> < 0 fires there; the random steps take either value.
        if (step % 2 == 1) g = mul(sub(param.detach(), Tensor::from_vector(anchor32, shape)), 3.0);
        const std::vector<float> g32 = g.to_vector_f32();
        const std::vector<double> g64(g32.begin(), g32.end());
        param.set_grad(g);
        fast->step();
        if (kind == "spd") {
          const auto r32 = optim::reference::spd_step(w32, g32, anchor32, s32, spd_opt);
          const auto r64 = optim::reference::spd_step(w64, g64, anchor64, s64, spd_opt);
          const optim::TensorStats& st = fast->stats()[0];  // the base class's accessor
          CHECK(st.fired_last == r64.fired);
          CHECK(st.c == doctest::Approx(r64.c).epsilon(1e-4));
          CHECK(st.r == doctest::Approx(r64.r).epsilon(1e-4).scale(1e-6));  // this step's r: 0 when it did not fire
          CHECK(r32.fired == r64.fired);
          if (r64.fired) {
            if (r64.r > 0) {
              CHECK(st.last_r == doctest::Approx(r64.r).epsilon(1e-4));
              ++projected;
            }
            ++fired;
          }
        } else {
          CHECK(fast->stats().empty());  // Adam keeps no diagnostics
          optim::reference::adam_step(w32, g32, s32, adam);
          optim::reference::adam_step(w64, g64, s64, adam);
        }
        const std::vector<float> got = param.detach().to_vector_f32();
        double err32 = 0, err64 = 0, scale = 0;
        for (int64_t i = 0; i < n; ++i) {
          err32 = std::max(err32, std::abs(double(got[i]) - double(w32[i])));
          err64 = std::max(err64, std::abs(double(got[i]) - w64[i]));
          scale = std::max(scale, std::abs(w64[i]));
        }
        CAPTURE(kind);
        CAPTURE(step);
        CAPTURE(n);
        if (step == 5) MESSAGE(kind, " n ", n, " after 6 steps: fused vs float reference ", err32 / scale,
                               ", vs double reference ", err64 / scale, " (max relative)");
        CHECK(err32 / scale < 1e-6);  // the same float arithmetic, up to the order of a few operations
        CHECK(err64 / scale < 1e-5);  // float against double
      }
      if (kind == "spd") CHECK(fired >= 2);
    }
  }
  CHECK(projected >= 2);
}

TEST_CASE("eq, sigmoid and the method forms") {
  const Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2});
  const Tensor b = Tensor::from_vector(std::vector<float>{1, 0, 3, 5}, {2, 2});
  CHECK(eq(a, b).to_vector_f32() == std::vector<float>{1, 0, 1, 0});
  CHECK(eq(a, Tensor::full({}, 3.0)).to_vector_f32() == std::vector<float>{0, 0, 1, 0});
  CHECK(sigmoid(Tensor::zeros({1})).item() == 0.5);
  CHECK(a.matmul(b).to_vector_f32() == matmul(a, b).to_vector_f32());
  CHECK(a.sum().item() == 10);
  CHECK(a.mean().item() == 2.5);
  CHECK(norm(a).item() == doctest::Approx(std::sqrt(30.0)));
}

TEST_CASE("elementwise kernels share a long row among the threads: add, mul, where and copies equal a plain loop") {
  // Rows fewer than the threads (a contiguous tensor is one row) are cut into spans of columns (kernels/cpu/
  // iter.h); every element must still be its own operation, on 1 thread and on 2, whatever the cut.
  const int threads = get_num_threads();
  Generator gen(7);
  const int64_t n = 70001;  // > 2 x 32768 elements a row, and no multiple of a span
  const Tensor a = Tensor::randn({3, n}, gen), b = Tensor::randn({3, n}, gen), row = Tensor::randn({1, n}, gen),
               col = Tensor::randn({3, 1}, gen);
  std::vector<float> pattern(3 * n);  // where() picks from both sides: every third element from a
  for (int64_t k = 0; k < 3 * n; ++k) pattern[k] = k % 3 == 0 ? 1.0f : 0.0f;
  const Tensor mask = Tensor::from_vector(pattern, {3, n});
  for (int t : {1, 2}) {
    set_num_threads(t);
    CAPTURE(t);
    const Tensor sum_ab = add(a, b), prod_row = mul(a, row), sum_col = add(a, col),
                 chosen = where(mask, a, b), twice = add(a.transpose(0, 1).contiguous(), a.transpose(0, 1)),
                 as_f64 = a.to(DType::f64);
    int64_t wrong = 0;
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < n; ++j) {
        const int64_t k = i * n + j;
        const float x = static_cast<float>(a.at(k)), y = static_cast<float>(b.at(k));
        wrong += sum_ab.at(k) != static_cast<double>(x + y);
        wrong += prod_row.at(k) != static_cast<double>(x * static_cast<float>(row.at(j)));
        wrong += sum_col.at(k) != static_cast<double>(x + static_cast<float>(col.at(i)));
        wrong += chosen.at(k) != (mask.at(k) != 0 ? a.at(k) : b.at(k));
        wrong += twice.at(j * 3 + i) != static_cast<double>(x + x);
        wrong += as_f64.at(k) != a.at(k);
      }
    CHECK(wrong == 0);
  }
  set_num_threads(threads);
}

}  // TEST_SUITE
