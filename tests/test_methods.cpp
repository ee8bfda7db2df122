// The fine-tuning methods of the study beyond the optimizers' update rules: which tensors train (linear
// probing, BitFit), at which lr (layer-wise lr decay), and the WiSE-FT weight-space interpolation. Each rule is
// checked on a small case computed by hand.
#include <doctest/doctest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "core/io/safetensors.h"
#include "core/io/svg.h"
#include "core/ops.h"
#include "core/stats.h"
#include "models/vit.h"
#include "nn/interpolate.h"
#include "nn/lora.h"
#include "optim/optim.h"
#include "optim/reference.h"
#include "tests/support.h"

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

TEST_CASE("FTP: a learned radius per tensor; the first step stays at the anchor, the next grows the radius") {
  // By hand, with w0 = w = 0 and lr 0.1, on a 2 x 2 matrix and a 1-D tensor of 3 (one row for FTP).
  Tensor w = Tensor::zeros({2, 2}).requires_grad_(true), b = Tensor::zeros({3}).requires_grad_(true);
  FTP ftp(NamedTensors{{"w", w}, {"b", b}}, FTPOptions{.adam = {.lr = 0.1}, .kappa = 1.0});
  ftp.capture_anchors();
  CHECK(ftp.kind() == "ftp");
  // Step 1: Adam's first step is -lr sign(g): W~ = [[-.1, .1], [-.1, -.1]], each row 0.2 away in L1. The radius
  // starts at 1e-8, so W = W~ * 1e-8 / 0.2: the tensor stays at its anchor.
  w.set_grad(Tensor::from_vector(std::vector<float>{1, -1, 2, 0.5f}, {2, 2}));
  b.set_grad(Tensor::from_vector(std::vector<float>{1, 1, -1}, {3}));
  ftp.step();
  CHECK(ftp.radii() == std::vector<double>{1e-8, 1e-8});
  for (float v : w.to_vector_f32()) CHECK(std::abs(v) <= 1e-8f);
  for (float v : b.to_vector_f32()) CHECK(std::abs(v) <= 1e-8f);
  // Step 2, g = 1 everywhere. dL/dgamma = sum_j <g_j, d'_j> / n'_j = (0 / 0.2) + (-0.2 / 0.2) = -1 for w (the loss
  // falls as the radius grows), and (-0.1 - 0.1 + 0.1) / 0.3 = -1/3 for b. The radius's Adam at t = 2: m = 0.1 g,
  // v = 0.001 g^2, so m^ / sqrt(v^) = (0.1 / 0.19) / sqrt(0.001 / 0.001999) = 0.744152 sign(g) whatever |g|, and
  // gamma = 1e-8 + 0.01 * 0.744152 for both.
  w.set_grad(Tensor::ones({2, 2}));
  b.set_grad(Tensor::ones({3}));
  ftp.step();
  const double grown = 1e-8 + 0.01 * (0.1 / 0.19) / std::sqrt(0.001 / (1 - 0.999 * 0.999));
  CHECK(grown == doctest::Approx(1e-8 + 0.00744152).epsilon(1e-6));
  REQUIRE(ftp.radii().size() == 2);
  CHECK(ftp.radii()[0] == doctest::Approx(grown).epsilon(1e-6));
  CHECK(ftp.radii()[1] == doctest::Approx(grown).epsilon(1e-6));
  // Adam's second step moves every element by about lr (0.1) away from 0, far outside the radius: every row of w,
  // and b as a whole, ends exactly gamma away from the anchor in L1.
  const std::vector<float> wv = w.to_vector_f32(), bv = b.to_vector_f32();
  CHECK(std::abs(wv[0]) + std::abs(wv[1]) == doctest::Approx(grown).epsilon(1e-5));
  CHECK(std::abs(wv[2]) + std::abs(wv[3]) == doctest::Approx(grown).epsilon(1e-5));
  CHECK(std::abs(bv[0]) + std::abs(bv[1]) + std::abs(bv[2]) == doctest::Approx(grown).epsilon(1e-5));

  // kappa = 0 anneals a positive radius gradient away: the radius keeps its first value.
  Tensor u = Tensor::zeros({2, 2}).requires_grad_(true);
  FTP frozen_radius(NamedTensors{{"u", u}}, FTPOptions{.adam = {.lr = 0.1}, .kappa = 0.0});
  frozen_radius.capture_anchors();
  u.set_grad(Tensor::ones({2, 2}));  // W~ = -0.1 everywhere
  frozen_radius.step();
  u.set_grad(Tensor::full({2, 2}, -1.0f));  // <g, d'> = +0.2 per row: a radius gradient of +2, times kappa = 0
  frozen_radius.step();
  CHECK(frozen_radius.radii()[0] == 1e-8);
  // Without an anchor (a new head) FTP is the Adam step alone.
  Tensor h = Tensor::zeros({2, 2}).requires_grad_(true), h_ref = Tensor::zeros({2, 2}).requires_grad_(true);
  FTP loose(NamedTensors{{"h", h}}, FTPOptions{.adam = {.lr = 0.1}});
  Adam adam(NamedTensors{{"h", h_ref}}, AdamOptions{.lr = 0.1});
  for (int s = 0; s < 2; ++s) {
    h.set_grad(Tensor::ones({2, 2}));
    h_ref.set_grad(Tensor::ones({2, 2}));
    loose.step();
    adam.step();
  }
  CHECK(h.to_vector_f32() == h_ref.to_vector_f32());
  CHECK_THROWS_WITH_AS(FTP(NamedTensors{{"w", Tensor::zeros({2}).requires_grad_(true)}}, FTPOptions{.kappa = 2}),
                       doctest::Contains("FTPOptions: kappa must be in [0, 1]; got 2"), Error);
}

TEST_CASE("LoRA: W + (alpha / r) B A with PEFT's init and names, exact gradients, merge keeps the bits") {
  Generator gen(4);
  nn::Linear lin(3, 2, true, gen);
  const std::vector<float> w_before = lin.weight.to_vector_f32();
  lin.add_lora(1, 2.0, gen);  // rank 1, alpha 2: scale 2
  CHECK(lin.lora_scale == 2.0);
  std::vector<std::string> names;
  for (const auto& [n, t] : lin.named_parameters()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"weight", "bias", "lora_A.weight", "lora_B.weight"});
  CHECK(lin.lora_A->weight.shape() == Shape{1, 3});  // [rank, in]
  CHECK(lin.lora_B->weight.shape() == Shape{2, 1});  // [out, rank]
  for (float a : lin.lora_A->weight.to_vector_f32()) CHECK(std::abs(a) <= 1 / std::sqrt(3.0f));
  CHECK(lin.effective_weight().to_vector_f32() == w_before);  // B = 0: the layer is unchanged, bit for bit
  // By hand: W = [[1, 0, 0], [0, 1, 0]], b = 0, A = [[1, 2, 3]], B = [[1], [-1]]:
  // W + 2 B A = [[3, 4, 6], [-2, -3, -6]]; for x = [1, 1, 1], y = x W^T + 2 (x A^T) B^T = [1, 1] + 12 [1, -1].
  lin.weight.detach().copy_(Tensor::from_vector(std::vector<float>{1, 0, 0, 0, 1, 0}, {2, 3}));
  lin.bias->detach().copy_(Tensor::zeros({2}));
  lin.lora_A->weight.detach().copy_(Tensor::from_vector(std::vector<float>{1, 2, 3}, {1, 3}));
  lin.lora_B->weight.detach().copy_(Tensor::from_vector(std::vector<float>{1, -1}, {2, 1}));
  lin.weight.requires_grad_(false);  // frozen, as LoRA trains
  CHECK(lin.effective_weight().to_vector_f32() == std::vector<float>{3, 4, 6, -2, -3, -6});
  const Tensor x = Tensor::ones({1, 3});
  Tensor y = lin.forward(x);
  CHECK(y.to_vector_f32() == std::vector<float>{13, -11});
  // loss = y . [1, 2]: dW = dy^T x = [[1, 1, 1], [2, 2, 2]], so dA = 2 B^T dW = [-2, -2, -2] and
  // dB = 2 dW A^T = [[12], [24]]; the frozen W gets no gradient.
  sum(mul(y, Tensor::from_vector(std::vector<float>{1, 2}, {1, 2}))).backward();
  CHECK(lin.lora_A->weight.grad().to_vector_f32() == std::vector<float>{-2, -2, -2});
  CHECK(lin.lora_B->weight.grad().to_vector_f32() == std::vector<float>{12, 24});
  CHECK_FALSE(lin.weight.grad().defined());
  // Merged, the layer gives the same bits; unmerged, W comes back; removed with a merge, it is a plain Linear.
  Generator gx(5);
  const Tensor xs = Tensor::randn({4, 3}, gx);
  const std::vector<float> adapted = lin.forward(xs).to_vector_f32();
  lin.merge_lora();
  CHECK(lin.forward(xs).to_vector_f32() == adapted);
  lin.unmerge_lora();
  CHECK(lin.weight.to_vector_f32() == std::vector<float>{1, 0, 0, 0, 1, 0});
  lin.remove_lora(/*merge=*/true);
  CHECK(lin.named_parameters().size() == 2);
  CHECK(lin.weight.to_vector_f32() == std::vector<float>{3, 4, 6, -2, -3, -6});
  CHECK(lin.forward(xs).to_vector_f32() == adapted);
  CHECK_THROWS_WITH_AS(lin.add_lora(3, 1.0, gen), doctest::Contains("rank must be in [1, 2] for a [2, 3] weight; got 3"),
                       Error);
}

TEST_CASE("LoRA on a ViT: four adapters per block, only they and the head train, SPD decays them towards zero") {
  models::ViTConfig c = models::vit_preset("vit_fmnist_tiny");
  models::VisionTransformer vit(c, 1);
  const NamedTensors plain = vit.named_parameters();
  const std::vector<std::string> adapted = nn::add_lora(vit, {.rank = 2, .alpha = 4, .seed = 3});
  REQUIRE(adapted.size() == size_t(4 * c.depth));
  CHECK(adapted[0] == "blocks.0.attn.qkv");
  CHECK(adapted[3] == "blocks.0.mlp.fc2");
  CHECK(nn::lora_parameters(vit).size() == size_t(8 * c.depth));
  CHECK(vit.named_parameters().size() == plain.size() + 8 * c.depth);
  CHECK_THROWS_WITH_AS(nn::add_lora(vit, {}), doctest::Contains("'blocks.0.attn.qkv' already has adapters"), Error);
  // The groups: the adapters first, unanchored, then the head; everything else frozen.
  NamedTensors named = vit.named_parameters();
  std::vector<ParamGroup> groups = lora_groups(named);
  REQUIRE(groups.size() == 3);  // adapters; head.bias (no decay); head.weight
  CHECK(groups[0].params.size() == size_t(8 * c.depth));
  CHECK_FALSE(groups[0].anchored);
  CHECK(groups[0].decay_scale == 1.0);
  CHECK(names(groups[1]) == std::set<std::string>{"head.bias"});
  const NamedTensors frozen = freeze_unlisted(named, groups);
  CHECK(frozen.size() == plain.size() - 2);
  // SPD in PEFT mode: the head is anchored at its start; each adapter's w0 is zero. One step on lora_A of block 0
  // equals the readable reference step with w0 = 0.
  auto spd = make_optimizer("spd", groups, Hyperparams{.lr = 0.01, .lambda = 1.0});
  spd->capture_anchors();
  std::set<std::string> anchored;
  for (const auto& [n, t] : spd->anchors()) anchored.insert(n);
  CHECK(anchored == std::set<std::string>{"head.weight", "head.bias"});
  Generator gen(6);
  Tensor x = Tensor::randn({2, 1, 28, 28}, gen);
  Tensor y = Tensor::from_vector(std::vector<int64_t>{1, 7}, {2});
  cross_entropy(vit.forward(x), y).backward();
  for (const auto& [n, t] : frozen) CHECK_FALSE(t.grad().defined());
  Tensor a;
  for (const auto& [n, t] : named)
    if (n == "blocks.0.attn.qkv.lora_A.weight") a = t;
  REQUIRE(a.defined());
  std::vector<float> w = a.to_vector_f32(), g = a.grad().to_vector_f32(), w0(w.size(), 0.0f);
  reference::AdamState<float> st;
  const reference::SpdStep ref = reference::spd_step(w, g, w0, st, SPDOptions{.adam = {.lr = 0.01}, .lambda = 1.0});
  spd->step();
  const std::vector<float> got = a.to_vector_f32();
  float worst = 0;
  for (size_t i = 0; i < w.size(); ++i) worst = std::max(worst, std::abs(got[i] - w[i]));
  CHECK(worst <= 1e-7f);
  CHECK(spd->stats()[0].name == "blocks.0.attn.qkv.lora_A.weight");
  CHECK(spd->stats()[0].c == doctest::Approx(ref.c));
  // Removing the adapters with a merge leaves timm's names, and the merged model computes what the adapted did.
  vit.eval();
  const std::vector<float> adapted_logits = vit.forward(x).to_vector_f32();
  nn::remove_lora(vit);
  CHECK(vit.named_parameters().size() == plain.size());
  CHECK(vit.forward(x).to_vector_f32() == adapted_logits);
}

TEST_CASE("LoRA adapter files: saved alone with their shape, loaded into a fresh model, PEFT's prefix accepted") {
  test::TempDir dir("lora");
  models::ViTConfig c = models::vit_preset("vit_fmnist_tiny");
  models::VisionTransformer trained(c, 1), fresh(c, 1);
  nn::LoRAOptions o{.rank = 2, .alpha = 2, .seed = 9};
  nn::add_lora(trained, o);
  Generator gen(2);
  for (auto& [n, t] : nn::lora_parameters(trained)) t.detach().copy_(Tensor::randn(t.shape(), gen) * 0.01);
  nn::save_lora(trained, o, dir.file("a.safetensors"));
  io::SafetensorsFile f(dir.file("a.safetensors"));
  CHECK(f.names().size() == size_t(8 * c.depth));  // the adapters alone
  const nn::LoRAOptions read = nn::load_lora(fresh, dir.file("a.safetensors"));
  CHECK(read.rank == 2);
  CHECK(read.targets == o.targets);
  Generator gx(3);
  Tensor x = Tensor::randn({2, 1, 28, 28}, gx);
  trained.eval();
  fresh.eval();
  CHECK(fresh.forward(x).to_vector_f32() == trained.forward(x).to_vector_f32());
  // PEFT's layout: "base_model.model." before every name and no spdlab metadata; the shape comes from the caller.
  NamedTensors peft;
  for (auto& [n, t] : nn::lora_parameters(trained)) peft.emplace_back("base_model.model." + n, t);
  io::save_safetensors(dir.file("peft.safetensors"), peft);
  models::VisionTransformer other(c, 1);
  CHECK_THROWS_WITH_AS(nn::load_lora(other, dir.file("peft.safetensors")),
                       doctest::Contains("no spdlab.lora metadata (rank, alpha, targets)"), Error);
  nn::load_lora(other, dir.file("peft.safetensors"), &o);
  other.eval();
  CHECK(other.forward(x).to_vector_f32() == trained.forward(x).to_vector_f32());
  // A file short of one adapter is refused, naming it.
  NamedTensors partial(peft.begin() + 1, peft.end());
  io::save_safetensors(dir.file("partial.safetensors"), partial);
  models::VisionTransformer third(c, 1);
  CHECK_THROWS_WITH_AS(nn::load_lora(third, dir.file("partial.safetensors"), &o),
                       doctest::Contains("adapters missing from the file: blocks.0.attn.qkv.lora_A.weight"), Error);
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
