// Tests for optim/: every optimizer against PyTorch by replaying the gradient traces of
// tests/reference/optim_traces*.safetensors (gen_optim.py), SPD's edge cases, bit-identical resume, option
// and state errors, parameter groups, schedules, clipping, and the `spdlab replay` tool's error messages.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/io/json.h"
#include "core/io/safetensors.h"
#include "core/ops.h"
#include "kernels/threads.h"
#include "optim/optim.h"
#include "optim/replay.h"
#include "kernels/kernels.h"
#include "tests/support.h"

using namespace spdlab;
using namespace spdlab::optim;
namespace fs = std::filesystem;

namespace {

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("optim") {}
};

double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  std::vector<double> x = a.to_vector_f64(), y = b.to_vector_f64();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return false;
  std::vector<float> x = a.to_vector_f32(), y = b.to_vector_f32();
  return std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// A trainable f32 leaf with N(0, scale^2) values.
Tensor leaf(const Shape& shape, Generator& gen, double scale = 1.0) {
  Tensor t = mul(Tensor::randn(shape, gen), scale);
  return t.detach().requires_grad_();
}

Tensor copy_of(const Tensor& t) {
  autograd::NoGradGuard ng;
  Tensor c = Tensor::empty(t.shape());
  c.copy_(t.detach());
  return c.requires_grad_(t.requires_grad());
}

NamedTensors copy_params(const NamedTensors& ps) {
  NamedTensors out;
  for (const auto& [n, t] : ps) out.emplace_back(n, copy_of(t));
  return out;
}

Hyperparams hyper_from_config(const json::Value& c) {
  Hyperparams h;
  const std::string kind = c.find("optimizer")->as_string();
  h.lr = c.find("lr")->as_double();
  if (const json::Value* b = c.find("betas")) {
    h.beta1 = b->as_array()[0].as_double();
    h.beta2 = b->as_array()[1].as_double();
  }
  if (const json::Value* v = c.find("eps")) h.eps = v->as_double();
  if (const json::Value* v = c.find("weight_decay")) h.weight_decay = v->as_double();
  if (const json::Value* v = c.find("lam")) h.lambda = v->as_double();  // the official SPD code's name
  if (const json::Value* v = c.find("momentum")) h.momentum = v->as_double();
  if (const json::Value* v = c.find("nesterov")) h.nesterov = v->as_bool();
  if (const json::Value* v = c.find("amsgrad")) h.amsgrad = v->as_bool();
  if (const json::Value* v = c.find("alpha")) h.alpha = v->as_double();
  if (const json::Value* v = c.find("beta")) h.beta = v->as_double();
  if (const json::Value* v = c.find("gamma")) h.gamma = v->as_double();
  if (const json::Value* v = c.find("k")) h.kappa = v->as_double();  // the official FTP code's name
  return h;
}

// Runs the CLI with a shell command line; returns the exit status and puts stderr+stdout in `output`.
int run_cli(const std::string& args, std::string& output, const TempDir& dir) {
  const std::string log = dir.file("cli.log");
  int rc = std::system((std::string(SPDLAB_CLI_PATH) + " " + args + " > " + log + " 2>&1").c_str());
  std::ifstream in(log);
  output.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Steps `opt` with one fresh random gradient per tensor and step, drawn from `gen` (frozen ones too).
void random_steps(Optimizer& opt, const NamedTensors& ps, Generator& gen, int steps) {
  for (int s = 0; s < steps; ++s) {
    for (auto [n, t] : ps) t.set_grad(Tensor::randn(t.shape(), gen));
    opt.step();
  }
}

}  // namespace

TEST_SUITE("optim") {

TEST_CASE("replay matches PyTorch for every fixture config, with and without explicit anchors") {
  for (const char* file : {"optim_traces.safetensors", "optim_traces_anchor.safetensors"}) {
    const std::string path = test::reference_path(file);
    io::SafetensorsFile f(path);
    Trace trace = load_trace(path);
    CHECK(trace.grads.size() == 40);
    json::Value configs = json::parse(f.metadata().at("configs"), "configs");
    const std::string unanchored = f.metadata().at("unanchored_pattern");
    for (const json::Value& c : configs.as_array()) {
      const std::string name = c.find("name")->as_string(), kind = c.find("optimizer")->as_string();
      CAPTURE(file);
      CAPTURE(name);
      ReplayOptions o;
      o.unanchored = {unanchored};
      ReplayResult r = replay(trace, kind, hyper_from_config(c), o);
      REQUIRE(r.tensors.size() == trace.names.size());
      for (const auto& [key, t] : r.tensors) {
        const std::string pname = key.substr(6);
        CAPTURE(pname);
        CHECK(max_abs_diff(t, f.load("result." + name + "." + pname)) <= 1e-6);
      }
      if (kind == "spd") {
        REQUIRE(r.spd_stats.size() == trace.names.size());
        for (const SpdTensorStats& s : r.spd_stats) {
          CAPTURE(s.name);
          CHECK(s.steps == 40);
          CHECK(s.fired == static_cast<int64_t>(f.load("spd_fired." + name + "." + s.name, DType::i64).item()));
        }
      }
    }
  }
}

TEST_CASE("replay: anchors from param.<name>, explicit anchor.<name>, --no-anchor and unanchored patterns") {
  const std::string path = test::reference_path("optim_traces.safetensors");
  Trace trace = load_trace(path);
  Hyperparams h;
  h.lr = 1e-2;
  h.lambda = 1.0;
  // No anchors means w0 = 0: the same as explicit zero anchors.
  ReplayOptions none;
  none.use_anchors = false;
  ReplayResult a = replay(trace, "spd", h, none);
  Trace zeros = trace;
  for (const std::string& n : trace.names) zeros.anchors[n] = Tensor::zeros(trace.start.at(n).shape());
  ReplayResult b = replay(zeros, "spd", h, ReplayOptions{});
  for (size_t i = 0; i < a.tensors.size(); ++i) CHECK(bit_equal(a.tensors[i].second, b.tensors[i].second));
  ReplayOptions bad;
  bad.unanchored = {"heads.*"};
  CHECK_THROWS_WITH_AS(replay(trace, "spd", h, bad), doctest::Contains("'heads.*' matches no tensor"), Error);
  CHECK_THROWS_WITH_AS(replay(trace, "lion", h, ReplayOptions{}),
                       doctest::Contains("valid names: sgd, adam, adamw, l2sp, spd, mars_sp, ftp"), Error);
}

TEST_CASE("spdlab replay: end to end against the fixture, --every-step, and its errors") {
  TempDir dir;
  std::string out;
  const std::string trace = test::reference_path("optim_traces_anchor.safetensors");
  REQUIRE(run_cli("replay --trace " + trace + " --optim spd --lr 1e-2 --lambda 0.5 --every-step --out " +
                      dir.file("o.safetensors"),
                  out, dir) == 0);
  CHECK(out.find("fired") != std::string::npos);
  io::SafetensorsFile ref(trace), got(dir.file("o.safetensors"));
  for (std::string n : {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "head.weight", "head.bias"}) {
    CHECK(max_abs_diff(got.load("param." + n), ref.load("result.spd_lam05." + n)) <= 1e-6);
    CHECK(bit_equal(got.load("step.39." + n), got.load("param." + n)));
    CHECK(got.has("step.0." + n));
  }
  CHECK(got.metadata().at("optimizer") == "spd");

  // Bad traces, each written by hand.
  auto write = [&](const std::string& name, const NamedTensors& ts) {
    io::save_safetensors(dir.file(name), ts);
    return dir.file(name);
  };
  Tensor a = Tensor::ones({2, 3}), g = Tensor::full({2, 3}, 0.5);
  const std::string missing = write("missing.safetensors", {{"param.a", a}, {"param.b", a}, {"grad.0.a", g},
                                                            {"grad.0.b", g}, {"grad.1.a", g}, {"grad.2.a", g},
                                                            {"grad.2.b", g}});
  const std::string shape = write("shape.safetensors", {{"param.a", a}, {"grad.0.a", Tensor::ones({3, 2})}});
  const std::string nosteps = write("nosteps.safetensors", {{"param.a", a}});
  const std::string stray = write("stray.safetensors", {{"param.a", a}, {"grad.0.a", g}, {"grad.0.c", g}});
  const std::string anchor = write("anchor.safetensors", {{"param.a", a}, {"anchor.a", Tensor::ones({6})}, {"grad.0.a", g}});
  const std::string o = " --out " + dir.file("x.safetensors");
  struct ErrorCase {
    std::string args, message;
  };
  const std::vector<ErrorCase> cases = {
      {"replay --trace " + missing + " --optim adam" + o, "missing gradients for 3 steps: grad.1.b"},
      {"replay --trace " + shape + " --optim adam" + o, "grad.0.a is [3, 2] but param.a is [2, 3]"},
      {"replay --trace " + nosteps + " --optim adam" + o, "has no steps"},
      {"replay --trace " + stray + " --optim adam" + o, "grad.0.c has no param.c"},
      {"replay --trace " + anchor + " --optim spd" + o, "anchor.a is [6] but param.a is [2, 3]"},
      {"replay --trace " + dir.file("absent.safetensors") + " --optim adam" + o, "absent.safetensors"},
      {"replay --trace " + trace + " --optim lion" + o, "valid names: sgd, adam, adamw, l2sp, spd, mars_sp, ftp"},
      {"replay --trace " + trace + " --optim adam --momentum 0.9" + o, "--momentum does not apply to --optim adam"},
      {"replay --trace " + trace + " --optim spd --wd 1" + o, "--wd does not apply to --optim spd"},
      {"replay --trace " + trace + " --optim adam --betas 0.9" + o, "--betas expects two numbers"},
      {"replay --trace " + trace + " --optim adam --betas 0.9,1.5" + o, "beta2 must be in [0, 1)"},
      {"replay --trace " + trace + " --optim sgd --lr -1" + o, "--lr"},
      {"replay --optim adam" + o, "--trace is required"},
  };
  for (const ErrorCase& c : cases) {
    CAPTURE(c.args);
    CHECK(run_cli(c.args, out, dir) == 1);
    CHECK(out.find(c.message) != std::string::npos);
    CAPTURE(out);
  }
  CHECK(!fs::exists(dir.file("x.safetensors")));
}

TEST_CASE("spd: the first step after capture_anchors has w == w0, c == 0, and is plain Adam") {
  Generator gen(1);
  NamedTensors ps = {{"w", leaf({40, 30}, gen)}, {"b", leaf({30}, gen)}};
  NamedTensors plain = copy_params(ps);
  SPD spd(ps, SPDOptions{.adam = {.lr = 1e-2}, .lambda = 1.0});
  spd.capture_anchors();
  Adam adam(plain, AdamOptions{.lr = 1e-2});
  Generator g1(5), g2(5);
  random_steps(spd, ps, g1, 1);
  random_steps(adam, plain, g2, 1);
  for (size_t i = 0; i < ps.size(); ++i) CHECK(bit_equal(ps[i].second, plain[i].second));
  for (const SpdTensorStats& s : spd.stats()) {
    CHECK(s.steps == 1);
    CHECK(s.fired == 0);
    CHECK_FALSE(s.fired_last);
  }
}

TEST_CASE("spd: r is clamped at 0 when the step moves towards w0, and near 1 it pulls back to w0") {
  SUBCASE("r < 0 clamps to 0: the condition fires but nothing is projected") {
    // w0 = 0, w = [1, 1], g = [1, 1]: c = -2 < 0, and Adam moves w towards 0, so ||w~|| < ||w||.
    Tensor w = Tensor::ones({2}).requires_grad_(), ref = Tensor::ones({2}).requires_grad_();
    SPD spd(NamedTensors{{"w", w}}, SPDOptions{.adam = {.lr = 0.1}, .lambda = 1.0});
    Adam adam(NamedTensors{{"w", ref}}, AdamOptions{.lr = 0.1});
    w.set_grad(Tensor::ones({2}));
    ref.set_grad(Tensor::ones({2}));
    spd.step();
    adam.step();
    CHECK(spd.stats()[0].fired == 1);
    CHECK(spd.stats()[0].last_r == 0.0);
    CHECK(bit_equal(w, ref));
  }
  SUBCASE("r close to 1 with lambda 1 puts w back on its anchor") {
    // w - w0 = [1e-6, 0], g = [1, 0]: c = -1e-6 < 0; Adam moves w[0] by lr, so r = 1 - 1e-6/|w~ - w0|.
    Tensor w = Tensor::from_vector(std::vector<float>{1e-6f, 0.f}, {2}).requires_grad_();
    SPD spd(NamedTensors{{"w", w}}, SPDOptions{.adam = {.lr = 0.1}, .lambda = 1.0});
    spd.set_anchors({{"w", Tensor::zeros({2})}});
    w.set_grad(Tensor::from_vector(std::vector<float>{1.f, 0.f}, {2}));
    spd.step();
    const SpdTensorStats& s = spd.stats()[0];
    CHECK(s.fired == 1);
    CHECK(s.last_r > 0.99998);
    CHECK(s.last_r <= 1.0);
    CHECK(s.r_sum == s.last_r);
    // w = w~ - r (w~ - w0) = w~ (1 - r): |w| = |w~| 1e-6 / |w~| = 1e-6 in exact arithmetic, against
    // |w~| = 0.1 without the projection (float rounding of r moves the last digits).
    CHECK(std::abs(w.at(0)) == doctest::Approx(1e-6).epsilon(0.01));
    CHECK(w.at(1) == 0.0);
  }
}

TEST_CASE("spd: zero-norm guard when w~ lands exactly on w0") {
  // Find the plain Adam update u of w, then anchor at u: ||w~ - w0|| = 0 while c = -<g, w - u> < 0.
  Tensor g = Tensor::from_vector(std::vector<float>{0.3f, -0.7f, 1.1f}, {3});
  Tensor w = Tensor::from_vector(std::vector<float>{0.5f, 0.25f, -1.f}, {3}).requires_grad_();
  Tensor u = copy_of(w).requires_grad_();
  Adam adam(NamedTensors{{"w", u}}, AdamOptions{.lr = 0.1});
  u.set_grad(g);
  adam.step();
  SPD spd(NamedTensors{{"w", w}}, SPDOptions{.adam = {.lr = 0.1}, .lambda = 1.0});
  spd.set_anchors({{"w", u.detach()}});
  w.set_grad(g);
  spd.step();
  const SpdTensorStats& s = spd.stats()[0];
  CHECK(s.fired == 1);        // the condition held...
  CHECK(s.last_r == 0.0);     // ...but no r was computed
  CHECK(s.dev_norm == 0.0);
  CHECK(bit_equal(w, u));     // w = w~, no NaN from 0/0
}

TEST_CASE("optimizers skip frozen tensors and tensors without a gradient on a step") {
  for (const std::string& kind : optimizer_kinds()) {
    CAPTURE(kind);
    Generator gen(3);
    Tensor a = leaf({50, 7}, gen), b = leaf({11}, gen), frozen = leaf({4, 4}, gen);
    frozen.requires_grad_(false);
    Tensor frozen_before = copy_of(frozen);
    Tensor b_alone = copy_of(b);
    Hyperparams h;
    h.lr = 1e-2;
    h.momentum = 0.9;
    if (kind == "spd") h.lambda = 0.5;
    else if (kind == "mars_sp") h.gamma = 0.5;
    else h.weight_decay = 0.5;
    auto opt = make_optimizer(kind, NamedTensors{{"a", a}, {"b", b}, {"frozen", frozen}}, h);
    auto solo = make_optimizer(kind, NamedTensors{{"b", b_alone}}, h);
    if (opt->uses_anchors()) {
      opt->capture_anchors();
      solo->capture_anchors();
    }
    Generator gg(9);
    for (int step = 0; step < 3; ++step) {
      Tensor ga = Tensor::randn(a.shape(), gg), gb = Tensor::randn(b.shape(), gg);
      a.set_grad(ga);
      frozen.set_grad(Tensor::ones(frozen.shape()));  // a stale gradient on a frozen tensor is ignored too
      if (step == 1) {
        b.zero_grad();  // b has no gradient on step 1
      } else {
        b.set_grad(gb);
        b_alone.set_grad(gb);
        solo->step();
      }
      opt->step();
    }
    CHECK(opt->steps() == 3);
    CHECK(bit_equal(frozen, frozen_before));
    // b took two steps with bias corrections 1 and 2, exactly like an optimizer that only ever saw those.
    CHECK(bit_equal(b, b_alone));
    std::map<std::string, Tensor> state;
    for (auto& [n, t] : opt->state_dict()) state[n] = t;
    CHECK(state.at("step.a").item() == 3);
    CHECK(state.at("step.b").item() == 2);
    CHECK(state.at("step.frozen").item() == 0);
    if (kind == "spd") {
      const auto& st = dynamic_cast<SPD&>(*opt).stats();
      CHECK(st[1].steps == 2);
      CHECK(st[2].steps == 0);
    }
  }
}

TEST_CASE("resume: N steps, save_state, load into a new optimizer, M more == N+M straight, bit for bit") {
  struct Kind {
    std::string kind;
    Hyperparams h;
  };
  Hyperparams sgd;
  sgd.lr = 0.05;
  sgd.momentum = 0.9;
  sgd.nesterov = true;
  sgd.weight_decay = 1e-4;
  Hyperparams ams;
  ams.amsgrad = true;
  ams.weight_decay = 0.01;
  Hyperparams wd;
  wd.weight_decay = 0.05;
  Hyperparams spd;
  spd.lr = 1e-2;
  spd.lambda = 1.0;
  const std::vector<Kind> kinds = {{"sgd", sgd}, {"adam", ams}, {"adamw", wd}, {"l2sp", Hyperparams{}}, {"spd", spd}};
  TempDir dir;
  for (const Kind& k : kinds) {
    CAPTURE(k.kind);
    Generator gen(11);
    // One tensor above the kernels' parallel threshold, so the threaded paths take part.
    NamedTensors base = {{"big", leaf({300, 200}, gen, 0.05)}, {"w", leaf({16, 10}, gen)}, {"head.bias", leaf({3}, gen)}};
    const bool anchored = k.kind == "l2sp" || k.kind == "spd";
    auto setup = [&](const NamedTensors& ps) {
      std::vector<ParamGroup> groups = timm_param_groups(ps);
      groups.back().lr_scale = 0.5;
      groups.back().decay_scale = 0.5;
      auto opt = make_optimizer(k.kind, groups, k.h);
      if (anchored) {
        std::map<std::string, Tensor> anchors;
        for (const auto& [n, t] : base)
          if (n != "head.bias") anchors[n] = t;  // the start values; head.bias stays unanchored
        opt->set_anchors(anchors);
      }
      return opt;
    };
    NamedTensors straight = copy_params(base), resumed = copy_params(base);
    auto a = setup(straight);
    auto b = setup(resumed);
    Generator ga(21), gb(21);
    random_steps(*a, straight, ga, 9);
    random_steps(*b, resumed, gb, 5);
    const std::string state = dir.file(k.kind + ".safetensors");
    b->save_state(state);
    NamedTensors fresh = copy_params(resumed);
    auto c = setup(fresh);  // its anchors are replaced by the saved ones
    c->load_state(state);
    CHECK(c->steps() == 5);
    random_steps(*c, fresh, gb, 4);
    for (size_t i = 0; i < base.size(); ++i) {
      CAPTURE(base[i].first);
      CHECK(bit_equal(straight[i].second, fresh[i].second));
    }
    if (k.kind == "spd") {
      const auto& sa = dynamic_cast<SPD&>(*a).stats();
      const auto& sc = dynamic_cast<SPD&>(*c).stats();
      for (size_t i = 0; i < sa.size(); ++i) {
        CHECK(sa[i].fired == sc[i].fired);
        CHECK(sa[i].dev_norm == sc[i].dev_norm);
        CHECK(sa[i].r_sum == sc[i].r_sum);
      }
    }
  }
}

TEST_CASE("load_state reports a mismatched state: kind, names, shapes, options") {
  TempDir dir;
  Generator gen(2);
  NamedTensors ps = {{"w", leaf({4, 3}, gen)}, {"b", leaf({3}, gen)}};
  Adam adam(ps, AdamOptions{});
  random_steps(adam, ps, gen, 2);
  const std::string path = dir.file("adam.safetensors");
  adam.save_state(path);

  SPD spd(copy_params(ps), SPDOptions{});
  CHECK_THROWS_WITH_AS(spd.load_state(path), doctest::Contains("holds the state of optimizer 'adam', not 'spd'"), Error);
  CHECK_THROWS_WITH_AS(spd.load_state_dict(adam.state_dict()),
                       doctest::Contains("the state is for optimizer 'adam', not 'spd'"), Error);
  Adam ams(copy_params(ps), AdamOptions{.amsgrad = true});
  CHECK_THROWS_WITH_AS(ams.load_state(path), doctest::Contains("missing max_exp_avg_sq.w"), Error);
  Adam renamed(NamedTensors{{"w", copy_of(ps[0].second)}, {"bias", copy_of(ps[1].second)}}, AdamOptions{});
  CHECK_THROWS_WITH_AS(renamed.load_state(path), doctest::Contains("missing step.bias"), Error);
  CHECK_THROWS_WITH_AS(renamed.load_state(path), doctest::Contains("unexpected entries"), Error);
  Adam reshaped(NamedTensors{{"w", leaf({3, 4}, gen)}, {"b", leaf({3}, gen)}}, AdamOptions{});
  CHECK_THROWS_WITH_AS(reshaped.load_state(path),
                       doctest::Contains("'exp_avg.w' is f32 [4, 3] in the state but the parameter is f32 [3, 4]"),
                       Error);
  io::save_safetensors(dir.file("other.safetensors"), {{"x", Tensor::ones({1})}});
  CHECK_THROWS_WITH_AS(adam.load_state(dir.file("other.safetensors")),
                       doctest::Contains("not an spdlab optimizer state"), Error);
  // A failed load leaves the optimizer as it was.
  CHECK(renamed.steps() == 0);
}

TEST_CASE("options are checked on construction, with the option's name") {
  Generator gen(4);
  NamedTensors ps = {{"w", leaf({2, 2}, gen)}};
  CHECK_THROWS_WITH_AS(SGD(ps, SGDOptions{.lr = -1}), doctest::Contains("SGDOptions: lr must be >= 0; got -1"), Error);
  CHECK_THROWS_WITH_AS(SGD(ps, SGDOptions{.momentum = -0.5}), doctest::Contains("momentum must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(SGD(ps, SGDOptions{.dampening = 2}), doctest::Contains("dampening must be in [0, 1]"), Error);
  CHECK_THROWS_WITH_AS(SGD(ps, SGDOptions{.nesterov = true}), doctest::Contains("nesterov needs momentum > 0"), Error);
  CHECK_THROWS_WITH_AS(Adam(ps, AdamOptions{.beta1 = 1.0}), doctest::Contains("AdamOptions: beta1 must be in [0, 1)"),
                       Error);
  CHECK_THROWS_WITH_AS(Adam(ps, AdamOptions{.beta2 = -0.1}), doctest::Contains("beta2 must be in [0, 1)"), Error);
  CHECK_THROWS_WITH_AS(Adam(ps, AdamOptions{.eps = 0}), doctest::Contains("eps must be > 0"), Error);
  CHECK_THROWS_WITH_AS(AdamW(ps, AdamOptions{.weight_decay = -1}),
                       doctest::Contains("AdamW options: weight_decay must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(L2SP(ps, L2SPOptions{.alpha = -1}), doctest::Contains("L2SPOptions: alpha must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(L2SP(ps, L2SPOptions{.adam = {.lr = std::nan("")}}),
                       doctest::Contains("L2SPOptions.adam: lr must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(SPD(ps, SPDOptions{.lambda = -1}), doctest::Contains("SPDOptions: lambda must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(SPD(ps, SPDOptions{.adam = {.weight_decay = 0.1}}),
                       doctest::Contains("adam.weight_decay must be 0"), Error);
  // SPD's one decay is lambda, in every struct: a weight_decay given to it is a mistake, not a synonym.
  CHECK_THROWS_WITH_AS(make_optimizer("spd", ps, Hyperparams{.weight_decay = 1.0}),
                       doctest::Contains("spd has no weight_decay (its only decay is lambda"), Error);
  std::vector<ParamGroup> bad = one_group(ps);
  bad[0].decay_scale = -1;
  CHECK_THROWS_WITH_AS(AdamW(bad, AdamOptions{}), doctest::Contains("group 0 has decay_scale -1; it must be >= 0"),
                       Error);
  CHECK_THROWS_WITH_AS(make_optimizer("rmsprop", ps, Hyperparams{}),
                       doctest::Contains("unknown optimizer 'rmsprop'; valid names: sgd, adam, adamw, l2sp, spd, mars_sp, ftp"), Error);
  // Parameters.
  CHECK_THROWS_WITH_AS(Adam(NamedTensors{}, AdamOptions{}), doctest::Contains("empty parameter list"), Error);
  CHECK_THROWS_WITH_AS(Adam(NamedTensors{{"w", ps[0].second}, {"w", leaf({1}, gen)}}, AdamOptions{}),
                       doctest::Contains("'w' appears twice"), Error);
  CHECK_THROWS_WITH_AS(Adam(NamedTensors{{"w", ps[0].second}, {"v", ps[0].second}}, AdamOptions{}),
                       doctest::Contains("same tensor"), Error);
  CHECK_THROWS_WITH_AS(Adam(NamedTensors{{"d", Tensor::ones({2}, DType::f64)}}, AdamOptions{}),
                       doctest::Contains("'d' is f64"), Error);
  CHECK_THROWS_WITH_AS(Adam(NamedTensors{{"t", ps[0].second.detach().transpose(0, 1)}}, AdamOptions{}),
                       doctest::Contains("not contiguous"), Error);
  std::vector<ParamGroup> groups = one_group(ps);
  groups[0].lr_scale = -1;
  CHECK_THROWS_WITH_AS(Adam(groups, AdamOptions{}), doctest::Contains("lr_scale -1"), Error);
  // Anchors.
  Adam adam(ps, AdamOptions{});
  adam.capture_anchors();  // kinds without anchors keep none, so generic code may call it for every kind
  CHECK_FALSE(adam.uses_anchors());
  CHECK(adam.anchors().empty());
  CHECK_THROWS_WITH_AS(adam.set_anchors({{"x", Tensor::zeros({1})}}), doctest::Contains("'x' is not a parameter"),
                       Error);
  SPD spd(ps, SPDOptions{});
  CHECK_THROWS_WITH_AS(spd.set_anchors({{"w", Tensor::zeros({3})}, {"x", Tensor::zeros({1})}}),
                       doctest::Contains("'w' is [3] but the parameter is [2, 2]; 'x' is not a parameter"), Error);
  CHECK_THROWS_WITH_AS(spd.set_lr(-0.1), doctest::Contains("set_lr expects a learning rate >= 0"), Error);
}

TEST_CASE("timm_param_groups: no decay for 1-D tensors, biases, cls_token and pos_embed") {
  Generator gen(6);
  NamedTensors named = {
      {"cls_token", leaf({1, 1, 8}, gen)},      {"pos_embed", leaf({1, 5, 8}, gen)},
      {"patch_embed.proj.weight", leaf({8, 3, 2, 2}, gen)}, {"patch_embed.proj.bias", leaf({8}, gen)},
      {"blocks.0.norm1.weight", leaf({8}, gen)}, {"blocks.0.norm1.bias", leaf({8}, gen)},
      {"blocks.0.attn.qkv.weight", leaf({24, 8}, gen)}, {"blocks.0.attn.qkv.bias", leaf({24}, gen)},
      {"blocks.0.mlp.fc1.weight", leaf({32, 8}, gen)}, {"norm.weight", leaf({8}, gen)},
      {"head.weight", leaf({10, 8}, gen)},      {"head.bias", leaf({10}, gen)},
      {"frozen.weight", leaf({4, 4}, gen)}};
  named.back().second.requires_grad_(false);
  std::vector<ParamGroup> groups = timm_param_groups(named);
  REQUIRE(groups.size() == 2);
  auto names = [](const ParamGroup& g) {
    std::set<std::string> s;
    for (const auto& [n, t] : g.params) s.insert(n);
    return s;
  };
  CHECK(groups[0].decay_scale == 0.0);
  CHECK(names(groups[0]) == std::set<std::string>{"cls_token", "pos_embed", "patch_embed.proj.bias",
                                                   "blocks.0.norm1.weight", "blocks.0.norm1.bias",
                                                   "blocks.0.attn.qkv.bias", "norm.weight", "head.bias"});
  CHECK(groups[1].decay_scale == 1.0);
  CHECK(names(groups[1]) == std::set<std::string>{"patch_embed.proj.weight", "blocks.0.attn.qkv.weight",
                                                   "blocks.0.mlp.fc1.weight", "head.weight"});
  // The groups drive the optimizer: lr scales and per-group decay.
  groups[0].lr_scale = 0.0;
  AdamW opt(groups, AdamOptions{.lr = 0.1, .weight_decay = 0.3});
  CHECK(opt.num_groups() == 2);
  CHECK(opt.group_decay(0) == 0.0);
  CHECK(opt.group_decay(1) == 0.3);
  opt.set_lr(0.2);
  CHECK(opt.lr() == 0.2);
  CHECK(opt.group_lr(0) == 0.0);
  CHECK(opt.group_lr(1) == 0.2);
  Tensor cls_before = copy_of(named[0].second);
  Generator gg(1);
  random_steps(opt, opt.params(), gg, 1);
  CHECK(bit_equal(named[0].second, cls_before));  // lr_scale 0: the no-decay group did not move
}

TEST_CASE("anchor policy: capture_anchors skips groups marked unanchored") {
  Generator gen(8);
  NamedTensors body = {{"w", leaf({3, 3}, gen)}}, head = {{"head.weight", leaf({2, 3}, gen)}};
  std::vector<ParamGroup> groups(2);
  groups[0].params = body;
  groups[1].params = head;
  groups[1].anchored = false;
  L2SP opt(groups, L2SPOptions{});
  opt.capture_anchors();
  NamedTensors anchors = opt.anchors();
  REQUIRE(anchors.size() == 1);
  CHECK(anchors[0].first == "w");
  CHECK(bit_equal(anchors[0].second, body[0].second));
  CHECK(anchors[0].second.storage() != body[0].second.storage());  // a copy, not a view of the parameter
  opt.clear_anchors();
  CHECK(opt.anchors().empty());
}

TEST_CASE("spd and adam kernels: large tensors match a float64 reference and are thread-count independent") {
  const int64_t n = 100003;  // several parallel chunks plus a ragged tail
  Generator gen(12);
  Tensor w = leaf({n}, gen, 0.1), w0 = Tensor::randn({n}, gen);
  std::vector<Tensor> grads;
  for (int s = 0; s < 3; ++s) grads.push_back(Tensor::randn({n}, gen));
  auto run = [&](int threads) {
    int before = get_num_threads();
    set_num_threads(threads);
    Tensor p = copy_of(w);
    SPD spd(NamedTensors{{"p", p}}, SPDOptions{.adam = {.lr = 1e-2}, .lambda = 0.7});
    spd.set_anchors({{"p", w0}});
    for (const Tensor& g : grads) {
      p.set_grad(g);
      spd.step();
    }
    set_num_threads(before);
    return p;
  };
  Tensor one = run(1), two = run(2);
  CHECK(bit_equal(one, two));
  // The definition, in double.
  std::vector<double> p = w.to_vector_f64(), a = w0.to_vector_f64(), m(n, 0), v(n, 0);
  for (int s = 0; s < 3; ++s) {
    std::vector<double> g = grads[s].to_vector_f64(), old = p;
    const int t = s + 1;
    double bc1 = 1 - std::pow(0.9, t), bc2 = 1 - std::pow(0.999, t), gd = 0, d0 = 0, d1 = 0;
    for (int64_t i = 0; i < n; ++i) {
      m[i] = 0.9 * m[i] + 0.1 * g[i];
      v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
      p[i] -= 1e-2 / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + 1e-8);
      gd += g[i] * (old[i] - a[i]);
      d0 += (old[i] - a[i]) * (old[i] - a[i]);
      d1 += (p[i] - a[i]) * (p[i] - a[i]);
    }
    if (-gd < 0) {
      double r = std::clamp((std::sqrt(d1) - std::sqrt(d0)) / std::sqrt(d1), 0.0, 1.0);
      for (int64_t i = 0; i < n; ++i) p[i] -= 0.7 * r * (p[i] - a[i]);
    }
  }
  CHECK(max_abs_diff(one, Tensor::from_vector(p, {n})) <= 1e-6);
}

TEST_CASE("schedules: constant, step, cosine with linear warmup") {
  ConstantSchedule c(0.1);
  CHECK(c.lr_at(0) == 0.1);
  CHECK(c.lr_at(1000) == 0.1);
  StepSchedule s(1.0, 10, 0.5);
  CHECK(s.lr_at(0) == 1.0);
  CHECK(s.lr_at(9) == 1.0);
  CHECK(s.lr_at(10) == 0.5);
  CHECK(s.lr_at(25) == 0.25);
  CosineSchedule cos(1.0, 4, 14, 0.1);
  CHECK(cos.lr_at(0) == doctest::Approx(0.25));
  CHECK(cos.lr_at(3) == doctest::Approx(1.0));
  CHECK(cos.lr_at(4) == doctest::Approx(1.0));
  CHECK(cos.lr_at(9) == doctest::Approx(0.55));  // halfway: min + (lr - min) / 2
  CHECK(cos.lr_at(14) == doctest::Approx(0.1));
  CHECK(cos.lr_at(100) == doctest::Approx(0.1));
  CosineSchedule nowarm(2.0, 0, 10);
  CHECK(nowarm.lr_at(0) == doctest::Approx(2.0));
  CHECK(nowarm.lr_at(5) == doctest::Approx(1.0));
  CHECK_THROWS_WITH_AS(CosineSchedule(1.0, 10, 10), doctest::Contains("total (10) must be greater than warmup (10)"),
                       Error);
  CHECK_THROWS_WITH_AS(StepSchedule(1.0, 0, 0.5), doctest::Contains("step_size must be >= 1"), Error);
  CHECK_THROWS_WITH_AS(c.lr_at(-1), doctest::Contains("step >= 0"), Error);
}

TEST_CASE("clip_grad_norm: global norm, scaled copies, shared gradient storage untouched") {
  Tensor a = Tensor::zeros({2}).requires_grad_(), b = Tensor::zeros({2}).requires_grad_(),
         c = Tensor::zeros({3}).requires_grad_();
  // a's and b's gradients are two views of one buffer [3, 4, 0, 0]... an in-place scale would hit it twice.
  Tensor shared = Tensor::from_vector(std::vector<float>{3.f, 4.f}, {2});
  a.set_grad(shared);
  b.set_grad(shared.detach());
  NamedTensors ps = {{"a", a}, {"b", b}, {"c", c}};  // c has no gradient
  double norm = clip_grad_norm(ps, 1.0);
  CHECK(norm == doctest::Approx(std::sqrt(50.0)));
  CHECK(shared.at(0) == 3.f);  // the original buffer is untouched
  const double k = 1.0 / (std::sqrt(50.0) + 1e-6);
  CHECK(a.grad().at(0) == doctest::Approx(3 * k));
  CHECK(b.grad().at(1) == doctest::Approx(4 * k));
  CHECK_FALSE(c.grad().defined());
  // Below max_norm nothing changes.
  Tensor before = a.grad();
  CHECK(clip_grad_norm(ps, 10.0) == doctest::Approx(1.0).epsilon(1e-5));
  CHECK(a.grad().impl() == before.impl());
  CHECK_THROWS_WITH_AS(clip_grad_norm(ps, 0.0), doctest::Contains("max_norm must be > 0"), Error);
}

}  // TEST_SUITE

TEST_SUITE("cuda") {
TEST_CASE("replay on the GPU matches PyTorch for every fixture config (within 1e-6)") {
  if (kernels::cuda_device_count() == 0) {
    MESSAGE("skipped: no CUDA device (" << kernels::cuda_unavailable_reason() << ")");
    return;
  }
  for (const char* file : {"optim_traces.safetensors", "optim_traces_anchor.safetensors"}) {
    const std::string path = test::reference_path(file);
    io::SafetensorsFile f(path);
    Trace trace = load_trace(path);
    json::Value configs = json::parse(f.metadata().at("configs"), "configs");
    for (const json::Value& c : configs.as_array()) {
      const std::string name = c.find("name")->as_string(), kind = c.find("optimizer")->as_string();
      CAPTURE(file);
      CAPTURE(name);
      ReplayOptions o;
      o.unanchored = {f.metadata().at("unanchored_pattern")};
      o.device = Device::cuda;
      ReplayResult r = replay(trace, kind, hyper_from_config(c), o);
      REQUIRE(r.tensors.size() == trace.names.size());
      for (const auto& [key, t] : r.tensors) {
        CHECK(t.device() == Device::cuda);
        CHECK(max_abs_diff(t.cpu(), f.load("result." + name + "." + key.substr(6))) <= 1e-6);
      }
      if (kind == "spd")
        for (const SpdTensorStats& s : r.spd_stats)
          CHECK(s.fired == static_cast<int64_t>(f.load("spd_fired." + name + "." + s.name, DType::i64).item()));
    }
  }
}
}
