// The spdlab executable on bad input: each case runs the real binary and checks for a clear message, a
// non-zero exit, no crash, and no partial output file. Also a tiny end-to-end finetune/eval/compare.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <map>
#include <sstream>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/io/image.h"
#include "core/io/json.h"
#include "core/io/safetensors.h"
#include "kernels/kernels.h"
#include "models/vit.h"
#include "tests/support.h"

#include <stb/stb_image_write.h>  // the implementation is compiled in core/io/image.cpp

namespace fs = std::filesystem;
using namespace spdlab;

namespace {

struct Result {
  int status;
  std::string output;  // stdout and stderr together
};

// Runs a shell command line (stdout and stderr together).
Result run_sh(const std::string& cmd) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), out};
}

Result run(const std::string& args) { return run_sh(std::string(SPDLAB_CLI_PATH) + " " + args); }

// The spdlab executable under a shell limit (ulimit ...), e.g. limited("ulimit -f 64", "finetune ...").
Result limited(const std::string& limit, const std::string& args) {
  return run_sh("sh -c '" + limit + "; exec " + SPDLAB_CLI_PATH + " " + args + "'");
}

void write_bytes(const fs::path& p, const std::vector<unsigned char>& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// An IDX file: magic 00 00 08 ndims, big-endian dims, uint8 payload.
std::vector<unsigned char> idx(const std::vector<uint32_t>& dims, const std::vector<unsigned char>& payload) {
  std::vector<unsigned char> b{0, 0, 8, static_cast<unsigned char>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(d >> s));
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

// A small spdlab checkpoint of the fmnist preset, for the commands that need one.
std::string tiny_model(const fs::path& dir) {
  models::ViTConfig c = models::vit_preset("vit_fmnist_tiny");
  c.depth = 1;
  c.embed_dim = 32;
  c.num_heads = 2;
  models::VisionTransformer m(c, 1);
  std::string path = (dir / "tiny.safetensors").string();
  models::save_vit(m, path);
  return path;
}

void check_fails(const std::string& args, const std::string& expect, const fs::path& must_not_exist = {}) {
  CAPTURE(args);
  Result r = run(args);
  CAPTURE(r.output);
  CHECK(r.status == 1);
  CHECK(r.output.find(expect) != std::string::npos);
  CHECK(r.output.find("terminate called") == std::string::npos);
  if (!must_not_exist.empty()) CHECK_FALSE(fs::exists(must_not_exist));
}

// An IDX pair of n random 28x28 images with labels 0..9, for runs that need training data but not Fashion-MNIST.
std::string random_idx_data(const fs::path& dir, int n) {
  std::vector<unsigned char> px(static_cast<size_t>(n) * 28 * 28), lab(static_cast<size_t>(n));
  uint32_t x = 12345;
  for (auto& p : px) p = static_cast<unsigned char>((x = x * 1664525u + 1013904223u) >> 24);
  for (int i = 0; i < n; ++i) lab[static_cast<size_t>(i)] = static_cast<unsigned char>(i % 10);
  write_bytes(dir / "rimg.idx", idx({static_cast<uint32_t>(n), 28, 28}, px));
  write_bytes(dir / "rlab.idx", idx({static_cast<uint32_t>(n)}, lab));
  return "idx:" + (dir / "rimg.idx").string() + "," + (dir / "rlab.idx").string();
}

// A whole file's bytes.
std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// The end-to-end tests train on Fashion-MNIST; without Debian's dataset-fashion-mnist they say so and skip.
bool have_fashion_mnist() {
  if (fs::exists("/usr/share/datasets/fashion-mnist")) return true;
  MESSAGE("skipped: dataset-fashion-mnist is not installed");
  return false;
}

// Files under `dir` whose name holds ".tmp." or ends in ".run": what an interrupted or failed write leaves.
std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.find(".tmp.") != std::string::npos || (n.size() > 4 && n.substr(n.size() - 4) == ".run"))
      out.push_back(e.path().string());
  }
  return out;
}

}  // namespace

TEST_SUITE("cli") {

TEST_CASE("help lists every command and each command's flags") {
  Result r = run("--help");
  CHECK(r.status == 0);
  for (const char* c : {"pretrain", "finetune", "eval", "compare", "predict", "inspect", "replay"})
    CHECK(r.output.find(c) != std::string::npos);
  Result f = run("finetune --help");
  CHECK(f.status == 0);
  CHECK(f.output.find("--optim") != std::string::npos);
  Result u = run("frobnicate");
  CHECK(u.status == 2);
  CHECK(u.output.find("unknown command 'frobnicate'") != std::string::npos);
}

TEST_CASE("bad flags and values are explained") {
  test::TempDir tmp("cli");
  const fs::path& d = tmp.path;
  std::string model = tiny_model(d);
  fs::path out = d / "ft.safetensors";
  std::string base = "finetune --init " + model + " --out " + out.string() + " ";
  check_fails(base + "--optim adamax", "unknown optimizer 'adamax'; expected one of: sgd, adam, adamw, l2sp, spd", out);
  check_fails(base + "--domain sepia", "sepia", out);
  check_fails(base + "--lr -0.1", "--lr must be positive, got -0.1", out);
  check_fails(base + "--lr fast", "--lr expects a number, got 'fast'", out);
  check_fails(base + "--epochs 1.5", "--epochs expects an integer, got '1.5'", out);
  check_fails(base + "--bogus 1", "unknown flag --bogus", out);
  check_fails("finetune --init " + model + " --out ''", "--out expects a value (FILE), got an empty string");
  check_fails("eval --model " + model + " --json=", "--json expects a value (FILE), got an empty string");
  check_fails("pretrain --arch vit_gigantic --out " + out.string(), "unknown architecture 'vit_gigantic'", out);
  check_fails("eval --model " + model + " --domain clean,fog", "fog");
}

TEST_CASE("missing, corrupt and inconsistent data files") {
  test::TempDir tmp("cli");
  const fs::path& d = tmp.path;
  std::string model = tiny_model(d);
  check_fails("eval --model " + model + " --data fmnist:" + (d / "nowhere").string(),
              "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass --data");
  std::vector<unsigned char> px(2 * 28 * 28, 7);
  write_bytes(d / "img.idx", idx({2, 28, 28}, px));
  write_bytes(d / "lab.idx", idx({2}, {1, 3}));
  write_bytes(d / "lab3.idx", idx({3}, {1, 3, 4}));
  write_bytes(d / "lab_bad.idx", idx({2}, {1, 10}));
  auto trunc = idx({2, 28, 28}, px);
  trunc.resize(trunc.size() - 100);
  write_bytes(d / "trunc.idx", trunc);
  auto magic = idx({2}, {1, 3});
  magic[2] = 0x0D;
  write_bytes(d / "magic.idx", magic);
  write_bytes(d / "garbage.gz", {0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7});
  auto data = [&](const char* a, const char* b) {
    return "eval --model " + model + " --data idx:" + (d / a).string() + "," + (d / b).string();
  };
  check_fails(data("trunc.idx", "lab.idx"), "is truncated");
  check_fails(data("img.idx", "magic.idx"), "magic.idx");
  check_fails(data("img.idx", "lab3.idx"), "holds 2 images but");
  check_fails(data("img.idx", "lab_bad.idx"), "label 10 at index 1");
  check_fails(data("garbage.gz", "lab.idx"), "garbage.gz");
  check_fails(data("img.idx", "missing.idx"), "missing.idx");
  check_fails("eval --model " + model + " --data idx:" + (d / "img.idx").string(), "expected idx:IMAGES,LABELS");
}

TEST_CASE("checkpoints of the wrong kind or architecture") {
  test::TempDir tmp("cli");
  const fs::path& d = tmp.path;
  fs::path out = d / "ft.safetensors";
  std::string traces = test::reference_path("optim_traces.safetensors");
  check_fails("finetune --init " + traces + " --out " + out.string(), "not a Vision Transformer checkpoint spdlab knows", out);
  // Metadata of one architecture over the tensors of another: every mismatch is reported.
  std::string model = tiny_model(d);
  std::string meta_lies = (d / "lies.safetensors").string();
  {
    models::ViTConfig c = models::vit_preset("vit_fmnist_tiny");
    c.depth = 1;
    c.embed_dim = 32;
    c.num_heads = 2;
    models::VisionTransformer m(c, 1);
    auto meta = models::vit_preset("vit_fmnist_tiny").to_metadata();
    io::save_safetensors(meta_lies, m.state_dict(), meta);
  }
  check_fails("finetune --init " + meta_lies + " --out " + out.string(), "is [32] in the file but [96] in the model",
              out);
  check_fails("eval --model " + (d / "absent.safetensors").string(), "absent.safetensors");
}

TEST_CASE("an output directory that cannot be written") {
  test::TempDir tmp("cli");
  const fs::path& d = tmp.path;
  std::string model = tiny_model(d);
  write_bytes(d / "afile", {1});
  fs::path bad = d / "afile" / "sub";
  check_fails("compare --quick --init " + model + " --out " + bad.string(), "cannot create the output directory");
  // Bad inputs are found before the output directory is made.
  check_fails("compare --optims adam,nadam --init " + model + " --out " + (d / "s1").string(), "nadam", d / "s1");
  check_fails("compare --init " + (d / "none.safetensors").string() + " --out " + (d / "s2").string(),
              "none.safetensors", d / "s2");
  check_fails("compare --data fmnist:" + (d / "nowhere").string() + " --init " + model + " --out " +
                  (d / "s3").string(), "nowhere", d / "s3");
  fs::create_directories(d / "s4");
  write_bytes(d / "s4" / "notes.txt", {1});
  check_fails("compare --data fmnist:" + (d / "nowhere").string() + " --init " + model + " --out " +
                  (d / "s4").string(), "nowhere");
  check_fails("finetune --init " + model + " --out " + (bad / "m.safetensors").string(),
              "cannot create the output directory");
  CHECK_FALSE(fs::exists(bad));
}

TEST_CASE("a bad SPDLAB_CPU_ISA is explained") {
  test::TempDir tmp("cli");
  std::string model = tiny_model(tmp.path);
  // Only the child reads it: this process chose its kernels when tiny_model ran. The old value comes back
  // afterwards, so a run of the suites with SPDLAB_CPU_ISA=base keeps it for the tests that follow.
  const char* old = std::getenv("SPDLAB_CPU_ISA");
  const std::string saved = old ? old : "";
  ::setenv("SPDLAB_CPU_ISA", "sse9", 1);
  check_fails("eval --model " + model + " --domain edge",
              "SPDLAB_CPU_ISA: expected auto, base, avx2 or avx512, got 'sse9'");
  if (old) ::setenv("SPDLAB_CPU_ISA", saved.c_str(), 1);
  else ::unsetenv("SPDLAB_CPU_ISA");
}

TEST_CASE("finetune, eval and a tiny compare run end to end and are deterministic") {
  if (!have_fashion_mnist()) return;
  test::TempDir tmp("cli");
  const fs::path& d = tmp.path;
  std::string model = tiny_model(d);
  std::string common = " --init " + model + " --range 50000:50256 --epochs 1 --batch-size 32 --seeds 1"
                       " --eval-images 100 --optims adamw,spd";
  Result a = run("compare" + common + " --out " + (d / "a").string());
  INFO(a.output);
  REQUIRE(a.status == 0);
  Result b = run("compare" + common + " --out " + (d / "b").string());
  REQUIRE(b.status == 0);
  std::string ra = slurp(d / "a" / "results.json"), rb = slurp(d / "b" / "results.json");
  CHECK(ra == rb);
  // The same flags into a finished study: continued, every run kept, the same results; other flags: refused.
  Result again = run("compare" + common + " --out " + (d / "a").string());
  CHECK(again.status == 0);
  CHECK(again.output.find("continuing the study") != std::string::npos);
  CHECK(again.output.find("finished earlier") != std::string::npos);
  CHECK(slurp(d / "a" / "results.json") == ra);
  check_fails("compare" + common + " --lr 0.01 --out " + (d / "a").string(), "holds a study made with other flags");
  fs::create_directories(d / "other");
  write_bytes(d / "other" / "notes.txt", {1});
  check_fails("compare" + common + " --out " + (d / "other").string(), "is not empty and holds no study");
  CHECK(slurp(d / "a" / "results.json") == ra);
  json::Value v = json::parse(ra, "results.json");
  CHECK(v.find("runs")->as_array().size() == 2);
  for (const char* f : {"results.csv", "report.md", "id_vs_ood.svg", "per_domain.svg", "per_layer_deviation.svg",
                        "adamw-seed0.safetensors", "spd-seed0.safetensors"})
    CHECK(fs::exists(d / "a" / f));
  // Wall time, threads and the CPU kernel set go to timing.json, outside the bit-identical results.
  json::Value timing = json::parse(slurp(d / "a" / "timing.json"), "timing.json");
  CHECK(timing.find("seconds")->as_double() > 0);
  CHECK(timing.find("cpu_isa")->as_string() == kernels::cpu_isa());
  Result e = run("eval --model " + (d / "a" / "spd-seed0.safetensors").string() +
                 " --domain edge --json " + (d / "e.json").string());
  CHECK(e.status == 0);
  CHECK(e.output.find("edge") != std::string::npos);
  CHECK(fs::exists(d / "e.json"));
  fs::remove_all(d);
}

TEST_CASE("compare runs the other methods (LP, BitFit, LLRD, LP-FT, MARS-SP, FTP, LoRA), and interpolate mixes checkpoints") {
  if (!have_fashion_mnist()) return;
  test::TempDir tmp("cli");
  const fs::path& d = tmp.path;
  const std::string model = tiny_model(d);
  Result r = run("compare --init " + model + " --range 50000:50128 --epochs 1 --batch-size 32 --seeds 1 --eval-images 50"
                 " --optims lp,bitfit,llrd,lpft,mars_sp,ftp,lora,lora_spd --gamma 0.5 --layer-decay 0.5 --kappa 0.5"
                 " --lora-rank 2 --out " + (d / "m").string());
  INFO(r.output);
  REQUIRE(r.status == 0);
  std::ifstream f(d / "m" / "results.json");
  json::Value v = json::parse(std::string(std::istreambuf_iterator<char>(f), {}), "results.json");
  std::map<std::string, const json::Value*> runs;
  for (const auto& run : v.find("runs")->as_array()) runs[run.find("optim")->as_string()] = &run;
  REQUIRE(runs.size() == 8);
  auto dev = [&](const std::string& m, const std::string& layer) {
    return runs.at(m)->find("deviation_per_layer")->find(layer)->as_double();
  };
  // Linear probing moves the head alone; BitFit moves biases, so every layer with one; the others move all.
  CHECK(dev("lp", "blocks.0") == 0.0);
  CHECK(dev("lp", "patch_embed") == 0.0);
  CHECK(dev("lp", "head") > 0.0);
  CHECK(dev("bitfit", "blocks.0") > 0.0);
  CHECK(dev("lpft", "blocks.0") > 0.0);
  // LoRA moves the adapted blocks (merged into their weights) and the head, never the embeddings or norms.
  for (const char* m : {"lora", "lora_spd"}) {
    CHECK(dev(m, "blocks.0") > 0.0);
    CHECK(dev(m, "head") > 0.0);
    CHECK(dev(m, "patch_embed") == 0.0);
    CHECK(dev(m, "norm") == 0.0);
    // The adapters and the head, saved beside the merged model, and reloadable.
    const fs::path adapters = d / "m" / (std::string(m) + "-seed0.lora.safetensors");
    REQUIRE(fs::exists(adapters));
    io::SafetensorsFile af(adapters.string());
    CHECK(af.metadata().count("spdlab.lora") == 1);
    CHECK(af.names().size() == size_t(8 * 1 + 2));  // one block: 4 adapted layers x (A, B), and the head
  }
  CHECK(v.find("protocol")->find("mars_sp_gamma")->as_double() == 0.5);
  CHECK(v.find("protocol")->find("ftp_kappa")->as_double() == 0.5);
  CHECK(v.find("protocol")->find("lora_rank")->as_int() == 2);
  // finetune --params lora: the merged model at --out (timm's names), the adapters and head beside it.
  const fs::path lora_out = d / "lora.safetensors";
  Result fl = run("finetune --init " + model + " --range 50000:50064 --epochs 1 --batch-size 32 --optim spd "
                  "--params lora --lora-rank 2 --out " + lora_out.string());
  INFO(fl.output);
  REQUIRE(fl.status == 0);
  CHECK(io::SafetensorsFile(lora_out.string()).names() == io::SafetensorsFile(model).names());
  CHECK(io::SafetensorsFile((d / "lora.lora.safetensors").string()).names().size() == size_t(8 + 2));
  check_fails("finetune --init " + model + " --range 50000:50064 --params lora --lora-rank 64 --out " +
                  (d / "bad.safetensors").string(),
              "add_lora: rank 64 does not fit 'blocks.0.attn.qkv', whose weight is [96, 32]: expected a rank from 1 "
              "to 32", d / "bad.safetensors");
  CHECK(fs::exists(d / "m" / "lpft-seed0.lp.safetensors"));  // LP-FT's probe, kept
  std::ifstream rep(d / "m" / "report.md");
  const std::string report(std::istreambuf_iterator<char>(rep), {});
  for (const char* row : {"LP (AdamW, head only)", "BitFit", "LLRD (decay 0.5)", "LP-FT", "MARS-SP (γ 0.5)", "FTP (κ 0.5)",
                          "LoRA r2 (AdamW, wd 0.05, lr 0.01)", "LoRA r2 + SPD (λ 1, lr 0.01)"})
    CHECK_MESSAGE(report.find(row) != std::string::npos, row);

  // WiSE-FT between the pre-trained and the LP-FT checkpoints: alpha 0 and 1 are the two files' tensors exactly.
  const std::string ft = (d / "m" / "lpft-seed0.safetensors").string();
  for (const char* alpha : {"0", "1", "0.5"}) {
    const std::string out = (d / (std::string("mix") + alpha + ".safetensors")).string();
    Result m = run("interpolate --a " + model + " --b " + ft + " --alpha " + alpha + " --out " + out);
    INFO(m.output);
    REQUIRE(m.status == 0);
    std::map<std::string, std::string> meta;
    auto mix = io::load_safetensors(out, &meta);
    auto a = io::load_safetensors(model), b = io::load_safetensors(ft);
    CHECK(meta.count("spdlab.interpolate") == 1);
    CHECK(meta.at("spdlab.classes") == io::SafetensorsFile(ft).metadata().at("spdlab.classes"));  // B's metadata
    for (const auto& [name, t] : mix) {
      CAPTURE(name);
      const std::vector<float> x = t.to_vector_f32(), xa = a.at(name).to_vector_f32(), xb = b.at(name).to_vector_f32();
      if (std::string(alpha) == "0") CHECK(x == xa);
      if (std::string(alpha) == "1") CHECK(x == xb);
      if (std::string(alpha) == "0.5")
        for (size_t i = 0; i < x.size(); ++i) CHECK(x[i] == doctest::Approx(0.5 * xa[i] + 0.5 * xb[i]).epsilon(1e-6));
    }
    Result e = run("eval --model " + out + " --domain edge");
    CHECK(e.status == 0);
  }
  // Errors: different architectures (every differing tensor named, both files named), a pattern that matches
  // nothing, a missing alpha; no output is left behind.
  models::ViTConfig c = models::vit_preset("vit_fmnist_tiny");
  c.depth = 2;
  c.embed_dim = 32;
  c.num_heads = 2;
  const std::string other = (d / "other.safetensors").string();
  models::save_vit(models::VisionTransformer(c, 1), other);
  const fs::path bad = d / "bad.safetensors";
  check_fails("interpolate --a " + model + " --b " + other + " --alpha 0.5 --out " + bad.string(),
              "'blocks.1.attn.qkv.weight' is in the second model only", bad);
  check_fails("interpolate --a " + model + " --b " + ft + " --alpha 0.5 --take-b 'heads.*' --out " + bad.string(),
              "--take-b: 'heads.*' matches no tensor of", bad);
  check_fails("interpolate --a " + model + " --b " + ft + " --out " + bad.string(), "--alpha", bad);
}

TEST_CASE("compare --tune: each method's value chosen on the validation split, then every seed; WiSE-FT curves") {
  if (!have_fashion_mnist()) return;
  test::TempDir tmp("cli");
  const fs::path& d = tmp.path;
  const std::string model = tiny_model(d);
  const std::string common = "compare --init " + model + " --range 50000:50160 --epochs 1 --batch-size 32 --seeds 2"
                             " --eval-images 40 --optims adamw,spd,adam --tune --val-images 32 --grid spd=0.5:2"
                             " --wise-ft 0.5";
  Result r = run(common + " --out " + (d / "t").string());
  INFO(r.output);
  REQUIRE(r.status == 0);
  const std::string text = slurp(d / "t" / "results.json");
  json::Value v = json::parse(text, "results.json");
  const json::Value* tuning = v.find("protocol")->find("tuning");
  REQUIRE(tuning != nullptr);
  CHECK(tuning->find("validation_images")->as_int() == 32);
  const json::Value* grids = tuning->find("grids");
  CHECK(grids->find("adam") == nullptr);  // nothing to tune: one run per seed with the flags' values
  CHECK(grids->find("adamw")->find("values")->as_array().size() == 3);
  REQUIRE(grids->find("spd")->find("values")->as_array().size() == 2);
  const double spd_choice = grids->find("spd")->find("chosen")->as_double();
  CHECK((spd_choice == 0.5 || spd_choice == 2.0));
  // 3 adamw + 2 spd + 1 adam at seed 0, then one run per method at seed 1: 9 runs.
  const auto& runs = v.find("runs")->as_array();
  REQUIRE(runs.size() == 9);
  std::map<std::string, int> chosen_at_0;
  std::map<std::string, double> best_val;
  for (const auto& run : runs) {
    const std::string m = run.find("optim")->as_string();
    const int64_t seed = run.find("seed")->as_int();
    const bool chosen = run.find("chosen")->as_bool();
    CHECK(run.find("val_accuracy")->as_double() >= 0);
    if (seed == 0) {
      chosen_at_0[m] += chosen;
      best_val[m] = std::max(best_val[m], run.find("val_accuracy")->as_double());
    } else {
      CHECK(chosen);
      if (m == "spd") CHECK(run.find("hp_value")->as_double() == spd_choice);
    }
    // WiSE-FT on every chosen AdamW run (both seeds), at alpha 0.5.
    if (m == "adamw" && chosen) {
      REQUIRE(run.find("wise_ft") != nullptr);
      CHECK(run.find("wise_ft")->as_array().at(0).find("alpha")->as_double() == 0.5);
    }
  }
  for (const char* m : {"adamw", "spd", "adam"}) CHECK_MESSAGE(chosen_at_0[m] == 1, m);
  for (const auto& run : runs)  // the chosen value has the best validation accuracy of its grid
    if (run.find("seed")->as_int() == 0 && run.find("chosen")->as_bool())
      CHECK(run.find("val_accuracy")->as_double() == best_val[run.find("optim")->as_string()]);
  // Two seeds: paired differences against AdamW with an interval; the matched-ID table and the front.
  CHECK(v.find("paired_vs_adamw")->find("spd")->find("id")->find("ci95_half_width")->is_number());
  CHECK(v.find("pareto_front")->as_array().size() >= 1);
  CHECK(fs::exists(d / "t" / "spd-lambda0.5-seed0.safetensors"));
  CHECK(fs::exists(d / "t" / "adam-seed1.safetensors"));
  // SPD's condition rate step by step, per layer (128 training images, batch 32: 4 steps), and its plot.
  json::Value rec = json::parse(slurp(d / "t" / "spd-lambda0.5-seed0.json"), "spd record");
  const auto& fired = rec.find("fired_by_step")->as_object();
  REQUIRE(!fired.empty());
  for (const auto& [layer, steps] : fired) {
    CHECK_MESSAGE(steps.as_array().size() == 4, layer);
    for (const auto& x : steps.as_array()) CHECK((x.as_double() >= 0 && x.as_double() <= 1));
  }
  CHECK(json::parse(slurp(d / "t" / "adam-seed0.json"), "adam record").find("fired_by_step")->as_object().empty());
  CHECK(fs::exists(d / "t" / "spd_condition_rate.svg"));
  const std::string report = slurp(d / "t" / "report.md");
  for (const char* part : {"## Tuning on the in-distribution validation split", "## Against AdamW, seed by seed",
                           "## Robustness at matched in-distribution accuracy", "WiSE-FT: θ(α)"})
    CHECK_MESSAGE(report.find(part) != std::string::npos, part);
  // The same command again gives the same results.json, byte for byte.
  Result again = run(common + " --out " + (d / "t2").string());
  REQUIRE(again.status == 0);
  CHECK(slurp(d / "t2" / "results.json") == text);

  const std::string base = "compare --init " + model + " --optims adamw,spd --out " + (d / "bad").string();
  check_fails(base + " --grid spd=1:2", "--grid goes with --tune", d / "bad");
  check_fails(base + " --tune --grid adam=1:2", "'adam' is not among --optims", d / "bad");
  check_fails("compare --init " + model + " --optims adam --tune --grid adam=1:2 --out " + (d / "bad").string(),
              "adam has no hyperparameter to tune", d / "bad");
  check_fails(base + " --tune --grid spd=0:1", "expected positive numbers separated by ':', got '0'", d / "bad");
  check_fails(base + " --wise-ft 1", "strictly between 0 and 1", d / "bad");
  check_fails(base + " --wise-ft 0.5 --wise-ft-methods lp", "'lp' is not among --optims", d / "bad");
}

TEST_CASE("integer and float flags: out of range is one error naming the flag, never a wrap or a clamp") {
  test::TempDir tmp("cli");
  const fs::path& d = tmp.path;
  std::string model = tiny_model(d);
  fs::path out = d / "ft.safetensors";
  std::string base = "finetune --init " + model + " --out " + out.string() + " ";
  check_fails(base + "--epochs 4611686018427387905", "--epochs must be an integer from 1 to 1000000, got 4611686018427387905",
              out);
  check_fails(base + "--epochs 99999999999999999999999", "--epochs must be an integer from 1 to 1000000", out);
  check_fails(base + "--seed 99999999999999999999", "--seed must be an integer from 0 to 18446744073709551615", out);
  check_fails(base + "--seed -1", "--seed must be an integer from 0 to 18446744073709551615", out);
  check_fails(base + "--threads 4294967296", "--threads must be an integer from 1 to 1024, got 4294967296", out);
  check_fails(base + "--batch-size 0", "--batch-size must be an integer from 1 to 1048576, got 0", out);
  check_fails(base + "--checkpoint-every -3", "--checkpoint-every must be an integer from 0", out);
  check_fails(base + "--lr 1e300", "--lr = 1e300 is outside float32's range", out);
  check_fails(base + "--lambda 1e39", "--lambda = 1e39 is outside float32's range", out);
  check_fails("compare --seeds 4611686018427387904 --init " + model + " --out " + (d / "study").string(),
              "--seeds must be an integer from 1 to 1000", d / "study");
  CHECK(leftovers(d).empty());
}

TEST_CASE("a run that diverges stops at the step, names the tensor, and leaves nothing behind") {
  test::TempDir tmp("cli");
  const fs::path& d = tmp.path;
  std::string model = tiny_model(d);
  std::string data = random_idx_data(d, 64);
  fs::path out = d / "ft.safetensors";
  for (const char* lr : {"1e30", "1e6"}) {
    CAPTURE(lr);
    Result r = run("finetune --init " + model + " --data " + data + " --range 0:64 --batch-size 16 --epochs 3 --lr " +
                   lr + " --optim adamw --out " + out.string() + " --metrics " + (d / "m.jsonl").string());
    CAPTURE(r.output);
    CHECK(r.status == 1);
    // The weights reach about 1e30 (finite) in a step; the next loss overflows: stopped there, nothing saved.
    CHECK(r.output.find(" at step ") != std::string::npos);
    CHECK(r.output.find("lower the learning rate") != std::string::npos);
    CHECK_FALSE(fs::exists(out));
    CHECK_FALSE(fs::exists(d / "m.jsonl"));
    CHECK(leftovers(d).empty());
  }
}

TEST_CASE("checkpoints with non-finite values, a bad std or metadata that disagrees with the tensors are refused") {
  test::TempDir tmp("cli");
  const fs::path& d = tmp.path;
  models::ViTConfig c = models::vit_preset("vit_fmnist_tiny");
  c.depth = 1;
  c.embed_dim = 32;
  c.num_heads = 2;
  models::VisionTransformer m(c, 1);
  auto sd = m.state_dict();
  auto save_with = [&](const std::string& name, const std::string& tensor, Tensor value,
                       std::map<std::string, std::string> meta) {
    auto state = sd;
    for (auto& [k, t] : state)
      if (k == tensor) t = value;
    std::string path = (d / name).string();
    io::save_safetensors(path, state, meta);
    return path;
  };
  Tensor nan_weight = m.head->weight.detach().cpu().clone();
  nan_weight.data<float>()[5] = std::nanf("");
  const std::string nan_file = save_with("nan.safetensors", "head.weight", nan_weight, c.to_metadata());
  fs::path out = d / "ft.safetensors";
  check_fails("eval --model " + nan_file, "non-finite values (NaN or inf; a diverged run?) in: head.weight");
  check_fails("predict --model " + nan_file + " --image " + nan_file, "head.weight");
  check_fails("finetune --init " + nan_file + " --out " + out.string(), "head.weight", out);
  auto meta = c.to_metadata();
  meta["std"] = "0";
  check_fails("eval --model " + save_with("std0.safetensors", "", Tensor(), meta), "expected finite values and std > 0");
  meta = c.to_metadata();
  meta["img_size"] = "56";  // the tensors are for 28x28: a 7x7 grid, not 14x14
  check_fails("eval --model " + save_with("grid.safetensors", "", Tensor(), meta),
              "'pos_embed' is [1, 50, 32] in the file but [1, 197, 32] in the model");
  Tensor int_norm = Tensor::zeros({32}, DType::i64);
  check_fails("eval --model " + save_with("int.safetensors", "norm.weight", int_norm, c.to_metadata()),
              "'norm.weight' holds integers in the file but f32 in the model");
}

TEST_CASE("eval refuses a folder with classes the model cannot predict") {
  test::TempDir tmp("cli");
  const fs::path& d = tmp.path;
  std::string model = tiny_model(d);  // 10 classes
  std::vector<unsigned char> px(28 * 28, 90);
  for (int k = 0; k < 11; ++k) {
    fs::create_directories(d / "eleven" / ("class" + std::to_string(k)));
    REQUIRE(stbi_write_png((d / "eleven" / ("class" + std::to_string(k)) / "a.png").string().c_str(), 28, 28, 1,
                           px.data(), 28) != 0);
  }
  check_fails("eval --model " + model + " --data folder:" + (d / "eleven").string(), "has 11 classes but the model has 10");
}

TEST_CASE("a batch that cannot fit under the memory limit is refused before the first step, with what fits") {
  test::TempDir tmp("cli");
  const fs::path& d = tmp.path;
  std::string model = tiny_model(d);
  std::string data = random_idx_data(d, 20000);
  fs::path out = d / "ft.safetensors";
  const Result r = limited("ulimit -v 1200000", "finetune --init " + model + " --data " + data +
                                                   " --range 0:20000 --batch-size 20000 --out " + out.string());
  const std::string& text = r.output;
  CAPTURE(text);
  CHECK(r.status == 1);
  CHECK(text.find("a batch of 20000 images needs about") != std::string::npos);
  CHECK(text.find("the address-space limit (ulimit -v) leaves") != std::string::npos);
  CHECK(text.find("images per batch fit: lower --batch-size") != std::string::npos);
  CHECK_FALSE(fs::exists(out));
  CHECK(leftovers(d).empty());
}

TEST_CASE("outputs: two runs with one --out, file-size limits, stale temporaries, a directory as --out") {
  test::TempDir tmp("cli");
  const fs::path& d = tmp.path;
  std::string model = tiny_model(d);
  std::string data = random_idx_data(d, 64);
  fs::path out = d / "ft.safetensors";
  const std::string ft = "finetune --init " + model + " --data " + data + " --range 0:64 --batch-size 16 --lr 1e-4 ";
  // A second writer of the same outputs is refused while the first holds the run directory's lock.
  {
    fs::create_directories(d / "ft.safetensors.run");
    int fd = ::open((d / "ft.safetensors.run" / "lock").c_str(), O_RDWR | O_CREAT, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);
    check_fails(ft + "--out " + out.string(), "is in use by another spdlab process", out);
    ::close(fd);
    fs::remove_all(d / "ft.safetensors.run");
  }
  check_fails(ft + "--out " + d.string(), "is a directory; expected a file name");
  // A file-size limit below the checkpoint's size: an error (EFBIG), not a silent kill, and no partial file.
  const Result r = limited("ulimit -f 64", ft + "--out " + (d / "small.safetensors").string());
  CAPTURE(r.output);
  CHECK(r.status == 1);
  CHECK(r.output.find("File too large") != std::string::npos);
  CHECK_FALSE(fs::exists(d / "small.safetensors"));
  // A temporary file of a process that no longer exists is removed by the next write of that output.
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  const fs::path stale = d / ("ft.safetensors.tmp." + std::to_string(child));
  write_bytes(stale, {1, 2, 3});
  Result again = run(ft + "--out " + out.string() + " --epochs 1");
  CHECK(again.status == 0);
  CHECK(again.output.find("removed " + stale.string()) != std::string::npos);
  CHECK_FALSE(fs::exists(stale));
  CHECK(leftovers(d).empty());
}

TEST_CASE("SIGTERM checkpoints and says how to resume; the resumed run ends with the same bits") {
  test::TempDir tmp("cli");
  const fs::path& d = tmp.path;
  std::string model = tiny_model(d);
  std::string data = random_idx_data(d, 512);
  const std::string args = " --init " + model + " --data " + data +
                           " --range 0:512 --batch-size 16 --epochs 4 --lr 1e-4 --optim spd --checkpoint-every 5 --threads 2";
  Result ref = run("finetune" + args + " --out " + (d / "ref.safetensors").string() + " --metrics " +
                   (d / "ref.jsonl").string());
  REQUIRE(ref.status == 0);
  fs::create_directories(d / "b");
  const std::string out = (d / "b" / "ref.safetensors").string(), metrics = (d / "b" / "ref.jsonl").string();
  // Started in the background, stopped with SIGTERM after its first checkpoint.
  const std::string cmd = std::string(SPDLAB_CLI_PATH) + " finetune" + args + " --out " + out + " --metrics " + metrics;
  pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open((d / "b" / "log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const fs::path state = d / "b" / "ref.safetensors.run" / "state.safetensors";
  for (int i = 0; i < 3000 && !fs::exists(state); ++i) ::usleep(10000);
  REQUIRE(fs::exists(state));
  ::kill(pid, SIGTERM);
  int st = 0;
  ::waitpid(pid, &st, 0);
  std::ifstream logf(d / "b" / "log");
  const std::string log((std::istreambuf_iterator<char>(logf)), {});
  CAPTURE(log);
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
    MESSAGE("the run finished before SIGTERM arrived; the resume half is not exercised");
    return;
  }
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 128 + SIGTERM);
  CHECK(log.find("stopped by SIGTERM after step") != std::string::npos);
  CHECK(log.find("resume with: spdlab finetune --resume " + (d / "b" / "ref.safetensors.run").string()) !=
        std::string::npos);
  CHECK_FALSE(fs::exists(out));
  // A new run over it is refused; --resume with other flags is refused; --resume finishes the run.
  check_fails("finetune" + args + " --out " + out, "holds the state of an interrupted run");
  check_fails("finetune --resume " + (d / "b" / "ref.safetensors.run").string() + " --lr 1", "only --threads and --device");
  // --threads is allowed on resume; the count stays the first run's, since OpenBLAS's products round differently
  // on another count (README, "Determinism"; measured on an AVX-512 EPYC: 1 and 2 threads part at step 24 here).
  Result res = run("finetune --resume " + (d / "b" / "ref.safetensors.run").string() + " --threads 2");
  CAPTURE(res.output);
  REQUIRE(res.status == 0);
  CHECK(res.output.find("resuming at step") != std::string::npos);
  io::SafetensorsFile a((d / "ref.safetensors").string()), b(out);
  for (auto& [k, t] : a.load_all()) CHECK(t.to_vector_f32() == b.load(k).to_vector_f32());
  CHECK(slurp(d / "ref.jsonl") == slurp(metrics));
  CHECK(leftovers(d).empty());
}

// ---- a user's own data: image folders, a checkpoint without spdlab metadata ----

namespace {

// ROOT/<class>/<k>.<ext>: RGB images whose colour depends on the class (so a model can learn them), with noise.
void image_folder(const fs::path& root, const std::vector<std::string>& classes, int per_class, const std::string& ext,
                  bool invert, uint64_t seed) {
  Generator gen(seed);
  for (size_t c = 0; c < classes.size(); ++c) {
    fs::create_directories(root / classes[c]);
    for (int k = 0; k < per_class; ++k) {
      Tensor img = Tensor::rand({3, 20 + k % 3, 24}, gen);
      float* p = img.data<float>();
      for (int64_t i = 0; i < img.numel(); ++i) {
        const int64_t ch = i / (img.size(1) * img.size(2));
        float v = 0.3f * p[i] + (ch == static_cast<int64_t>(c) ? 0.7f : 0.0f);
        p[i] = invert ? 1.0f - v : v;
      }
      io::save_image((root / classes[c] / (std::to_string(k) + "." + ext)).string(), img);
    }
  }
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("compare --all-domains: one study per fine-tuning domain, then the matrix of training by test domain") {
  if (!have_fashion_mnist()) return;
  test::TempDir tmp("cli");
  const fs::path& d = tmp.path;
  const std::string model = tiny_model(d);
  const std::string cmd = "compare --init " + model + " --range 50000:50064 --epochs 1 --batch-size 32 --seeds 1 "
                          "--eval-images 20 --optims adamw,spd --all-domains --out " + (d / "all").string();
  check_fails(cmd + " --domain edge", "--all-domains fine-tunes on every domain in turn; drop --domain");
  check_fails("compare --init " + model + " --optims ftp --kappa 2 --out " + (d / "k").string(),
              "--kappa must be in [0, 1]; got 2", d / "k");
  // An input that fails inside the first domain's study leaves no directory behind.
  check_fails("compare --init " + (d / "absent.safetensors").string() + " --all-domains --out " + (d / "x").string(),
              "absent.safetensors", d / "x");
  Result r = run(cmd);
  INFO(r.output);
  REQUIRE(r.status == 0);
  const std::vector<std::string> domains = {"clean", "noise", "blur", "contrast", "invert", "rotate", "edge"};
  json::Value m = json::parse(slurp(d / "all" / "all_domains.json"), "all_domains.json");
  REQUIRE(m.find("domains")->as_array().size() == domains.size());
  for (const char* method : {"adamw", "spd"}) {
    const json::Value* rows = m.find("methods")->find(method)->find("matrix");
    REQUIRE(rows->as_array().size() == domains.size());
    double diag = 0;
    for (size_t t = 0; t < domains.size(); ++t) {
      // Row t is the study fine-tuned on domain t: its cells are that study's accuracies.
      json::Value sub = json::parse(slurp(d / "all" / domains[t] / "results.json"), "results.json");
      for (const auto& e : domains)
        CHECK(rows->as_array()[t].find(e)->as_double() ==
              sub.find("summary")->find(method)->find(e)->find("mean")->as_double());
      diag += rows->as_array()[t].find(domains[t])->as_double();
    }
    CHECK(m.find("methods")->find(method)->find("id_mean")->as_double() == doctest::Approx(diag / 7));
  }
  CHECK(slurp(d / "all" / "all_domains.md").find("| trained on \\ tested on |") != std::string::npos);
  CHECK(fs::exists(d / "all" / "all_domains.svg"));
  // Run again: every domain's study is continued (nothing retrained) and the matrix is the same.
  const std::string before = slurp(d / "all" / "all_domains.json");
  Result again = run(cmd);
  CHECK(again.status == 0);
  CHECK(again.output.find("finished earlier") != std::string::npos);
  CHECK(slurp(d / "all" / "all_domains.json") == before);
}

TEST_CASE("compare on image folders (PNG and JPEG, two domains) with a checkpoint without metadata, end to end") {
  test::TempDir tmp("cli_folders");
  const fs::path& d = tmp.path;
  const std::vector<std::string> classes{"cat", "dog", "owl"};
  image_folder(d / "train", classes, 8, "png", false, 1);
  image_folder(d / "photo", classes, 4, "png", false, 2);
  image_folder(d / "sketch", classes, 4, "jpg", true, 3);
  const std::string init = test::reference_path("vit_nometa.safetensors");  // timm names, 7 classes, 32x32
  const fs::path out = d / "study";
  Result r = run("compare --init " + init + " --train folder:" + (d / "train").string() + " --eval photo=folder:" +
                 (d / "photo").string() + ",sketch=folder:" + (d / "sketch").string() +
                 " --optims adamw,spd --epochs 2 --batch-size 8 --threads 1 --out " + out.string());
  CAPTURE(r.output);
  REQUIRE(r.status == 0);
  // What was read from the shapes and replaced is said on the console.
  CHECK(r.output.find("architecture read from the tensor shapes (timm names)") != std::string::npos);
  CHECK(r.output.find("head replaced: the file's 7-class head by a fresh 3-class one") != std::string::npos);
  const std::string report = read_text(out / "report.md");
  CHECK(report.find("| model | ID (photo) | sketch | OOD mean | ‖θ−θ0‖ |") != std::string::npos);
  CHECK(report.find("evaluated on photo (12 images), sketch (12 images)") != std::string::npos);
  CHECK(report.find("replaced by a fresh 3-class head, so its row is at chance level") != std::string::npos);
  CHECK(report.find("| SPD (λ 1) |") != std::string::npos);
  CHECK(read_text(out / "results.csv").rfind("optim,seed,photo,sketch,id,ood_mean,deviation\n", 0) == 0);
  const json::Value results = json::parse(read_text(out / "results.json"), "results.json");
  const json::Value& proto = *results.find("protocol");
  CHECK(proto.find("train_data")->as_string() == "folder:" + (d / "train").string());
  CHECK(proto.find("in_distribution")->as_string() == "photo");
  CHECK(proto.find("eval_sets")->find("sketch")->as_string() == "folder:" + (d / "sketch").string());
  const json::Value& spd_run = results.find("runs")->as_array()[1];
  CHECK(spd_run.find("optim")->as_string() == "spd");
  const double photo = spd_run.find("accuracy")->find("photo")->as_double();
  CHECK(photo == spd_run.find("id")->as_double());
  // The fine-tuned checkpoint names its classes, and eval on the same folder gives the study's number.
  const std::string ckpt = (out / "spd-seed0.safetensors").string();
  CHECK(io::SafetensorsFile(ckpt).metadata().at("spdlab.classes") == "[\"cat\",\"dog\",\"owl\"]");
  Result e = run("eval --model " + ckpt + " --eval photo=folder:" + (d / "photo").string() + " --json " +
                 (d / "eval.json").string());
  CAPTURE(e.output);
  REQUIRE(e.status == 0);
  const json::Value ej = json::parse(read_text(d / "eval.json"), "eval.json");
  CHECK(ej.find("accuracy")->find("photo")->as_double() == photo);
  // predict names the classes the checkpoint was trained on.
  Result pr = run("predict --model " + ckpt + " --image " + (d / "photo" / "owl" / "0.png").string() + " --top 3");
  CAPTURE(pr.output);
  REQUIRE(pr.status == 0);
  for (const char* name : {" cat ", " dog ", " owl "}) CHECK(pr.output.find(name) != std::string::npos);
  // The same folder through a decode cache gives the same accuracy.
  Result c = run("cache folder:" + (d / "photo").string() + " --size 32 --out " + (d / "new" / "photo.cache").string());
  CAPTURE(c.output);
  REQUIRE(c.status == 0);
  e = run("eval --model " + ckpt + " --eval photo=cache:" + (d / "new" / "photo.cache").string() + " --json " +
          (d / "eval2.json").string());
  REQUIRE(e.status == 0);
  CHECK(json::parse(read_text(d / "eval2.json"), "eval2.json").find("accuracy")->find("photo")->as_double() == photo);
  // inspect names the inferred architecture of the metadata-less init, given as its first argument.
  Result i = run("inspect " + init);
  CHECK(i.status == 0);
  CHECK(i.output.find("architecture (read from shapes, timm names):") != std::string::npos);
  CHECK(i.output.find("img_size 32, patch 8, channels 3, width 64, depth 1, heads 1, mlp 192, classes 7") !=
        std::string::npos);
  i = run("inspect " + init + " --num-classes 3");  // what a loading command with this flag would build
  CHECK(i.output.find("head replaced: the file's 7-class head by a fresh 3-class one") != std::string::npos);
}

TEST_CASE("image folder errors: one clear message each, and no output directory") {
  test::TempDir tmp("cli_folder_errors");
  const fs::path& d = tmp.path;
  image_folder(d / "train", {"cat", "dog", "owl"}, 2, "png", false, 1);
  image_folder(d / "other", {"cat", "dog", "emu"}, 2, "png", false, 2);
  const std::string init = test::reference_path("vit_nometa.safetensors");
  const fs::path out = d / "study";
  auto compare = [&](const std::string& train, const std::string& eval) {
    return "compare --init " + init + " --train folder:" + train + " --eval " + eval + " --out " + out.string();
  };
  const std::string train = (d / "train").string();
  check_fails(compare(train, "a=folder:" + train + ",b=folder:" + (d / "other").string()),
              "the classes of --eval b (3) differ from those of --train (3): missing in --eval b: owl; missing in "
              "--train: emu",
              out);
  // An unreadable image.
  image_folder(d / "broken", {"cat", "dog", "owl"}, 2, "png", false, 3);
  write_bytes(d / "broken" / "dog" / "x.jpg", {0xFF, 0xD8, 0xFF, 0xE0, 0, 2});
  check_fails(compare((d / "broken").string(), "a=folder:" + train),
              "x.jpg' is not a readable PNG, JPEG or BMP image", out);
  // An empty class folder.
  image_folder(d / "gap", {"cat", "dog", "owl"}, 2, "png", false, 4);
  fs::create_directories(d / "gap" / "yak");
  check_fails(compare(train, "a=folder:" + (d / "gap").string()),
              "image folder '" + (d / "gap").string() + "': class directory 'yak' has no .png, .jpg, .jpeg or .bmp files",
              out);
  // A folder with no images: images straight under the root, no class folders.
  fs::create_directories(d / "flat");
  io::save_image((d / "flat" / "a.png").string(), Tensor::zeros({3, 4, 4}));
  check_fails(compare((d / "flat").string(), "a=folder:" + train),
              "image folder '" + (d / "flat").string() + "' has no class subdirectories", out);
  // A cache made for another input size.
  REQUIRE(run("cache folder:" + train + " --size 16 --out " + (d / "c16").string()).status == 0);
  check_fails(compare(train, "a=cache:" + (d / "c16").string()),
              "holds 3x16x16 images but the model takes 3x32x32; make it again with spdlab cache --size 32", out);
  check_fails(compare(train, "a=" + train), "--eval a: expected folder:DIR or cache:FILE", out);
  check_fails("compare --init " + init + " --train folder:" + train + " --out " + out.string(),
              "--train and --eval go together", out);
  check_fails("cache folder:" + (d / "flat").string() + " --out " + (d / "c.safetensors").string(),
              "has no class subdirectories", d / "c.safetensors");
  // predict on a tensor of preprocessed images, with the logits saved.
  io::save_safetensors((d / "px.safetensors").string(), {{"pixel_values", Tensor::zeros({2, 3, 32, 32})}});
  Result p = run("predict --model " + init + " --input " + (d / "px.safetensors").string() + " --logits-out " +
                 (d / "logits.safetensors").string());
  CAPTURE(p.output);
  REQUIRE(p.status == 0);
  CHECK(io::SafetensorsFile((d / "logits.safetensors").string()).info("logits").shape == Shape{2, 7});
  io::save_safetensors((d / "bad.safetensors").string(), {{"pixel_values", Tensor::zeros({2, 3, 28, 28})}});
  check_fails("predict --model " + init + " --input " + (d / "bad.safetensors").string() + " --logits-out " +
                  (d / "l2.safetensors").string(),
              "'pixel_values' is [2, 3, 28, 28]; the model takes [N, 3, 32, 32]", d / "l2.safetensors");
}

}  // TEST_SUITE
