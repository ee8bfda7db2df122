// The Vision Transformer: PyTorch parity on committed fixtures, timm names, checkpoint round trips,
// load errors, Hugging Face name mapping, head replacement, pos-embed resampling, freezing, and inference in
// chunks side by side (logits, Kernels::run_apart).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/io/safetensors.h"
#include "models/evaluate.h"
#include "models/vit.h"
#include "kernels/kernels.h"
#include "kernels/threads.h"
#include "tests/support.h"

using namespace spdlab;
using namespace spdlab::models;

namespace {

double max_abs(const Tensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::abs(t.at(i)));
  return m;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.numel() == b.numel());
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(a.at(i) - b.at(i)));
  return m;
}

ViTConfig small_cfg() {
  ViTConfig c = vit_preset("vit_fmnist_tiny");
  c.depth = 2;
  return c;
}

}  // namespace

TEST_SUITE("vit") {

TEST_CASE("logits and input gradient match PyTorch (28x28 fixture)") {
  io::SafetensorsFile f(test::reference_path("vit_small.safetensors"));
  const LoadOptions fixture_keys{{"input*", "labels", "logits", "loss"}, true};
  auto model = load_vit(test::reference_path("vit_small.safetensors"), ViTConfig::from_metadata(f.metadata(), "fixture"), fixture_keys);
  model->eval();
  Tensor x = f.load("input").detach().clone();
  x.requires_grad_();
  Tensor logits = model->forward(x);
  Tensor expect = f.load("logits");
  double err = max_abs_diff(logits, expect);
  MESSAGE("vit_small logits: max abs error ", err, " (max |logit| ", max_abs(expect), ")");
  CHECK(err < 1e-4);
  Tensor loss = cross_entropy(logits, f.load("labels"));
  CHECK(loss.item() == doctest::Approx(f.load("loss").item()).epsilon(1e-5));
  loss.backward();
  Tensor gx = x.grad(), eg = f.load("input_grad");
  double gerr = max_abs_diff(gx, eg), scale = max_abs(eg);
  MESSAGE("vit_small input grad: max abs error ", gerr, ", relative to max |grad| ", gerr / scale);
  CHECK(gerr / scale < 1e-4);
}

TEST_CASE("vit_tiny_patch16_224 matches PyTorch (weights generated at test time)") {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
    MESSAGE("skipped: /usr/bin/python3 with torch is not available to generate the vit_tiny_patch16_224 weights");
    return;
  }
  test::TempDir tmp("vit");
  std::string dir = tmp.path.string();
  std::string cmd = "/usr/bin/python3 " + test::reference_path("gen_vit.py") + " --tiny224 " + dir + " >/dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::string path = dir + "/vit_tiny_patch16_224.safetensors";
  io::SafetensorsFile f(path);
  auto model = load_vit(path, vit_preset("vit_tiny_patch16_224"), {{"input*", "labels", "logits", "loss"}, true});
  model->eval();
  autograd::NoGradGuard ng;
  Tensor logits = model->forward(f.load("input"));
  double err = max_abs_diff(logits, f.load("logits"));
  MESSAGE("vit_tiny_patch16_224 logits: max abs error ", err);
  CHECK(err < 1e-4);
  std::filesystem::remove_all(dir);
}

TEST_CASE("Block::forward_class_token equals row 0 of Block::forward, gradients included") {
  Generator gen(11);
  nn::Block blk(24, 3, 4.0, 1e-6, 0.0, gen, nullptr);
  Generator xg(12);
  Tensor x0 = Tensor::randn({3, 7, 24}, xg), w = Tensor::randn({3, 24}, xg);
  auto run = [&](bool class_token, Tensor& out) {
    blk.zero_grad();
    Tensor x = x0.clone().requires_grad_(true);
    out = (class_token ? blk.forward_class_token(x) : blk.forward(x)).select(1, 0);
    sum(mul(out, w)).backward();
    std::vector<Tensor> grads{x.grad()};
    for (auto& [name, p] : blk.named_parameters()) grads.push_back(p.grad().clone());
    return grads;
  };
  Tensor full, part;
  auto gf = run(false, full), gp = run(true, part);
  REQUIRE(part.shape() == Shape{3, 24});
  double err = max_abs_diff(full, part);
  MESSAGE("class-token block: max abs difference ", err, " (max |y| ", max_abs(full), ")");
  CHECK(err <= 1e-6 * max_abs(full));
  REQUIRE(gf.size() == gp.size());
  for (size_t i = 0; i < gf.size(); ++i) {
    CAPTURE(i);
    CHECK(max_abs_diff(gf[i], gp[i]) <= 1e-5 * max_abs(gf[i]));
  }
}

TEST_CASE("logits: a batch's chunks side by side give model.forward's logits, on any thread count the same bits") {
  // The study's architecture (vit_fmnist_tiny, 2 blocks here): 45 images are 2250 token rows, cut into 4 chunks of
  // 11-12 images (the CPU's Kernels::inference_chunk_rows, 1024); 7 images (350 rows) run whole. Where spdlab's
  // SGEMM takes the products (AVX2 CPUs), each element of a product sums the same terms in the same order at any
  // number of rows, so the chunks' logits are forward's to the bit; OpenBLAS (the baseline set, SPDLAB_SGEMM=blas)
  // promises no such thing, so there they agree to rounding, and the chunks' still do not depend on the thread
  // count.
  const char* sgemm = std::getenv("SPDLAB_SGEMM");
  const bool own_sgemm = std::string(kernels::cpu_isa()) != "base" && !(sgemm && std::string(sgemm) == "blas");
  VisionTransformer model(small_cfg(), 3);
  model.eval();
  Generator gen(5);
  const int threads = get_num_threads();
  for (int64_t B : {45, 7}) {
    CAPTURE(B);
    const Tensor x = Tensor::randn({B, 1, 28, 28}, gen);
    Tensor whole;
    {
      autograd::NoGradGuard ng;
      whole = model.forward(x);
    }
    std::vector<std::vector<float>> got;
    for (int t : {1, std::max(2, threads), 8}) {  // 8: more threads than 45's 4 chunks, so the batch runs whole
      CAPTURE(t);
      set_num_threads(t);
      const Tensor y = logits(model, x);
      CHECK(y.shape() == whole.shape());
      CHECK_FALSE(y.requires_grad());
      CHECK(max_abs_diff(y, whole) <= 1e-5 * max_abs(whole));
      if (own_sgemm) CHECK(y.to_vector_f32() == whole.to_vector_f32());
      got.push_back(y.to_vector_f32());
    }
    CHECK(got[0] == got[1]);  // the same cut on 1 thread and on 2
  }
  set_num_threads(threads);
  model.train();
  CHECK_THROWS_WITH_AS(logits(model, Tensor::zeros({2, 1, 28, 28})), doctest::Contains("call model.eval() first"),
                       Error);
}

TEST_CASE("Kernels::run_apart: every piece once, each piece's ops on one thread, a piece's error rethrown") {
  kernels::Kernels& k = kernels::get(Device::cpu);
  const int threads = get_num_threads();
  set_num_threads(std::max(2, threads));
  Generator gen(2);
  const Tensor a = Tensor::randn({96, 80}, gen), b = Tensor::randn({80, 72}, gen);
  const std::vector<float> expect = matmul(a, b).to_vector_f32();
  std::vector<int> runs(10, 0);
  std::vector<std::vector<float>> outs(10);
  k.run_apart(10, [&](int64_t i) {
    ++runs[static_cast<size_t>(i)];
    outs[static_cast<size_t>(i)] = matmul(a, b).to_vector_f32();
  });
  for (size_t i = 0; i < runs.size(); ++i) {
    CAPTURE(i);
    CHECK(runs[i] == 1);
    CHECK(outs[i] == expect);
  }
  CHECK_THROWS_WITH_AS(k.run_apart(6,
                                   [&](int64_t i) {
                                     if (i == 3) SPDLAB_FAIL("piece ", i, " failed");
                                   }),
                       doctest::Contains("piece 3 failed"), Error);
  set_num_threads(threads);
}

TEST_CASE("parameter names are timm's checkpoint keys, in order") {
  VisionTransformer m(small_cfg(), 1);
  auto names = m.named_parameters();
  std::vector<std::string> first;
  for (size_t i = 0; i < 8; ++i) first.push_back(names[i].first);
  CHECK(first == std::vector<std::string>{"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
                                          "blocks.0.norm1.weight", "blocks.0.norm1.bias", "blocks.0.attn.qkv.weight",
                                          "blocks.0.attn.qkv.bias"});
  CHECK(names.back().first == "head.bias");
  io::SafetensorsFile f(test::reference_path("vit_small.safetensors"));
  for (auto& [n, t] : names) {
    CAPTURE(n);
    REQUIRE(f.has(n));
    CHECK(f.info(n).shape == t.shape());
  }
  CHECK(VisionTransformer(vit_preset("vit_fmnist_tiny"), 0).num_parameters() == 455050);
  CHECK(VisionTransformer(vit_preset("vit_tiny_patch16_224"), 0).num_parameters() == 5717416);
}

TEST_CASE("save then load is bit-identical and rebuilds the model from the file alone") {
  VisionTransformer m(small_cfg(), 3);
  test::TempDir tmp("vit");
  std::string path = tmp.file("roundtrip.safetensors");
  save_vit(m, path, {{"note", "test"}});
  auto back = load_vit(path);
  CHECK(back->config().depth == 2);
  auto a = m.state_dict(), b = back->state_dict();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].first == b[i].first);
    auto va = a[i].second.to_vector_f32(), vb = b[i].second.to_vector_f32();
    CHECK(va == vb);
  }
  io::SafetensorsFile f(path);
  CHECK(f.metadata().at("note") == "test");
  CHECK(f.metadata().at("format") == "spdlab-vit");
}

TEST_CASE("load errors list every problem at once, with a hint for a new head") {
  VisionTransformer m(small_cfg(), 3);
  std::map<std::string, Tensor> sd;
  for (auto& [n, t] : m.state_dict()) sd[n] = t;
  sd.erase("norm.weight");
  sd["extra.thing"] = Tensor::zeros({1});
  sd["head.weight"] = Tensor::zeros({1000, 96});
  sd["head.bias"] = Tensor::zeros({1000});
  VisionTransformer target(small_cfg(), 4);
  try {
    target.load_state_dict(sd);
    FAIL("expected an error");
  } catch (const Error& e) {
    std::string msg = e.what();
    CHECK(msg.find("'head.weight' is [1000, 96] in the file but [10, 96] in the model") != std::string::npos);
    CHECK(msg.find("--ignore 'head.*'") != std::string::npos);
    CHECK(msg.find("missing keys: norm.weight") != std::string::npos);
    CHECK(msg.find("unexpected keys: extra.thing") != std::string::npos);
  }
  sd["norm.weight"] = Tensor::ones({96});
  sd.erase("extra.thing");
  target.load_state_dict(sd, true, {"head.*"});  // a new head keeps its fresh weights
  CHECK(target.norm->weight.at(0) == 1.0);
}

TEST_CASE("Hugging Face ViTForImageClassification names load into the same model") {
  VisionTransformer m(small_cfg(), 5);
  m.eval();
  std::map<std::string, Tensor> hf;
  std::map<std::string, Tensor> own;
  for (auto& [k, v] : m.state_dict()) own[k] = v;
  auto t = [&](const std::string& n) { return own.at(n); };
  hf["vit.embeddings.cls_token"] = t("cls_token");
  hf["vit.embeddings.position_embeddings"] = t("pos_embed");
  hf["vit.embeddings.patch_embeddings.projection.weight"] = t("patch_embed.proj.weight");
  hf["vit.embeddings.patch_embeddings.projection.bias"] = t("patch_embed.proj.bias");
  for (int i = 0; i < 2; ++i) {
    std::string b = "blocks." + std::to_string(i) + ".", l = "vit.encoder.layer." + std::to_string(i) + ".";
    for (std::string wb : {"weight", "bias"}) {
      hf[l + "layernorm_before." + wb] = t(b + "norm1." + wb);
      hf[l + "layernorm_after." + wb] = t(b + "norm2." + wb);
      hf[l + "attention.output.dense." + wb] = t(b + "attn.proj." + wb);
      hf[l + "intermediate.dense." + wb] = t(b + "mlp.fc1." + wb);
      hf[l + "output.dense." + wb] = t(b + "mlp.fc2." + wb);
      Tensor qkv = t(b + "attn.qkv." + wb);
      hf[l + "attention.attention.query." + wb] = qkv.narrow(0, 0, 96).contiguous();
      hf[l + "attention.attention.key." + wb] = qkv.narrow(0, 96, 96).contiguous();
      hf[l + "attention.attention.value." + wb] = qkv.narrow(0, 192, 96).contiguous();
    }
  }
  hf["vit.layernorm.weight"] = t("norm.weight");
  hf["vit.layernorm.bias"] = t("norm.bias");
  hf["classifier.weight"] = t("head.weight");
  hf["classifier.bias"] = t("head.bias");
  VisionTransformer other(small_cfg(), 6);
  other.eval();
  load_checkpoint(other, hf);
  Generator g(1);
  Tensor x = Tensor::randn({2, 1, 28, 28}, g);
  autograd::NoGradGuard ng;
  CHECK(m.forward(x).to_vector_f32() == other.forward(x).to_vector_f32());
}

TEST_CASE("pos_embed resampling: identity on the same grid, bilinear on a new one") {
  Generator g(2);
  Tensor pe = Tensor::randn({1, 1 + 49, 8}, g);
  CHECK(resample_pos_embed(pe, 7).to_vector_f32() == pe.to_vector_f32());
  Tensor up = resample_pos_embed(pe, 14);
  CHECK(up.shape() == Shape{1, 1 + 196, 8});
  CHECK(up.at(0) == pe.at(0));  // class token kept
  // torch's bilinear (align_corners=False) at output (0,0) of a 2x upsample reads input (0,0) exactly.
  CHECK(up.at(8) == doctest::Approx(pe.at(8)).epsilon(1e-6));
  // output (1,1) sits at input (0.25, 0.25)
  double a = pe.at(8 + 3), b = pe.at(8 + 8 + 3), c = pe.at(8 + 7 * 8 + 3), d = pe.at(8 + 8 * 8 + 3);
  double expect = 0.75 * (0.75 * a + 0.25 * b) + 0.25 * (0.75 * c + 0.25 * d);
  CHECK(up.at(8 + (14 + 1) * 8 + 3) == doctest::Approx(expect).epsilon(1e-6));
  // A model for 56x56 images loads a 28x28 checkpoint by resampling its grid.
  VisionTransformer src(small_cfg(), 7);
  ViTConfig big = small_cfg();
  big.img_size = 56;
  VisionTransformer dst(big, 8);
  std::map<std::string, Tensor> sd;
  for (auto& [n, t] : src.state_dict()) sd[n] = t;
  load_checkpoint(dst, sd);
  CHECK(dst.pos_embed.shape() == Shape{1, 1 + 196, 96});
}

TEST_CASE("reset_head and freezing") {
  VisionTransformer m(small_cfg(), 9);
  m.reset_head(3, 1);
  CHECK(m.head->weight.shape() == Shape{3, 96});
  CHECK(m.named_parameters().back().second.shape() == Shape{3});
  Generator g(3);
  Tensor x = Tensor::randn({2, 1, 28, 28}, g);
  CHECK(m.forward(x).shape() == Shape{2, 3});
  m.patch_embed->requires_grad_(false);
  Tensor loss = sum(m.forward(x));
  loss.backward();
  CHECK_FALSE(m.patch_embed->proj->weight.grad().defined());
  CHECK(m.head->weight.grad().defined());
  CHECK(m.blocks[0]->attn->qkv->weight.grad().defined());
}

TEST_CASE("bad configurations and inputs are explained") {
  ViTConfig c = small_cfg();
  c.num_heads = 5;
  CHECK_THROWS_WITH_AS(VisionTransformer(c, 0), doctest::Contains("embed_dim 96 is not divisible by num_heads 5"), Error);
  CHECK_THROWS_WITH_AS(vit_preset("vit_huge"), doctest::Contains("unknown architecture 'vit_huge'"), Error);
  VisionTransformer m(small_cfg(), 0);
  CHECK_THROWS_WITH_AS(m.forward(Tensor::zeros({2, 3, 28, 28})), doctest::Contains("expected images [B, 1, 28, 28]"),
                       Error);
}

}  // TEST_SUITE

TEST_SUITE("cuda") {
TEST_CASE("the ViT on the GPU: logits and input gradient match PyTorch (28x28 fixture)") {
  if (kernels::cuda_device_count() == 0) {
    MESSAGE("skipped: no CUDA device (" << kernels::cuda_unavailable_reason() << ")");
    return;
  }
  io::SafetensorsFile f(test::reference_path("vit_small.safetensors"));
  const LoadOptions fixture_keys{{"input*", "labels", "logits", "loss"}, true};
  auto model = load_vit(test::reference_path("vit_small.safetensors"), ViTConfig::from_metadata(f.metadata(), "fixture"), fixture_keys,
                        Device::cuda);
  for (const auto& [name, t] : model->named_parameters()) CHECK_MESSAGE(t.device() == Device::cuda, name);
  model->eval();
  Tensor x = f.load("input").to(Device::cuda).detach().clone();
  x.requires_grad_();
  Tensor logits = model->forward(x);
  CHECK(logits.device() == Device::cuda);
  double err = max_abs_diff(logits.cpu(), f.load("logits"));
  MESSAGE("vit_small logits on cuda: max abs error ", err);
  CHECK(err < 1e-4);
  Tensor loss = cross_entropy(logits, f.load("labels").to(Device::cuda));
  CHECK(loss.item() == doctest::Approx(f.load("loss").item()).epsilon(1e-5));
  loss.backward();
  Tensor gx = x.grad().cpu(), eg = f.load("input_grad");
  double gerr = max_abs_diff(gx, eg), scale = max_abs(eg);
  MESSAGE("vit_small input gradient on cuda: max abs error ", gerr, ", relative to max |grad| ", gerr / scale);
  CHECK(gerr / scale < 1e-4);
}
}

// ---- checkpoints without spdlab metadata: CLIP image towers and timm files, config read from shapes ----

TEST_SUITE("vit") {

namespace {
void check_clip_file(const std::string& file) {
  io::SafetensorsFile ref(test::reference_path("clip_ref.safetensors"));
  for (const char* act : {"quick_gelu", "gelu"}) {
    ModelSpec spec;
    spec.num_classes = 5;
    spec.num_heads = 2;
    if (std::string(act) == "gelu") spec.act = "gelu";
    ModelInfo info;
    auto model = load_model(test::reference_path(file), spec, Device::cpu, &info);
    const ViTConfig& c = info.cfg;
    CHECK(c.embed_dim == 64);
    CHECK(c.depth == 2);
    CHECK(c.num_heads == 2);
    CHECK(c.mlp_ratio == 2.0);
    CHECK(c.patch_size == 8);
    CHECK(c.img_size == 32);
    CHECK(c.in_chans == 3);
    CHECK(c.proj_dim == 32);
    CHECK(c.pre_norm);
    CHECK(!c.patch_bias);
    CHECK(c.eps == 1e-5);
    CHECK(nn::activation_name(c.act) == act);
    CHECK(info.fresh_head);
    CHECK(info.file_classes == 0);
    CHECK(model->head->weight.shape() == Shape{5, 32});
    autograd::NoGradGuard ng;
    model->head->weight.copy_(ref.load("head_weight"));
    model->head->bias->copy_(ref.load("head_bias"));
    model->eval();
    const Tensor x = ref.load("input");
    const double ferr = max_abs_diff(model->forward_features(x), ref.load(std::string("features_") + act));
    const double err = max_abs_diff(model->forward(x), ref.load(std::string("logits_") + act));
    MESSAGE(file, " with ", std::string(act), ": features max abs error ", ferr, ", logits ", err);
    CHECK(ferr < 1e-4);
    CHECK(err < 1e-4);
  }
}
}  // namespace

TEST_CASE("CLIP image towers under OpenAI / open_clip names match PyTorch, QuickGELU and GELU") {
  check_clip_file("clip_openai.safetensors");
}

TEST_CASE("CLIP image towers under Hugging Face names match PyTorch, QuickGELU and GELU") {
  check_clip_file("clip_hf.safetensors");
}

TEST_CASE("a CLIP file's defaults are stated, and a tower without a head needs --num-classes") {
  ModelSpec spec;
  spec.num_classes = 5;
  ModelInfo info = inspect_model(test::reference_path("clip_openai.safetensors"), spec);
  CHECK(info.layout == Layout::openai_clip);
  CHECK(info.cfg.num_heads == 1);  // width 64 / 64
  std::string notes;
  for (const auto& n : info.notes) notes += n + "\n";
  CHECK(notes.find("heads 1 = width / 64") != std::string::npos);
  CHECK(notes.find("QuickGELU") != std::string::npos);
  CHECK(notes.find("a fresh 5-class head (the file has none)") != std::string::npos);
  CHECK(info.cfg.mean[0] == doctest::Approx(0.48145466));
  CHECK_THROWS_WITH_AS(inspect_model(test::reference_path("clip_hf.safetensors")),
                       doctest::Contains("has no classification head (head.weight), as a CLIP image tower; pass "
                                         "--num-classes"),
                       Error);
  // The text tower's tensors are skipped, and counted.
  ModelInfo loaded;
  spec.num_heads = 2;
  load_model(test::reference_path("clip_openai.safetensors"), spec, Device::cpu, &loaded);
  CHECK(loaded.notes.back() == "skipped 3 tensors outside the image tower");
}

TEST_CASE("a timm-layout file without metadata loads with its config read from the shapes") {
  io::SafetensorsFile ref(test::reference_path("vit_nometa_ref.safetensors"));
  auto want = [&](const char* k) { return std::atoll(ref.metadata().at(k).c_str()); };
  ModelInfo info;
  auto model = load_model(test::reference_path("vit_nometa.safetensors"), {}, Device::cpu, &info);
  const ViTConfig& c = info.cfg;
  CHECK(info.layout == Layout::timm);
  CHECK(!info.spdlab_metadata);
  CHECK(c.img_size == want("img_size"));
  CHECK(c.in_chans == want("in_chans"));
  CHECK(c.patch_size == want("patch_size"));
  CHECK(c.embed_dim == want("embed_dim"));
  CHECK(c.depth == want("depth"));
  CHECK(c.num_heads == want("num_heads"));
  CHECK(std::llround(c.mlp_ratio * c.embed_dim) == want("mlp_hidden"));
  CHECK(c.num_classes == want("num_classes"));
  CHECK(c.eps == 1e-6);
  CHECK(c.act == nn::Activation::gelu);
  CHECK(c.patch_bias);
  CHECK(!c.pre_norm);
  CHECK(c.proj_dim == 0);
  model->eval();
  autograd::NoGradGuard ng;
  const double err = max_abs_diff(model->forward(ref.load("input")), ref.load("logits"));
  MESSAGE("timm file without metadata: logits max abs error ", err);
  CHECK(err < 1e-4);

  // Another class count replaces the head, and says so; the rest of the weights are the file's.
  ModelSpec spec;
  spec.num_classes = 3;
  ModelInfo replaced;
  auto m3 = load_model(test::reference_path("vit_nometa.safetensors"), spec, Device::cpu, &replaced);
  CHECK(replaced.fresh_head);
  CHECK(std::find(replaced.notes.begin(), replaced.notes.end(),
                  "head replaced: the file's 7-class head by a fresh 3-class one") != replaced.notes.end());
  CHECK(m3->head->weight.shape() == Shape{3, 64});
  CHECK(max_abs_diff(m3->blocks[0]->mlp->fc1->weight, model->blocks[0]->mlp->fc1->weight) == 0);
  CHECK(m3->forward(ref.load("input")).shape() == Shape{2, 3});

  // A width that is not a multiple of 64 needs --num-heads.
  std::map<std::string, Shape> shapes{{"patch_embed.proj.weight", {96, 1, 4, 4}}, {"cls_token", {1, 1, 96}},
                                      {"pos_embed", {1, 50, 96}}};
  CHECK_THROWS_WITH_AS(infer_config(shapes, Layout::timm, 0, "f.safetensors"),
                       doctest::Contains("f.safetensors: width 96 is not a multiple of 64"), Error);
  CHECK(infer_config(shapes, Layout::timm, 4, "f.safetensors").img_size == 28);
  // Block numbers come from names: a gap, or a block that holds no MLP, is refused before anything is built.
  auto blocks = shapes;
  blocks["blocks.0.mlp.fc1.weight"] = {384, 96};
  blocks["blocks.99999.norm1.weight"] = {96};
  CHECK_THROWS_WITH_AS(infer_config(blocks, Layout::timm, 4, "f.safetensors"),
                       doctest::Contains("f.safetensors: block 1 of 100000 has no mlp.fc1.weight"), Error);
  blocks["blocks.123456789.x"] = {1};
  CHECK_THROWS_WITH_AS(infer_config(blocks, Layout::timm, 4, "f.safetensors"),
                       doctest::Contains("'blocks.123456789.x' is not a block tensor spdlab knows"), Error);
  shapes["pos_embed"] = {1, 48, 96};
  CHECK_THROWS_WITH_AS(infer_config(shapes, Layout::timm, 4, "f.safetensors"),
                       doctest::Contains("the position embedding is [1, 48, 96]; expected [1, 1 + grid * grid, 96]"),
                       Error);
}

TEST_CASE("a file of no known layout is refused with its first keys") {
  CHECK_THROWS_WITH_AS(detect_layout({"encoder.weight", "decoder.bias"}, "x.safetensors"),
                       doctest::Contains("x.safetensors: not a Vision Transformer checkpoint spdlab knows (its tensors "
                                         "start with: encoder.weight, decoder.bias)"),
                       Error);
}

TEST_CASE("preprocess is (x - mean) / std per channel, and CLIP towers save and load with their config") {
  ModelSpec spec;
  spec.num_classes = 5;
  spec.num_heads = 2;
  auto model = load_model(test::reference_path("clip_openai.safetensors"), spec);
  Tensor x = Tensor::full({1, 3, 2, 2}, 0.5);
  Tensor y = model->preprocess(x);
  CHECK(y.at(0) == doctest::Approx((0.5 - 0.48145466) / 0.26862954).epsilon(1e-6));
  CHECK(y.at(11) == doctest::Approx((0.5 - 0.40821073) / 0.27577711).epsilon(1e-6));
  test::TempDir dir("clip_save");
  save_vit(*model, dir.file("c.safetensors"));
  ModelInfo info;
  auto back = load_model(dir.file("c.safetensors"), {}, Device::cpu, &info);
  CHECK(info.spdlab_metadata);
  CHECK(info.cfg.describe() == model->config().describe());
  autograd::NoGradGuard ng;
  model->eval();
  back->eval();
  Generator gen(3);
  Tensor in = Tensor::randn({2, 3, 32, 32}, gen);
  CHECK(max_abs_diff(model->forward(in), back->forward(in)) == 0);
}

}  // TEST_SUITE
