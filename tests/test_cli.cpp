// The spdlab executable on bad input: each case runs the real binary and checks for a clear message, a
// non-zero exit, no crash, and no partial output file. Also a tiny end-to-end finetune/eval/compare.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/io/json.h"
#include "core/io/safetensors.h"
#include "kernels/kernels.h"
#include "models/vit.h"
#include "tests/support.h"

namespace fs = std::filesystem;
using namespace spdlab;

namespace {

struct Result {
  int status;
  std::string output;  // stdout and stderr together
};

Result run(const std::string& args) {
  std::string cmd = std::string(SPDLAB_CLI_PATH) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), out};
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
  check_fails("finetune --init " + traces + " --out " + out.string(), "was not written by spdlab", out);
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
  check_fails("eval --model " + model + " --domain edge", "SPDLAB_CPU_ISA: expected auto, base or avx2, got 'sse9'");
  if (old) ::setenv("SPDLAB_CPU_ISA", saved.c_str(), 1);
  else ::unsetenv("SPDLAB_CPU_ISA");
}

TEST_CASE("finetune, eval and a tiny compare run end to end and are deterministic") {
  if (!fs::exists("/usr/share/datasets/fashion-mnist")) {
    MESSAGE("skipped: dataset-fashion-mnist is not installed");
    return;
  }
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
  auto slurp = [](const fs::path& p) {
    std::ifstream f(p);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  std::string ra = slurp(d / "a" / "results.json"), rb = slurp(d / "b" / "results.json");
  CHECK(ra == rb);
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

}  // TEST_SUITE
