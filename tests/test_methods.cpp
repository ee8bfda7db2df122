// The fine-tuning methods of the study beyond the optimizers' update rules: which tensors train (linear
// probing, BitFit), at which lr (layer-wise lr decay), and the WiSE-FT weight-space interpolation. Each rule is
// checked on a small case computed by hand.
#include <doctest/doctest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "core/io/svg.h"
#include "core/ops.h"
#include "core/stats.h"
#include "nn/interpolate.h"
#include "optim/optim.h"

using namespace spdlab;
using namespace spdlab::optim;

namespace {

Tensor leaf(const Shape& shape, Generator& gen) { return Tensor::randn(shape, gen).requires_grad_(true); }

// A two-block ViT's parameter names and shapes (width 4), as timm names them, with a CLIP-style norm_pre.
NamedTensors vit_params() {
  Generator gen(1);
  NamedTensors p = {{"cls_token", leaf({1, 1, 4}, gen)},
                    {"pos_embed", leaf({1, 5, 4}, gen)},
                    {"patch_embed.proj.weight", leaf({4, 1, 2, 2}, gen)},
                    {"patch_embed.proj.bias", leaf({4}, gen)},
                    {"norm_pre.weight", leaf({4}, gen)}};
  for (int b = 0; b < 2; ++b) {
    const std::string s = "blocks." + std::to_string(b) + ".";
    p.push_back({s + "attn.qkv.weight", leaf({12, 4}, gen)});
    p.push_back({s + "attn.qkv.bias", leaf({12}, gen)});
    p.push_back({s + "mlp.fc1.weight", leaf({8, 4}, gen)});
  }
  p.push_back({"norm.weight", leaf({4}, gen)});
  p.push_back({"head.weight", leaf({3, 4}, gen)});
  p.push_back({"head.bias", leaf({3}, gen)});
  return p;
}

std::set<std::string> names(const ParamGroup& g) {
  std::set<std::string> s;
  for (const auto& [n, t] : g.params) s.insert(n);
  return s;
}

}  // namespace

TEST_SUITE("methods") {

TEST_CASE("linear probing trains the head alone; BitFit the biases and the head") {
  NamedTensors p = vit_params();
  std::vector<ParamGroup> lp = linear_probe_groups(p);
  REQUIRE(lp.size() == 2);  // head.bias (no decay), head.weight (decay)
  CHECK(names(lp[0]) == std::set<std::string>{"head.bias"});
  CHECK(lp[0].decay_scale == 0.0);
  CHECK(names(lp[1]) == std::set<std::string>{"head.weight"});
  CHECK(lp[1].decay_scale == 1.0);

  std::vector<ParamGroup> bf = bitfit_groups(p);
  REQUIRE(bf.size() == 2);
  CHECK(names(bf[0]) == std::set<std::string>{"patch_embed.proj.bias", "blocks.0.attn.qkv.bias",
                                              "blocks.1.attn.qkv.bias", "head.bias"});
  CHECK(names(bf[1]) == std::set<std::string>{"head.weight"});

  // freeze_unlisted: everything else stops needing gradients, and a step moves only the probed head.
  CHECK(freeze_unlisted(p, lp).size() == p.size() - 2);
  for (const auto& [n, t] : p) CHECK(t.requires_grad() == (n.rfind("head.", 0) == 0));
  auto opt = make_optimizer("adamw", lp, Hyperparams{.lr = 0.1, .weight_decay = 0.1});
  std::vector<Tensor> before;
  for (const auto& [n, t] : p) before.push_back(t.detach().clone());
  Generator gen(2);
  for (auto& [n, t] : p)
    if (t.requires_grad()) t.set_grad(Tensor::randn(t.shape(), gen));
  opt->step();
  for (size_t i = 0; i < p.size(); ++i) {
    const bool moved = p[i].second.to_vector_f32() != before[i].to_vector_f32();
    CHECK_MESSAGE(moved == (p[i].first.rfind("head.", 0) == 0), p[i].first);
  }

  NamedTensors no_head = {{"w", leaf({2, 2}, gen)}};
  CHECK_THROWS_WITH_AS(linear_probe_groups(no_head), doctest::Contains("no trainable head.weight or head.bias"), Error);
}

TEST_CASE("layer-wise lr decay: scales decay^(L + 1 - layer) from the stem to the head, timm's layer ids") {
  NamedTensors p = vit_params();
  CHECK(vit_layer_id("cls_token", 2) == 0);
  CHECK(vit_layer_id("patch_embed.proj.weight", 2) == 0);
  CHECK(vit_layer_id("norm_pre.weight", 2) == 0);
  CHECK(vit_layer_id("blocks.0.attn.qkv.weight", 2) == 1);
  CHECK(vit_layer_id("blocks.1.mlp.fc1.weight", 2) == 2);
  CHECK(vit_layer_id("norm.weight", 2) == 3);
  CHECK(vit_layer_id("head.weight", 2) == 3);
  CHECK(vit_layer_id("blocksx.1.w", 2) == 3);

  std::vector<ParamGroup> g = layer_decay_groups(p, 0.5);
  // Layers 0..3 (stem, blocks.0, blocks.1, norm + head), each split into no-decay and decay: 8 groups.
  REQUIRE(g.size() == 8);
  const double expect[4] = {0.125, 0.25, 0.5, 1.0};  // 0.5^(3 - layer)
  for (size_t i = 0; i < g.size(); ++i) {
    CAPTURE(i);
    CHECK(g[i].lr_scale == expect[i / 2]);
    CHECK(g[i].decay_scale == (i % 2 ? 1.0 : 0.0));
  }
  CHECK(names(g[0]) == std::set<std::string>{"cls_token", "pos_embed", "patch_embed.proj.bias", "norm_pre.weight"});
  CHECK(names(g[1]) == std::set<std::string>{"patch_embed.proj.weight"});
  CHECK(names(g[3]) == std::set<std::string>{"blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight"});
  CHECK(names(g[6]) == std::set<std::string>{"norm.weight", "head.bias"});
  CHECK(names(g[7]) == std::set<std::string>{"head.weight"});

  // The optimizer runs each group at lr * scale.
  auto opt = make_optimizer("adamw", g, Hyperparams{.lr = 0.01});
  CHECK(opt->group_lr(0) == doctest::Approx(0.00125));
  CHECK(opt->group_lr(7) == doctest::Approx(0.01));
  // decay 1 is plain fine-tuning: every scale 1.
  for (const ParamGroup& one : layer_decay_groups(p, 1.0)) CHECK(one.lr_scale == 1.0);
  CHECK_THROWS_WITH_AS(layer_decay_groups(p, 0.0), doctest::Contains("decay must be in (0, 1]; got 0"), Error);
  CHECK_THROWS_WITH_AS(layer_decay_groups(p, 1.5), doctest::Contains("decay must be in (0, 1]; got 1.5"), Error);
}

TEST_CASE("WiSE-FT interpolation: (1 - alpha) a + alpha b, exact endpoints, the fine-tuned head, errors") {
  nn::NamedTensors a = {{"w", Tensor::from_vector(std::vector<float>{1, 2, -4, 0}, {2, 2})},
                        {"head.weight", Tensor::from_vector(std::vector<float>{1, 1}, {1, 2})}};
  nn::NamedTensors b = {{"head.weight", Tensor::from_vector(std::vector<float>{3, 5}, {1, 2})},
                        {"w", Tensor::from_vector(std::vector<float>{3, 6, 4, 0.1f}, {2, 2})}};
  nn::NamedTensors m = nn::interpolate(a, b, 0.25);
  REQUIRE(m.size() == 2);
  CHECK(m[0].first == "w");  // a's order
  const std::vector<float> w = m[0].second.to_vector_f32();
  CHECK(w[0] == 1.5f);   // 0.75 * 1 + 0.25 * 3
  CHECK(w[1] == 3.0f);   // 0.75 * 2 + 0.25 * 6
  CHECK(w[2] == -2.0f);  // 0.75 * -4 + 0.25 * 4
  CHECK(w[3] == doctest::Approx(0.025f));
  CHECK(m[1].second.to_vector_f32() == std::vector<float>{1.5f, 2.0f});

  // alpha 0 and 1 give the two models bit for bit (0.1f is not a sum of two roundings away).
  CHECK(nn::interpolate(a, b, 0.0)[0].second.to_vector_f32() == a[0].second.to_vector_f32());
  CHECK(nn::interpolate(a, b, 1.0)[0].second.to_vector_f32() == b[1].second.to_vector_f32());
  // The fine-tuned head for every alpha.
  nn::NamedTensors h = nn::interpolate(a, b, 0.0, {"head.*"});
  CHECK(h[0].second.to_vector_f32() == a[0].second.to_vector_f32());
  CHECK(h[1].second.to_vector_f32() == std::vector<float>{3, 5});
  // The result is new storage: changing it leaves a and b alone.
  CHECK(m[0].second.storage() != a[0].second.storage());

  nn::NamedTensors c = {{"w", Tensor::zeros({4})}, {"extra", Tensor::zeros({1})}};
  CHECK_THROWS_WITH_AS(nn::interpolate(a, c, 0.5),
                       doctest::Contains("'w' is f32 [2, 2] on cpu in the first model and f32 [4] on cpu in the second"),
                       Error);
  CHECK_THROWS_WITH_AS(nn::interpolate(a, c, 0.5), doctest::Contains("'head.weight' is in the first model only"), Error);
  CHECK_THROWS_WITH_AS(nn::interpolate(a, c, 0.5), doctest::Contains("'extra' is in the second model only"), Error);
  CHECK_THROWS_WITH_AS(nn::interpolate(a, b, std::nan("")), doctest::Contains("alpha must be finite"), Error);
}

TEST_CASE("MARS-SP: rows farther than gamma (in L1) from the anchor are scaled back; the step is Adam's") {
  // By hand: w0 = 0, gamma = 2. Row 0 is 4 away in L1 -> halved; row 1 is 0.2 away -> kept.
  Tensor w = Tensor::from_vector(std::vector<float>{1, -2, 1, 0.1f, 0.1f, 0}, {2, 3});
  mars_project(w, Tensor::zeros({2, 3}), 2.0);
  CHECK(w.to_vector_f32() == std::vector<float>{0.5f, -1, 0.5f, 0.1f, 0.1f, 0});
  // Around a non-zero anchor, 4-D: each output channel is a row of in * kh * kw.
  Tensor w0 = Tensor::from_vector(std::vector<float>{1, 1, 1, 1, 2, 2, 2, 2}, {2, 1, 2, 2});
  Tensor w4 = Tensor::from_vector(std::vector<float>{4, 1, 1, 1, 2, 2, 2, 2.5f}, {2, 1, 2, 2});
  mars_project(w4, w0, 1.0);  // channel 0: distance 3 -> a third of it; channel 1: 0.5 -> kept
  CHECK(w4.to_vector_f32() == std::vector<float>{2, 1, 1, 1, 2, 2, 2, 2.5f});

  // The optimizer: one step equals Adam's step followed by the projection, and leaves 1-D tensors alone.
  Generator gen(3);
  Tensor a = Tensor::randn({4, 5}, gen).requires_grad_(true), bias = Tensor::randn({4}, gen).requires_grad_(true);
  Tensor a_ref = a.detach().clone().requires_grad_(true), bias_ref = bias.detach().clone().requires_grad_(true);
  const Tensor a0 = a.detach().clone();
  MarsSP mars(NamedTensors{{"a", a}, {"bias", bias}}, MarsSPOptions{.adam = {.lr = 0.5}, .gamma = 0.3});
  Adam adam(NamedTensors{{"a", a_ref}, {"bias", bias_ref}}, AdamOptions{.lr = 0.5});
  mars.capture_anchors();
  CHECK(mars.kind() == "mars_sp");
  for (int step = 0; step < 3; ++step) {
    Tensor g = Tensor::randn({4, 5}, gen), gb = Tensor::randn({4}, gen);
    a.set_grad(g);
    bias.set_grad(gb);
    a_ref.set_grad(g.clone());
    bias_ref.set_grad(gb.clone());
    // Adam from mars's pre-step values: the reference moves from where mars is.
    mars.step();
    adam.step();
    Tensor expect = a_ref.detach().clone();
    mars_project(expect, a0, 0.3);
    CHECK(a.to_vector_f32() == expect.to_vector_f32());
    a_ref.detach().copy_(expect);  // the reference continues from the projected weights, as mars does
    CHECK(bias.to_vector_f32() == bias_ref.to_vector_f32());  // 1-D: never projected
  }
  // Every row ends within gamma of its anchor (up to float rounding).
  const std::vector<float> fin = a.to_vector_f32(), start = a0.to_vector_f32();
  for (int r = 0; r < 4; ++r) {
    double l1 = 0;
    for (int c = 0; c < 5; ++c) l1 += std::abs(fin[r * 5 + c] - start[r * 5 + c]);
    CHECK(l1 <= 0.3 + 1e-6);
  }

  CHECK_THROWS_WITH_AS(MarsSP(NamedTensors{{"w", Tensor::zeros({2, 2}).requires_grad_(true)}},
                              MarsSPOptions{.gamma = 0}),
                       doctest::Contains("MarsSPOptions: gamma must be > 0; got 0"), Error);
  CHECK_THROWS_WITH_AS(make_optimizer("mars_sp", NamedTensors{{"w", Tensor::zeros({2, 2}).requires_grad_(true)}},
                                      Hyperparams{.weight_decay = 0.1}),
                       doctest::Contains("mars_sp has no weight_decay"), Error);
}

TEST_CASE("plots: round ticks, every point labelled apart from the others, legends as wide as their names") {
  svg::Ticks t = svg::nice_ticks(72.9, 84.3);  // accuracies in %: ticks every 2.5 from 72.5 to 85
  CHECK(t.step == 2.5);
  CHECK(t.first == 72.5);
  CHECK(t.last == 85.0);
  t = svg::nice_ticks(0.3965, 0.4913);  // the old plot's axis ran from 0.3965: now 0.38 ... 0.5 by 0.02
  CHECK(t.step == doctest::Approx(0.02));
  CHECK(t.first == doctest::Approx(0.38));
  CHECK(t.last == doctest::Approx(0.5));
  t = svg::nice_ticks(3, 3);  // one value: a range around it
  CHECK(t.first < 3);
  CHECK(t.last > 3);

  // Two methods at the same point (Adam under AdamW) both get a label, at different heights.
  const std::string s = svg::scatter("t", "x", "y", {{"adam", 45.8, 80.8, 0, 0}, {"adamw", 45.8, 80.8, 0, 0},
                                                    {"spd", 49.9, 80.2, 0.8, 0.1}});
  auto label_y = [&](const std::string& name) {
    const size_t at = s.find(">" + name + "</text>");
    REQUIRE(at != std::string::npos);
    const size_t y = s.rfind(" y=\"", at);
    return std::stod(s.substr(y + 4));
  };
  CHECK(label_y("adam") != label_y("adamw"));
  // A legend entry of 40 characters widens the chart rather than being cut off at its edge.
  const std::string long_name(40, 'n');
  const std::string l = svg::lines("t", "x", "y", {{long_name, {0, 1}, {0, 1}}});
  const size_t w = l.find("width=\"");
  CHECK(std::stod(l.substr(w + 7)) >= 70 + 560 + 16 + 40 * 7);
  CHECK(svg::palette(0) != svg::palette(1));
}

TEST_CASE("study statistics: paired differences with a 95% t interval, and the ID-OOD Pareto front") {
  // By hand: differences 1, 2, 3 -> mean 2, sd 1, half-width t(0.975, 2) / sqrt(3) = 4.303 / 1.732 = 2.484.
  stats::PairedDiff d = stats::paired_difference({2, 4, 6}, {1, 2, 3});
  CHECK(d.mean == doctest::Approx(2.0));
  CHECK(d.half_width == doctest::Approx(4.303 / std::sqrt(3.0)));
  CHECK(d.n == 3);
  CHECK(stats::paired_difference({0.5}, {0.25}).half_width < 0);  // one pair: no interval
  CHECK(stats::t_quantile_975(1) == doctest::Approx(12.706));
  CHECK(stats::t_quantile_975(100) == doctest::Approx(1.96));
  CHECK_THROWS_WITH_AS(stats::paired_difference({1, 2}, {1}), doctest::Contains("two equal, non-empty lists"), Error);
  // (OOD, ID): (1, 5) and (3, 4) and (4, 1) are on the front; (2, 3) is beaten by (3, 4); (3, 2) too.
  const auto f = stats::pareto_front({{2, 3}, {1, 5}, {3, 4}, {4, 1}, {3, 2}});
  REQUIRE(f.size() == 3);
  CHECK(f[0] == std::pair<double, double>{1, 5});
  CHECK(f[1] == std::pair<double, double>{3, 4});
  CHECK(f[2] == std::pair<double, double>{4, 1});
}

}  // TEST_SUITE
