// spdlab's own SGEMM (kernels/cpu/sgemm.h, gemm.h): the packed version, on its AVX2 tile and on its AVX-512
// tile, equals the plain-loop reference bit for bit, on every transpose, edge tiles, several K blocks, strided
// operands, each prologue and epilogue; the reference agrees with a double-precision product; results do not
// depend on the thread count; and the composed gemm_ex every other backend runs agrees with the fused one to
// float rounding.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/ops.h"
#include "core/tensor.h"
#include "kernels/cpu/sgemm.h"
#include "kernels/kernels.h"
#include "kernels/threads.h"

using namespace spdlab;
using GemmEx = kernels::Kernels::GemmEx;
using Prologue = kernels::Kernels::Prologue;

namespace {

std::vector<float> random_floats(size_t n, uint64_t seed, float scale = 1.0f) {
  Generator g(seed);
  Tensor t = Tensor::randn({static_cast<int64_t>(n)}, g);
  std::vector<float> v(t.data<float>(), t.data<float>() + n);
  for (float& x : v) x *= scale;
  return v;
}

// One product's operands and epilogue data; `stored` sizes come from the transposes.
struct Case {
  bool ta, tb;
  int64_t M, N, K, pad;  // pad: extra elements on every leading dimension
  Prologue::Kind pa = Prologue::none, pb = Prologue::none;
  bool bias = false, gelu_grad = false, accumulate = false, residual = false;
  bool stats = false;  // a layer-norm prologue computes its statistics (forward's mean_out / rstd_out)
};

struct Operands {
  std::vector<float> A, B, C0, bias, aux, res, gamma_a, beta_a, gamma_b, beta_b;
  std::vector<double> mean_a, rstd_a, mean_b, rstd_b;
  int64_t lda, ldb, ldc;
  GemmEx ex;
};

// Layer-norm statistics of each stored row, as layer_norm_fwd would save them.
void row_stats(const std::vector<float>& X, int64_t rows, int64_t cols, int64_t ld, std::vector<double>& mean,
               std::vector<double>& rstd) {
  mean.resize(rows);
  rstd.resize(rows);
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0, v = 0;
    for (int64_t c = 0; c < cols; ++c) s += X[r * ld + c];
    mean[r] = s / cols;
    for (int64_t c = 0; c < cols; ++c) v += (X[r * ld + c] - mean[r]) * (X[r * ld + c] - mean[r]);
    rstd[r] = 1.0 / std::sqrt(v / cols + 1e-6);
  }
}

Operands make(const Case& c, uint64_t seed) {
  Operands o;
  const int64_t ar = c.ta ? c.K : c.M, ac = c.ta ? c.M : c.K, br = c.tb ? c.N : c.K, bc = c.tb ? c.K : c.N;
  o.lda = ac + c.pad;
  o.ldb = bc + c.pad;
  o.ldc = c.gelu_grad || c.bias || c.residual ? c.N : c.N + c.pad;
  o.A = random_floats(ar * o.lda, seed);
  o.B = random_floats(br * o.ldb, seed + 1);
  o.C0 = random_floats(c.M * o.ldc, seed + 2);
  o.bias = random_floats(c.N, seed + 3);
  o.aux = random_floats(c.M * o.ldc, seed + 4, 2.0f);
  o.res = random_floats(c.M * o.ldc, seed + 9, 3.0f);
  auto prologue = [&](Prologue::Kind kind, const std::vector<float>& X, int64_t rows, int64_t cols, int64_t ld,
                      std::vector<double>& mean, std::vector<double>& rstd, std::vector<float>& gamma,
                      std::vector<float>& beta, uint64_t s) {
    Prologue p;
    p.kind = kind;
    if (kind == Prologue::layer_norm) {
      row_stats(X, rows, cols, ld, mean, rstd);
      gamma = random_floats(cols, s);
      beta = random_floats(cols, s + 1);
      if (c.stats) {  // the product must compute them: it starts from NaN
        mean.assign(rows, std::nan(""));
        rstd.assign(rows, std::nan(""));
        p.mean_out = mean.data();
        p.rstd_out = rstd.data();
      } else {
        p.mean = mean.data();
        p.rstd = rstd.data();
      }
      p.gamma = gamma.data();
      p.beta = beta.data();
      p.eps = 1e-6;
    }
    return p;
  };
  o.ex.a = prologue(c.pa, o.A, ar, ac, o.lda, o.mean_a, o.rstd_a, o.gamma_a, o.beta_a, seed + 5);
  o.ex.b = prologue(c.pb, o.B, br, bc, o.ldb, o.mean_b, o.rstd_b, o.gamma_b, o.beta_b, seed + 7);
  o.ex.bias = c.bias ? o.bias.data() : nullptr;
  o.ex.gelu_grad = c.gelu_grad ? o.aux.data() : nullptr;
  o.ex.accumulate = c.accumulate;
  o.ex.residual = c.residual ? o.res.data() : nullptr;
  return o;
}

using SgemmFn = void (*)(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, float*,
                         int64_t, const GemmEx&);

std::vector<float> run(SgemmFn f, const Case& c, const Operands& o) {
  std::vector<float> C = o.C0;
  f(c.ta, c.tb, c.M, c.N, c.K, o.A.data(), o.lda, o.B.data(), o.ldb, C.data(), o.ldc, o.ex);
  return C;
}

// The same product in double from the definition, for checking the reference itself.
std::vector<double> exact(const Case& c, const Operands& o) {
  std::vector<double> stats[4];  // mean and rstd of A's and of B's stored rows
  row_stats(o.A, c.ta ? c.K : c.M, c.ta ? c.M : c.K, o.lda, stats[0], stats[1]);
  row_stats(o.B, c.tb ? c.N : c.K, c.tb ? c.K : c.N, o.ldb, stats[2], stats[3]);
  auto pro = [&](const Prologue& p, const std::vector<float>& X, int64_t ld, int64_t r, int64_t col, const float* g,
                 const float* b) -> double {
    double x = X[r * ld + col];
    if (p.kind == Prologue::gelu) return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    const std::vector<double>* st = &X == &o.A ? stats : stats + 2;
    if (p.kind == Prologue::layer_norm) return (x - st[0][r]) * st[1][r] * g[col] + b[col];
    return x;
  };
  std::vector<double> out(c.M * o.ldc);
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      double s = c.accumulate ? o.C0[i * o.ldc + j] : 0.0;
      for (int64_t k = 0; k < c.K; ++k)
        s += (c.ta ? pro(o.ex.a, o.A, o.lda, k, i, o.gamma_a.data(), o.beta_a.data())
                   : pro(o.ex.a, o.A, o.lda, i, k, o.gamma_a.data(), o.beta_a.data())) *
             (c.tb ? pro(o.ex.b, o.B, o.ldb, j, k, o.gamma_b.data(), o.beta_b.data())
                   : pro(o.ex.b, o.B, o.ldb, k, j, o.gamma_b.data(), o.beta_b.data()));
      if (c.bias) s += o.bias[j];
      if (c.gelu_grad) {
        double x = o.aux[i * o.ldc + j];
        s *= 0.5 * (1 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
      }
      if (c.residual) s += o.res[i * o.ldc + j];
      out[i * o.ldc + j] = s;
    }
  return out;
}

std::vector<Case> cases() {
  std::vector<Case> cs;
  // Shapes around the 6x16 and 6x32 tiles and the 120-row and 256-deep blocks, each transpose pair.
  const int64_t shapes[][3] = {{1, 1, 1}, {5, 15, 3}, {6, 16, 256}, {7, 17, 257}, {13, 33, 100},
                               {121, 40, 520}, {30, 129, 64}, {64, 48, 0}, {12, 64, 513}};
  for (auto& s : shapes)
    for (int t = 0; t < 4; ++t) cs.push_back({(t & 1) != 0, (t & 2) != 0, s[0], s[1], s[2], t == 3 ? 3 : 0});
  // Prologues and epilogues on the ViT's product forms (forward, input gradient, weight gradient).
  cs.push_back({false, true, 37, 50, 70, 0, Prologue::layer_norm, Prologue::none, true});        // ln -> qkv/fc1
  cs.push_back({false, true, 37, 50, 300, 0, Prologue::gelu, Prologue::none, true});             // gelu -> fc2
  cs.push_back({false, false, 37, 50, 70, 0, Prologue::none, Prologue::none, false, true});      // fc2 dx -> dh
  cs.push_back({true, false, 50, 40, 300, 0, Prologue::none, Prologue::gelu});                  // fc2 dW
  cs.push_back({true, false, 50, 40, 300, 2, Prologue::none, Prologue::layer_norm});            // qkv/fc1 dW
  cs.push_back({false, false, 40, 50, 30, 1, Prologue::layer_norm, Prologue::gelu});            // both, strided
  cs.push_back({true, true, 23, 19, 260, 0, Prologue::gelu, Prologue::layer_norm, true, true});  // everything
  // A transposed A read in place (no prologue) with a short last panel, under bias, C += and residual.
  cs.push_back({true, false, 23, 45, 260, 1, Prologue::none, Prologue::layer_norm, true, false, true, true});
  cs.push_back({true, false, 30, 400, 300, 1});  // a transposed A against more than 384 columns: packed
  cs.push_back({false, true, 20, 30, 300, 2, Prologue::none, Prologue::none, false, false, true});  // C +=
  cs.push_back({false, true, 20, 30, 300, 0, Prologue::gelu, Prologue::none, true, true, true});
  cs.push_back({false, true, 37, 50, 70, 0, Prologue::none, Prologue::none, true, false, false, true});   // x + proj
  cs.push_back({false, true, 37, 50, 300, 0, Prologue::gelu, Prologue::none, true, false, false, true});  // x + fc2
  cs.push_back({true, true, 23, 19, 260, 0, Prologue::gelu, Prologue::layer_norm, true, true, true, true});
  // Forward's layer norm, statistics computed by the product: ln -> qkv/fc1 with and without a bias, and on B.
  cs.push_back({false, true, 37, 50, 70, 0, Prologue::layer_norm, Prologue::none, true, false, false, false, true});
  cs.push_back({false, true, 130, 40, 300, 0, Prologue::layer_norm, Prologue::none, false, false, false, false, true});
  cs.push_back({true, true, 23, 19, 260, 0, Prologue::gelu, Prologue::layer_norm, true, false, false, false, true});
  // gelu' (with a bias and a residual) on whole 6x32 tiles and edge ones, over three K blocks.
  cs.push_back({false, false, 20, 70, 600, 0, Prologue::none, Prologue::none, true, true, false, true});
  cs.push_back({false, true, 13, 64, 300, 0, Prologue::none, Prologue::none, false, true, true});
  // Weight gradients taller than wide, computed as their transpose: C += (copied into the transpose first), layer
  // norm on both operands with B's statistics computed by the product, and with a bias (not transposed).
  cs.push_back({true, false, 70, 40, 600, 0, Prologue::layer_norm, Prologue::layer_norm, false, false, true, false,
                true});
  cs.push_back({true, false, 45, 20, 300, 0, Prologue::none, Prologue::gelu, true});
  return cs;
}

std::string describe(const Case& c) {
  return "ta=" + std::to_string(c.ta) + " tb=" + std::to_string(c.tb) + " M=" + std::to_string(c.M) +
         " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) + " pad=" + std::to_string(c.pad) +
         " pro=" + std::to_string(c.pa) + "," + std::to_string(c.pb) + " bias=" + std::to_string(c.bias) +
         " gelu'=" + std::to_string(c.gelu_grad) + " acc=" + std::to_string(c.accumulate) +
         " res=" + std::to_string(c.residual) + " stats=" + std::to_string(c.stats);
}

}  // namespace

TEST_SUITE("sgemm") {

TEST_CASE("the reference SGEMM agrees with a double-precision product on every case") {
  uint64_t seed = 100;
  for (const Case& c : cases()) {
    CAPTURE(describe(c));
    Operands o = make(c, seed += 10);
    std::vector<float> got = run(cpu::base::sgemm_reference, c, o);
    std::vector<double> want = exact(c, o);
    double worst = 0;
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = 0; j < c.N; ++j) {
        double w = want[i * o.ldc + j];
        worst = std::max(worst, std::abs(got[i * o.ldc + j] - w) / (1.0 + std::abs(w)));
      }
    CHECK(worst < 2e-5);
    if (c.stats) {  // and the statistics it computed are the row statistics
      std::vector<double> mean, rstd;
      const bool on_a = c.pa == Prologue::layer_norm;
      const int64_t rows = on_a ? (c.ta ? c.K : c.M) : (c.tb ? c.N : c.K), cols = on_a ? (c.ta ? c.M : c.K) : (c.tb ? c.K : c.N);
      row_stats(on_a ? o.A : o.B, rows, cols, on_a ? o.lda : o.ldb, mean, rstd);
      for (int64_t r = 0; r < rows; ++r) {
        CHECK(std::abs((on_a ? o.mean_a : o.mean_b)[r] - mean[r]) < 1e-12);
        CHECK(std::abs((on_a ? o.rstd_a : o.rstd_b)[r] - rstd[r]) < 1e-9 * rstd[r]);
      }
    }
    // Padding past N in each row of C is left alone.
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = c.N; j < o.ldc; ++j) CHECK(got[i * o.ldc + j] == o.C0[i * o.ldc + j]);
  }
}

#if SPDLAB_HAVE_AVX2_KERNELS
// Each tile this CPU can run, by name (sgemm_6x32 needs AVX-512F), and sgemm, the one cpu_isa() chose.
std::vector<std::pair<const char*, SgemmFn>> packed_sgemms() {
  std::vector<std::pair<const char*, SgemmFn>> fns;
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return fns;  // none on this CPU
  fns = {{"sgemm", cpu::avx2::sgemm}, {"6x16", cpu::avx2::sgemm_6x16}};
  if (__builtin_cpu_supports("avx512f")) fns.push_back({"6x32", cpu::avx2::sgemm_6x32});
  else MESSAGE("this CPU has no AVX-512F: the 6x32 tile is not checked");
  return fns;
}

TEST_CASE("the packed SGEMM equals its reference bit for bit on each tile, at 1 and 2 threads") {
  const int saved = get_num_threads();
  for (auto [name, sgemm] : packed_sgemms()) {
    CAPTURE(std::string(name));
    uint64_t seed = 100;
    for (const Case& c : cases()) {
      CAPTURE(describe(c));
      Operands o = make(c, seed += 10);
      std::vector<float> want = run(cpu::avx2::sgemm_reference, c, o);
      for (int threads : {1, 2}) {
        set_num_threads(threads);
        CAPTURE(threads);
        std::vector<float> got = run(sgemm, c, o);
        int64_t differ = 0;
        for (size_t i = 0; i < got.size(); ++i) differ += std::memcmp(&got[i], &want[i], sizeof(float)) != 0;
        CHECK(differ == 0);
      }
    }
  }
  set_num_threads(saved);
}

TEST_CASE("a ViT-sized product splits over threads without changing a bit, on each tile") {
  const int saved = get_num_threads();
  // fc2's weight gradient over 1000 tokens, and fc1's, which is computed as its transpose: equal to the reference
  for (const Case& c : {Case{true, false, 192, 768, 1000, 0, Prologue::none, Prologue::gelu},
                        Case{true, false, 768, 192, 1000, 0, Prologue::none, Prologue::layer_norm}}) {
    CAPTURE(describe(c));
    Operands o = make(c, 7);
    const std::vector<float> want = run(cpu::avx2::sgemm_reference, c, o);
    for (auto [name, sgemm] : packed_sgemms()) {
      CAPTURE(std::string(name));
      set_num_threads(1);
      std::vector<float> one = run(sgemm, c, o);
      set_num_threads(2);
      std::vector<float> two = run(sgemm, c, o);
      CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
      CHECK(std::memcmp(one.data(), want.data(), one.size() * sizeof(float)) == 0);
    }
  }
  set_num_threads(saved);
}

TEST_CASE("attention's small products: 256-bit and 512-bit registers give the plain fused multiply-add loop's bits") {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return;
  const bool wide = __builtin_cpu_supports("avx512f");
  if (!wide) MESSAGE("this CPU has no AVX-512F: small_gemm_32 is not checked");
  uint64_t seed = 500;
  for (int64_t m : {1, 5, 6, 13, 50})
    for (int64_t n : {1, 8, 15, 16, 17, 24, 31, 32, 33, 41, 50, 57, 64, 197})
      for (int64_t k : {1, 50, 64})
        for (bool at : {false, true}) {  // A stored [m, k], or [k, m] read transposed (as atb does)
          CAPTURE(m);
          CAPTURE(n);
          CAPTURE(k);
          CAPTURE(at);
          const int64_t lda = at ? 1 : k + 2, ak = at ? m + 1 : 1, ldb = n + 3, ldc = n + 1;
          std::vector<float> A = random_floats(at ? k * ak : m * lda, seed++), B = random_floats(k * ldb, seed++);
          std::vector<float> want(m * ldc, -7.0f);
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
              float acc = 0.0f;
              for (int64_t kk = 0; kk < k; ++kk) acc = std::fma(A[i * lda + kk * ak], B[kk * ldb + j], acc);
              want[i * ldc + j] = acc;
            }
          for (auto fn : {cpu::avx2::small_gemm_16, cpu::avx2::small_gemm_32}) {
            if (fn == cpu::avx2::small_gemm_32 && !wide) continue;
            std::vector<float> got(m * ldc, -7.0f);  // columns past n must stay as they are
            fn(m, n, k, A.data(), lda, ak, B.data(), ldb, got.data(), ldc);
            CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
          }
        }
}

TEST_CASE("softmax's exponentials and their sum: the AVX2 row equals the plain loop bit for bit") {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return;
  // Inputs across fast_exp's whole range and past its clamps (-105 and 89, after the shift by mx), with the
  // values at and next to the clamps, infinities, NaN, zeros of both signs and results that are subnormal.
  const float edge[] = {-INFINITY, -1e30f, -200.0f, -105.5f, std::nextafter(-105.0f, -200.0f), -105.0f,
                        std::nextafter(-105.0f, 0.0f), -104.0f, -87.5f, -0.0f, 0.0f, 1e-30f, 88.5f,
                        std::nextafter(89.0f, 0.0f), 89.0f, std::nextafter(89.0f, 200.0f), 1e30f, INFINITY, NAN};
  uint64_t seed = 900;
  for (int64_t cols : {0, 1, 2, 7, 8, 9, 15, 16, 17, 50, 63, 197, 1000})
    for (int round = 0; round < 6; ++round) {
      CAPTURE(cols);
      CAPTURE(round);
      std::vector<float> x = random_floats(cols, seed++);
      // round 4: s x - mx is x itself, every third of it an edge value
      const float s = round < 3 ? 0.125f : 1.0f, mx = round == 4 ? 0.0f : round % 3 == 1 ? 3.0f : -2.5f;
      for (int64_t c = 0; c < cols; ++c) {
        if (round == 1) x[c] *= 40.0f;                               // scores a softmax sees
        if (round == 2 || round == 5) x[c] = x[c] * 120.0f - 20.0f;  // through both clamps
        if (round == 4 && c % 3 == 0) x[c] = edge[(c / 3) % std::size(edge)];
      }
      std::vector<float> want(cols + 1, -7.0f), got(cols + 1, -7.0f);  // the float past the row stays as it is
      const double want_sum = cpu::avx2::softmax_exp_plain(x.data(), want.data(), cols, s, mx);
      const double got_sum = cpu::avx2::softmax_exp_avx2(x.data(), got.data(), cols, s, mx);
      CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
      CHECK(std::memcmp(&got_sum, &want_sum, sizeof(double)) == 0);
      std::vector<float> in_place = x;  // y == x, as softmax_rows_replay runs it
      const double again = cpu::avx2::softmax_exp_avx2(in_place.data(), in_place.data(), cols, s, mx);
      CHECK(std::memcmp(in_place.data(), want.data(), cols * sizeof(float)) == 0);
      CHECK(std::memcmp(&again, &want_sum, sizeof(double)) == 0);
    }
}
#endif

TEST_CASE("gemm_ex composed from the other kernels agrees with the fused SGEMM") {
  // kernels::get(cpu) is the fused path under AVX2 (where the shape is worth it), the composed one otherwise.
  kernels::Kernels& k = kernels::get(Device::cpu);
  uint64_t seed = 500;
  for (const Case& c : cases()) {
    if (c.pad && (c.pa != Prologue::none || c.pb != Prologue::none)) continue;  // composed prologues need ld == cols
    CAPTURE(describe(c));
    Operands o = make(c, seed += 10);
    std::vector<float> fused = run(cpu::base::sgemm_reference, c, o), composed = o.C0;
    k.Kernels::gemm_ex(DType::f32, c.ta, c.tb, c.M, c.N, c.K, o.A.data(), o.lda, o.B.data(), o.ldb, composed.data(),
                       o.ldc, o.ex);
    std::vector<float> dispatched = o.C0;
    k.gemm_ex(DType::f32, c.ta, c.tb, c.M, c.N, c.K, o.A.data(), o.lda, o.B.data(), o.ldb, dispatched.data(), o.ldc,
              o.ex);
    double worst = 0, worst_dispatched = 0;
    for (size_t i = 0; i < fused.size(); ++i) {
      worst = std::max(worst, std::abs(double(composed[i]) - fused[i]) / (1.0 + std::abs(fused[i])));
      worst_dispatched = std::max(worst_dispatched, std::abs(double(dispatched[i]) - fused[i]) / (1.0 + std::abs(fused[i])));
    }
    CHECK(worst < 2e-5);
    CHECK(worst_dispatched < 2e-5);
  }
}

TEST_CASE("a group's products and column sums equal each product alone, bit for bit, however the threads share them") {
  // On two threads the SGEMM runs a group of two as sgemm_group: each thread owns a product and, once done,
  // takes the column sums and then row blocks of the other. The products here differ 20-fold in size, so the
  // first to finish takes part of the other's; the big one spans two phases of packed B (N = 1024, 7 K blocks).
  kernels::Kernels& k = kernels::get(Device::cpu);
  const int saved = get_num_threads();
  struct P {
    bool ta;
    int64_t M, N, K;
    bool gelu_grad, ln_b;
  };
  const std::vector<std::vector<P>> groups = {
      {{true, 24, 1024, 1792, false, false}, {false, 90, 40, 50, true, false}},   // big first
      {{false, 90, 40, 50, false, false}, {true, 30, 1024, 1792, false, true}},   // big second, a layer-norm B
      {{false, 1200, 64, 96, true, false}, {true, 96, 64, 1200, false, true}},    // dx and dW of one layer
      // dW taller than wide, computed as its transpose: under a layer-norm B, and accumulating (gemm_group)
      {{false, 1200, 64, 96, true, false}, {true, 300, 64, 1200, false, true}},
      {{false, 90, 40, 50, false, false}, {true, 150, 40, 100, false, false}},
  };
  uint64_t seed = 900;
  for (size_t gi = 0; gi < groups.size(); ++gi)
    for (bool with_sums : {false, true})
      for (int threads : {1, 2}) {
        CAPTURE(gi);
        CAPTURE(with_sums);
        CAPTURE(threads);
        const auto& g = groups[gi];
        std::vector<std::vector<float>> A, B, aux, want, got;
        std::vector<std::vector<double>> mean, rstd;
        std::vector<kernels::Kernels::GemmExCall> calls;
        for (const P& p : g) {
          const int64_t sa = p.M * p.K, sb = p.K * p.N;
          A.push_back(random_floats(sa, seed++));
          B.push_back(random_floats(sb, seed++));
          aux.push_back(random_floats(p.M * p.N, seed++));
          mean.emplace_back();
          rstd.emplace_back();
          if (p.ln_b) row_stats(B.back(), p.K, p.N, p.N, mean.back(), rstd.back());
        }
        for (size_t i = 0; i < g.size(); ++i) {
          const P& p = g[i];
          kernels::Kernels::GemmExCall c{p.ta, false, p.M, p.N, p.K, A[i].data(), p.ta ? p.M : p.K, B[i].data(), p.N,
                                          nullptr, p.N, {}};
          if (p.gelu_grad) c.ex.gelu_grad = aux[i].data();
          if (p.ln_b) {
            c.ex.b.kind = Prologue::layer_norm;
            c.ex.b.mean = mean[i].data();
            c.ex.b.rstd = rstd[i].data();
          }
          calls.push_back(c);
        }
        const P& first = g[0];  // the column sums of the first product's A, as a linear layer's db of dy
        std::vector<float> sums_want(first.ta ? first.M : first.K), sums_got(sums_want.size(), -1.0f);
        const int64_t rows = first.ta ? first.K : first.M;
        set_num_threads(threads);  // the baseline kernels' OpenBLAS rounds differently on 1 and 2 threads
        for (size_t i = 0; i < g.size(); ++i) {  // each alone
          want.emplace_back(g[i].M * g[i].N, -3.0f);
          const auto& c = calls[i];
          k.gemm_ex(DType::f32, c.trans_a, c.trans_b, c.M, c.N, c.K, c.A, c.lda, c.B, c.ldb, want.back().data(), c.ldc,
                    c.ex);
        }
        k.reduce(kernels::Reduce::sum, DType::f32, A[0].data(), sums_want.data(), 1, rows,
                 static_cast<int64_t>(sums_want.size()), nullptr);
        for (size_t i = 0; i < g.size(); ++i) {
          got.emplace_back(g[i].M * g[i].N, -5.0f);
          calls[i].C = got.back().data();
        }
        kernels::Kernels::ColumnSums sums;
        if (with_sums) sums = {A[0].data(), sums_got.data(), rows, static_cast<int64_t>(sums_want.size())};
        k.gemm_ex_group(DType::f32, calls.data(), static_cast<int64_t>(calls.size()), sums);
        for (size_t i = 0; i < g.size(); ++i)
          CHECK(std::memcmp(got[i].data(), want[i].data(), want[i].size() * sizeof(float)) == 0);
        if (with_sums) CHECK(std::memcmp(sums_got.data(), sums_want.data(), sums_want.size() * sizeof(float)) == 0);
        // gemm_group, the same products without prologue or epilogue, the second accumulating into C
        if (g[0].gelu_grad || g[0].ln_b || g[1].gelu_grad || g[1].ln_b) continue;
        std::vector<kernels::Kernels::Gemm> plain;
        for (size_t i = 0; i < g.size(); ++i) {
          const auto& c = calls[i];
          got[i] = want[i];
          plain.push_back({c.trans_a, c.trans_b, c.M, c.N, c.K, 1.0, c.A, c.lda, c.B, c.ldb, i == 1 ? 1.0 : 0.0,
                           got[i].data(), c.ldc});
        }
        k.gemm_group(DType::f32, plain.data(), static_cast<int64_t>(plain.size()));
        CHECK(std::memcmp(got[0].data(), want[0].data(), want[0].size() * sizeof(float)) == 0);
        // OpenBLAS (the baseline set's products) splits a transposed A's product over 2 threads when alone but
        // not inside a group, and rounds differently: only spdlab's SGEMM gives the same bits both ways.
        if (threads == 2 && calls[1].trans_a && std::string(kernels::cpu_isa()) == "base") continue;
        std::vector<float> twice = want[1];  // want + want, computed as one product added to C
        k.gemm(DType::f32, calls[1].trans_a, false, calls[1].M, calls[1].N, calls[1].K, 1.0, calls[1].A, calls[1].lda,
               calls[1].B, calls[1].ldb, 1.0, twice.data(), calls[1].ldc);
        CHECK(std::memcmp(got[1].data(), twice.data(), twice.size() * sizeof(float)) == 0);
      }
  set_num_threads(saved);
}

TEST_CASE("layer_norm_linear's product normalizes x in its packing exactly as layer_norm writes it") {
  // The fused op never writes layer_norm(x); its output must be that of the two ops it replaces, bit for bit, on
  // either CPU kernel set (the fused SGEMM on AVX2, gemm_ex composed on the baseline). So must every gradient
  // where spdlab's SGEMM runs the products; OpenBLAS's backward products round by how they are grouped.
  const bool own_products = std::string(kernels::cpu_isa()) != "base";
  Generator g(31);
  for (int64_t rows : {5, 130}) {
    CAPTURE(rows);
    const Tensor x0 = mul(Tensor::randn({rows, 192}, g), 3.0), gamma0 = Tensor::randn({192}, g),
                 beta0 = Tensor::randn({192}, g), w0 = mul(Tensor::randn({576, 192}, g), 0.05),
                 b0 = Tensor::randn({576}, g), dy = Tensor::randn({rows, 576}, g);
    auto run_op = [&](bool fused) {  // the output, then the gradients of x, gamma, beta, w, b
      std::vector<Tensor> in;
      for (const Tensor* t : {&x0, &gamma0, &beta0, &w0, &b0}) in.push_back(t->clone().requires_grad_());
      Tensor y = fused ? layer_norm_linear(in[0], in[1], in[2], 1e-6, in[3], in[4])
                       : linear(layer_norm(in[0], in[1], in[2], 1e-6), in[3], in[4]);
      y.backward(dy);
      std::vector<Tensor> out{y.detach()};
      for (Tensor& t : in) out.push_back(t.grad());
      return out;
    };
    std::vector<Tensor> fused = run_op(true), plain = run_op(false);
    const char* names[] = {"y", "dx", "dgamma", "dbeta", "dw", "db"};
    for (size_t i = 0; i < fused.size(); ++i) {
      CAPTURE(std::string(names[i]));
      REQUIRE(fused[i].shape() == plain[i].shape());
      const bool same = std::memcmp(fused[i].data<float>(), plain[i].data<float>(), fused[i].numel() * 4) == 0;
      if (i == 0 || own_products) {
        CHECK(same);
      } else {
        CHECK(max(abs(sub(fused[i], plain[i]))).item() < 1e-5 * (1.0 + max(abs(plain[i])).item()));
      }
    }
  }
}

}  // TEST_SUITE
