// Tests of data/ and core/io/image: IDX parsing and its errors, the protocol's domains against values
// worked out by hand, image decoding and resampling, image folders, and the batch loader's determinism.
// Every file a test reads is written by that test into a fresh temporary directory.
#include <doctest/doctest.h>
#include <zlib.h>

#include <chrono>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <set>
#include <thread>
#include <unistd.h>

#include "core/io/image.h"
#include "data/domains.h"
#include "data/idx.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "kernels/threads.h"
#include "tests/support.h"

#include <stb/stb_image_write.h>  // the implementation is compiled in core/io/image.cpp

using namespace spdlab;
using namespace spdlab::data;
namespace fs = std::filesystem;

namespace {

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("data") {}
};

using Bytes = std::vector<uint8_t>;

void write_raw(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

void write_gz(const std::string& path, const Bytes& b) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, b.data(), static_cast<unsigned>(b.size())) == static_cast<int>(b.size()));
  gzclose(f);
}

Bytes read_raw(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// An unsigned-byte IDX file: magic, big-endian dims, then `payload`.
Bytes idx_bytes(const std::vector<uint32_t>& dims, const Bytes& payload, uint8_t type = 0x08) {
  Bytes b = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(d >> s));
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

Bytes iota_bytes(size_t n, uint8_t start = 0) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(start + i);
  return b;
}

std::vector<float> run_domain(Domain d, const std::vector<float>& in, int64_t H, int64_t W, uint64_t seed = 0) {
  std::vector<float> out(in.size(), -1.0f);
  apply_domain(d, in.data(), out.data(), H, W, seed);
  return out;
}

// A small dataset whose sample i is a constant plane of value i / 100 with label i.
Dataset counting_dataset(int64_t n, int64_t H = 3, int64_t W = 4) {
  std::vector<float> px;
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t p = 0; p < H * W; ++p) px.push_back(static_cast<float>(i) / 100.0f);
    labels.push_back(i);
  }
  return Dataset{Tensor::from_vector(px, {n, 1, H, W}), Tensor::from_vector(labels, {n}), n, {}, {}};
}

std::vector<Batch> whole_epoch(BatchLoader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<Batch> out;
  Batch b;
  while (loader.next(b)) out.push_back(b);
  return out;
}

void check_same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].x.to_vector_f32() == b[i].x.to_vector_f32());
    CHECK(a[i].y.to_vector_i64() == b[i].y.to_vector_i64());
  }
}

}  // namespace

TEST_SUITE("data") {

// ---------------------------------------------------------------- IDX

TEST_CASE("idx: raw and gzip files parse to the same dims and bytes") {
  TempDir tmp;
  const Bytes file = idx_bytes({2, 2, 3}, iota_bytes(12, 1));
  write_raw(tmp.file("a.idx"), file);
  write_gz(tmp.file("a.idx.gz"), file);
  REQUIRE(read_raw(tmp.file("a.idx.gz"))[0] == 0x1f);
  for (const char* name : {"a.idx", "a.idx.gz"}) {
    CAPTURE(name);
    const IdxArray a = read_idx(tmp.file(name));
    CHECK(a.dims == std::vector<int64_t>{2, 2, 3});
    CHECK(a.data == iota_bytes(12, 1));
  }
}

TEST_CASE("idx: big-endian dims above 255 and concatenated gzip members") {
  TempDir tmp;
  const Bytes file = idx_bytes({300}, iota_bytes(300));
  CHECK(parse_idx(file, "mem").dims == std::vector<int64_t>{300});
  // gzip -c a >> b makes a multi-member file; zlib's gzopen("ab") appends a member the same way.
  const Bytes first(file.begin(), file.begin() + 100), rest(file.begin() + 100, file.end());
  write_gz(tmp.file("m.gz"), first);
  gzFile f = gzopen(tmp.file("m.gz").c_str(), "ab");
  REQUIRE(f != nullptr);
  gzwrite(f, rest.data(), static_cast<unsigned>(rest.size()));
  gzclose(f);
  CHECK(read_idx(tmp.file("m.gz")).data == iota_bytes(300));
}

TEST_CASE("idx: each malformed file is an error naming the file and what was expected") {
  TempDir tmp;
  struct Case {
    const char* what;
    Bytes bytes;
    const char* message;
  };
  Bytes absurd = idx_bytes({0xFFFFFFFFu, 0xFFFFFFFFu}, {});
  const std::vector<Case> cases = {
      {"truncated payload", idx_bytes({2, 3}, iota_bytes(5)), "is truncated: dims [2, 3] need 6 bytes of data, the file has 5"},
      {"truncated header", Bytes{0, 0, 8, 3, 0, 0, 0, 1}, "is truncated: 3 dimensions need a 16-byte header"},
      {"trailing data", idx_bytes({2}, iota_bytes(3)), "1 bytes of trailing data"},
      {"wrong magic", Bytes{'P', 'K', 3, 4, 0, 0}, "is not an IDX file: expected magic 00 00 <type> <ndims>, got 50 4b 03 04"},
      {"float element type", idx_bytes({1}, Bytes{0, 0, 0, 0}, 0x0D), "0x0d (float32); only 0x08 (unsigned byte)"},
      {"zero dims", Bytes{0, 0, 8, 0}, "declares 0 dimensions"},
      {"too short", Bytes{0, 0}, "has 2 bytes; expected an IDX file"},
      {"absurd dims", absurd, "the header is corrupt"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    const std::string path = tmp.file("bad.idx");
    write_raw(path, c.bytes);
    CHECK_THROWS_WITH_AS(read_idx(path), doctest::Contains(c.message), Error);
    CHECK_THROWS_WITH_AS(read_idx(path), doctest::Contains(path.c_str()), Error);
  }
}

TEST_CASE("idx: missing files and corrupt or truncated gzip") {
  TempDir tmp;
  CHECK_THROWS_WITH_AS(read_idx(tmp.file("nope.gz")), doctest::Contains("no such file"), Error);

  const std::string gz = tmp.file("a.gz");
  write_gz(gz, idx_bytes({64}, iota_bytes(64)));
  Bytes z = read_raw(gz);

  Bytes cut(z.begin(), z.begin() + static_cast<std::ptrdiff_t>(z.size() / 2));
  write_raw(tmp.file("cut.gz"), cut);
  CHECK_THROWS_WITH_AS(read_idx(tmp.file("cut.gz")), doctest::Contains("ends early (truncated file)"), Error);

  Bytes flipped = z;
  flipped[z.size() - 6] ^= 0xFF;  // inside the CRC32 of the trailer
  write_raw(tmp.file("crc.gz"), flipped);
  CHECK_THROWS_WITH_AS(read_idx(tmp.file("crc.gz")), doctest::Contains("is not a valid gzip file: zlib:"), Error);

  Bytes junk = z;
  junk.insert(junk.end(), {'x', 'y', 'z'});
  write_raw(tmp.file("junk.gz"), junk);
  CHECK_THROWS_WITH_AS(read_idx(tmp.file("junk.gz")), doctest::Contains("3 bytes of non-gzip data"), Error);
}

TEST_CASE("idx: load_idx_pair scales pixels and checks counts and labels") {
  TempDir tmp;
  const std::string img = tmp.file("img.gz"), lab = tmp.file("lab"), lab3 = tmp.file("lab3"), bad = tmp.file("bad");
  write_gz(img, idx_bytes({2, 2, 2}, Bytes{0, 255, 51, 102, 1, 2, 3, 4}));
  write_raw(lab, idx_bytes({2}, Bytes{7, 9}));
  write_raw(lab3, idx_bytes({3}, Bytes{0, 1, 2}));
  write_raw(bad, idx_bytes({2}, Bytes{3, 10}));

  const Dataset ds = load_idx_pair(img, lab, 10);
  CHECK(ds.images.shape() == Shape{2, 1, 2, 2});
  CHECK(ds.images.dtype() == DType::f32);
  CHECK(ds.labels.dtype() == DType::i64);
  CHECK(ds.num_classes == 10);
  CHECK(ds.size() == 2);
  const std::vector<float> px = ds.images.to_vector_f32();
  CHECK(px[0] == 0.0f);
  CHECK(px[1] == 1.0f);
  CHECK(px[2] == 51.0f / 255.0f);
  CHECK(px[3] == doctest::Approx(0.4));
  CHECK(ds.labels.to_vector_i64() == std::vector<int64_t>{7, 9});

  CHECK_THROWS_WITH_AS(load_idx_pair(img, lab3), doctest::Contains("holds 2 images but"), Error);
  CHECK_THROWS_WITH_AS(load_idx_pair(img, bad), doctest::Contains("label 10 at index 1"), Error);
  CHECK_THROWS_WITH_AS(load_idx_pair(img, lab, 9), doctest::Contains("is not below num_classes 9"), Error);
  CHECK_THROWS_WITH_AS(load_idx_pair(lab, lab), doctest::Contains("should be [N, H, W]"), Error);

  const Dataset tail = subset(ds, 1, 2);
  CHECK(tail.size() == 1);
  CHECK(tail.labels.to_vector_i64() == std::vector<int64_t>{9});
  CHECK(tail.images.to_vector_f32() == std::vector<float>{1 / 255.0f, 2 / 255.0f, 3 / 255.0f, 4 / 255.0f});
  CHECK_THROWS_WITH_AS(subset(ds, 1, 3), doctest::Contains("is not inside a dataset of 2"), Error);
}

TEST_CASE("idx: a missing Fashion-MNIST says how to install it") {
  TempDir tmp;
  for (bool train : {true, false}) {
    CHECK_THROWS_WITH_AS(load_fashion_mnist(tmp.file("none"), train),
                         doctest::Contains("install Debian's dataset-fashion-mnist (apt-get install "
                                           "dataset-fashion-mnist) or pass --data"),
                         Error);
  }
  CHECK_THROWS_WITH_AS(load_fashion_mnist(tmp.file("none"), false), doctest::Contains("t10k-images-idx3-ubyte"),
                       Error);
}

TEST_CASE("idx: Fashion-MNIST from Debian's dataset-fashion-mnist") {
  std::error_code ec;
  if (!fs::is_directory(kFashionMnistRoot, ec)) {
    MESSAGE("skipped: ", kFashionMnistRoot, " is missing (apt-get install dataset-fashion-mnist)");
    return;
  }
  for (bool train : {true, false}) {
    const Dataset ds = load_fashion_mnist(kFashionMnistRoot, train);
    const int64_t n = train ? 60000 : 10000;
    CHECK(ds.images.shape() == Shape{n, 1, 28, 28});
    CHECK(ds.labels.shape() == Shape{n});
    CHECK(ds.class_names.size() == 10);
    std::vector<int64_t> per_class(10, 0);
    for (int64_t y : ds.labels.to_vector_i64()) {
      REQUIRE(y >= 0);
      REQUIRE(y < 10);
      ++per_class[y];
    }
    // Fashion-MNIST is balanced: 6000 / 1000 per class.
    for (int64_t c : per_class) CHECK(c == n / 10);
    const float* px = ds.images.data<float>();
    float lo = 1, hi = 0;
    for (int64_t i = 0; i < ds.images.numel(); ++i) {
      lo = std::min(lo, px[i]);
      hi = std::max(hi, px[i]);
    }
    CHECK(lo == 0.0f);
    CHECK(hi == 1.0f);
  }
}

// ---------------------------------------------------------------- domains

TEST_CASE("domains: names round-trip and unknown names list the valid ones") {
  for (Domain d : all_domains()) CHECK(parse_domain(domain_name(d)) == d);
  CHECK(pretrain_domains().size() == 6);
  CHECK_THROWS_WITH_AS(parse_domain("sketch"),
                       doctest::Contains("unknown domain 'sketch'; valid domains: clean, noise, blur, contrast, "
                                         "invert, rotate, edge"),
                       Error);
}

TEST_CASE("domains: pointwise domains") {
  const std::vector<float> in = {0.0f, 0.25f, 0.5f, 1.0f};
  CHECK(run_domain(Domain::clean, in, 2, 2) == in);
  CHECK(run_domain(Domain::invert, in, 2, 2) == std::vector<float>{1.0f, 0.75f, 0.5f, 0.0f});
  const std::vector<float> c = run_domain(Domain::contrast, in, 2, 2);
  CHECK(c[0] == doctest::Approx(0.35));
  CHECK(c[1] == doctest::Approx(0.425));
  CHECK(c[2] == doctest::Approx(0.5));
  CHECK(c[3] == doctest::Approx(0.65));
}

TEST_CASE("domains: blur is the twice-applied binomial kernel with replicated borders") {
  // An impulse in the middle of 9x9 never reaches the border: per axis the kernel convolved with
  // itself is [1 8 28 56 70 56 28 8 1] / 256, and the 2-D result is the outer product.
  std::vector<float> impulse(81, 0.0f);
  impulse[40] = 1.0f;
  const std::vector<float> b = run_domain(Domain::blur, impulse, 9, 9);
  const double k[9] = {1, 8, 28, 56, 70, 56, 28, 8, 1};
  for (int y = 0; y < 9; ++y)
    for (int x = 0; x < 9; ++x) {
      CAPTURE(y);
      CAPTURE(x);
      CHECK(b[y * 9 + x] == doctest::Approx(k[y] * k[x] / 65536.0).epsilon(1e-6));
    }
  CHECK(b[40] == 4900.0f / 65536.0f);

  // One row [1 0 0 0 0]: pass 1 gives [11 5 1 0 0]/16 (the border pixel counts three times in
  // 1+4+6), pass 2 gives [142 89 37 9 1]/256. A single row makes the vertical pass the identity.
  const std::vector<float> r = run_domain(Domain::blur, {1, 0, 0, 0, 0}, 1, 5);
  const double expect[5] = {142, 89, 37, 9, 1};
  for (int x = 0; x < 5; ++x) CHECK(r[x] == doctest::Approx(expect[x] / 256.0));

  const std::vector<float> flat = run_domain(Domain::blur, std::vector<float>(20, 0.375f), 4, 5);
  for (float v : flat) CHECK(v == 0.375f);
}

TEST_CASE("domains: edge is the clipped Sobel magnitude with replicated borders") {
  // 5x5, columns 0-1 at 0 and columns 2-4 at 0.1: gx = (1+2+1) * 0.1 next to the step.
  std::vector<float> step(25);
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 5; ++x) step[y * 5 + x] = x >= 2 ? 0.1f : 0.0f;
  const std::vector<float> e = run_domain(Domain::edge, step, 5, 5);
  for (int y = 0; y < 5; ++y) {
    CAPTURE(y);
    CHECK(e[y * 5 + 0] == 0.0f);
    CHECK(e[y * 5 + 1] == doctest::Approx(0.4));
    CHECK(e[y * 5 + 2] == doctest::Approx(0.4));
    CHECK(e[y * 5 + 3] == 0.0f);
    CHECK(e[y * 5 + 4] == 0.0f);
  }
  // A ramp 0.01 x + 0.02 y: inside, gx = 4 * 2 * 0.01 and gy = 4 * 2 * 0.02; on the left border the
  // replicated column halves gx.
  std::vector<float> ramp(25);
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 5; ++x) ramp[y * 5 + x] = 0.01f * x + 0.02f * y;
  const std::vector<float> g = run_domain(Domain::edge, ramp, 5, 5);
  CHECK(g[2 * 5 + 2] == doctest::Approx(std::sqrt(0.08 * 0.08 + 0.16 * 0.16)));
  CHECK(g[2 * 5 + 0] == doctest::Approx(std::sqrt(0.04 * 0.04 + 0.16 * 0.16)));
  CHECK(g[0 * 5 + 0] == doctest::Approx(std::sqrt(0.04 * 0.04 + 0.08 * 0.08)));
  // A full-contrast step has gx = 4: clipped to 1.
  std::vector<float> hard(25);
  for (int i = 0; i < 25; ++i) hard[i] = (i % 5) >= 2 ? 1.0f : 0.0f;
  CHECK(run_domain(Domain::edge, hard, 5, 5)[2 * 5 + 2] == 1.0f);
}

TEST_CASE("domains: rotate turns 30 degrees counter-clockwise about the center") {
  // All ones, 5x5: the center and its neighbours stay 1; the corner (0,0) reads source row
  // 2 - 1 - sqrt(3) = -0.73, so only a weight 2 - sqrt(3) of in-image taps survives.
  const std::vector<float> ones = run_domain(Domain::rotate, std::vector<float>(25, 1.0f), 5, 5);
  CHECK(ones[12] == 1.0f);
  CHECK(ones[7] == doctest::Approx(1.0));
  CHECK(ones[0] == doctest::Approx(2 - std::sqrt(3.0)));
  CHECK(ones[4] == doctest::Approx(2 - std::sqrt(3.0)));
  CHECK(ones[24] == doctest::Approx(2 - std::sqrt(3.0)));

  // A dot right of the center moves up (counter-clockwise on screen, rows growing downward): to
  // (x, y) = (2 + 2 cos 30, 2 - 2 sin 30) = (3.73, 1).
  std::vector<float> dot(25, 0.0f);
  dot[2 * 5 + 4] = 1.0f;
  const std::vector<float> r = run_domain(Domain::rotate, dot, 5, 5);
  CHECK(r[1 * 5 + 4] == doctest::Approx((1 - (std::sqrt(3.0) - 1.5)) * (1 - (1 - std::sqrt(3.0) / 2))));
  CHECK(r[3 * 5 + 4] == 0.0f);
  CHECK(r[2 * 5 + 4] < r[1 * 5 + 4]);

  // Bilinear sampling reproduces a linear image exactly where all four taps are inside.
  std::vector<float> lin(81);
  for (int y = 0; y < 9; ++y)
    for (int x = 0; x < 9; ++x) lin[y * 9 + x] = 0.05f * x + 0.03f * y + 0.1f;
  const std::vector<float> rl = run_domain(Domain::rotate, lin, 9, 9);
  const double c = std::cos(std::numbers::pi / 6), s = std::sin(std::numbers::pi / 6);
  for (int y = 3; y <= 5; ++y)
    for (int x = 3; x <= 5; ++x) {
      const double sx = 4 + c * (x - 4) - s * (y - 4), sy = 4 + s * (x - 4) + c * (y - 4);
      CHECK(rl[y * 9 + x] == doctest::Approx(0.05 * sx + 0.03 * sy + 0.1).epsilon(1e-6));
    }
}

TEST_CASE("domains: rotate keeps a pattern with 90-degree symmetry symmetric") {
  // Rotations commute, so rotating an image that a quarter turn leaves unchanged gives another such image.
  const int n = 11;
  std::vector<float> img(n * n);
  Generator gen(5);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) img[y * n + x] = gen.next_float();
  std::vector<float> sym(n * n);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      // The mean over the four quarter turns of (x, y).
      sym[y * n + x] = (img[y * n + x] + img[x * n + (n - 1 - y)] + img[(n - 1 - y) * n + (n - 1 - x)] +
                        img[(n - 1 - x) * n + y]) / 4;
    }
  const std::vector<float> r = run_domain(Domain::rotate, sym, n, n);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) CHECK(r[y * n + x] == doctest::Approx(r[x * n + (n - 1 - y)]).epsilon(1e-5));
  // A disk is (nearly) unchanged inside.
  std::vector<float> disk(n * n);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) disk[y * n + x] = std::hypot(x - 5.0, y - 5.0) <= 3.5 ? 1.0f : 0.0f;
  const std::vector<float> rd = run_domain(Domain::rotate, disk, n, n);
  CHECK(rd[5 * n + 5] == 1.0f);
  CHECK(rd[5 * n + 7] == doctest::Approx(1.0));
  CHECK(rd[0] == 0.0f);
}

TEST_CASE("domains: noise is reproducible per seed, clipped, with sigma 0.3") {
  const std::vector<float> gray(100 * 100, 0.5f);
  const std::vector<float> a = run_domain(Domain::noise, gray, 100, 100, 7);
  CHECK(a == run_domain(Domain::noise, gray, 100, 100, 7));
  CHECK(a != run_domain(Domain::noise, gray, 100, 100, 8));
  double mean = 0, sq = 0;
  for (float v : a) {
    REQUIRE(v >= 0.0f);
    REQUIRE(v <= 1.0f);
    mean += v;
    sq += (v - 0.5) * (v - 0.5);
  }
  mean /= a.size();
  // N(0, 0.3) clipped at +-0.5 (1.67 sigma) has standard deviation 0.275.
  CHECK(mean == doctest::Approx(0.5).epsilon(0.02));
  CHECK(std::sqrt(sq / a.size()) == doctest::Approx(0.275).epsilon(0.03));
  // The first pixel is the first normal of Generator(seed_hash(7)).
  Generator gen(seed_hash(7));
  CHECK(a[0] == std::min(1.0f, std::max(0.0f, 0.5f + static_cast<float>(0.3 * gen.next_normal()))));
}

TEST_CASE("domains: the batch form matches the single form and ignores the thread count") {
  const int64_t N = 9, H = 6, W = 5;
  Generator gen(11);
  const Tensor imgs = Tensor::rand({N, 1, H, W}, gen);
  const int threads = get_num_threads();
  for (Domain d : all_domains()) {
    CAPTURE(domain_name(d));
    set_num_threads(1);
    const Tensor one = apply_domain(d, imgs, 42);
    set_num_threads(std::max(2, threads));
    const Tensor many = apply_domain(d, imgs, 42);
    CHECK(one.to_vector_f32() == many.to_vector_f32());
    const std::vector<float> all = imgs.to_vector_f32(), got = many.to_vector_f32();
    for (int64_t i = 0; i < N; ++i) {
      std::vector<float> in(all.begin() + i * H * W, all.begin() + (i + 1) * H * W);
      const std::vector<float> expect = run_domain(d, in, H, W, 42 ^ seed_hash(i));
      CHECK(std::vector<float>(got.begin() + i * H * W, got.begin() + (i + 1) * H * W) == expect);
    }
  }
  set_num_threads(threads);
  CHECK_THROWS_WITH_AS(apply_domain(Domain::clean, Tensor::zeros({2, 3, 4, 4}), 0),
                       doctest::Contains("expected f32 [N, 1, H, W]"), Error);
}

TEST_CASE("domains: augmentation crops with zero padding and flips, per seed") {
  const int64_t C = 2, H = 3, W = 4;
  std::vector<float> in(C * H * W);
  for (size_t i = 0; i < in.size(); ++i) in[i] = 1.0f + i;
  std::vector<float> out(in.size());
  augment(in.data(), out.data(), C, H, W, {}, 3);
  CHECK(out == in);

  bool seen_flip = false, seen_plain = false;
  for (uint64_t seed = 0; seed < 32; ++seed) {
    augment(in.data(), out.data(), C, H, W, {.crop_padding = 0, .hflip = true}, seed);
    bool flipped = true, plain = true;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
          flipped &= out[(c * H + y) * W + x] == in[(c * H + y) * W + (W - 1 - x)];
          plain &= out[(c * H + y) * W + x] == in[(c * H + y) * W + x];
        }
    CHECK((flipped || plain));
    seen_flip |= flipped;
    seen_plain |= plain;
  }
  CHECK(seen_flip);
  CHECK(seen_plain);

  // With padding every output pixel is either 0 or the input at one common shift, the same in both channels.
  std::set<std::pair<int64_t, int64_t>> shifts;
  for (uint64_t seed = 0; seed < 64; ++seed) {
    augment(in.data(), out.data(), C, H, W, {.crop_padding = 1}, seed);
    std::vector<float> again(in.size());
    augment(in.data(), again.data(), C, H, W, {.crop_padding = 1}, seed);
    CHECK(again == out);
    bool found = false;
    for (int64_t dy = -1; dy <= 1 && !found; ++dy)
      for (int64_t dx = -1; dx <= 1 && !found; ++dx) {
        bool ok = true;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t y = 0; y < H; ++y)
            for (int64_t x = 0; x < W; ++x) {
              const int64_t sy = y + dy, sx = x + dx;
              const float want = (sy < 0 || sy >= H || sx < 0 || sx >= W) ? 0.0f : in[(c * H + sy) * W + sx];
              ok &= out[(c * H + y) * W + x] == want;
            }
        if (ok) {
          found = true;
          shifts.insert({dy, dx});
        }
      }
    CHECK(found);
  }
  CHECK(shifts.size() == 9);
}

// ---------------------------------------------------------------- images

TEST_CASE("image: load a PNG as RGB and as gray; errors for missing and non-image files") {
  TempDir tmp;
  // 3 wide, 2 high, RGB.
  const uint8_t px[2 * 3 * 3] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 0, 0, 0, 255, 255, 255};
  const std::string png = tmp.file("a.png");
  REQUIRE(stbi_write_png(png.c_str(), 3, 2, 3, px, 3 * 3) != 0);

  const Tensor rgb = io::load_image(png, 3);
  CHECK(rgb.shape() == Shape{3, 2, 3});
  const std::vector<float> v = rgb.to_vector_f32();
  for (int c = 0; c < 3; ++c)
    for (int p = 0; p < 6; ++p) CHECK(v[c * 6 + p] == static_cast<float>(px[p * 3 + c]) / 255.0f);

  const Tensor gray = io::load_image(png, 1);
  CHECK(gray.shape() == Shape{1, 2, 3});
  const std::vector<float> g = gray.to_vector_f32();
  CHECK(g[0] == static_cast<float>((255 * 77) >> 8) / 255.0f);
  CHECK(g[3] == static_cast<float>((10 * 77 + 20 * 150 + 30 * 29) >> 8) / 255.0f);
  CHECK(g[5] == 1.0f);

  CHECK_THROWS_WITH_AS(io::load_image(tmp.file("missing.png")), doctest::Contains("no such file"), Error);
  write_raw(tmp.file("text.png"), Bytes{'h', 'e', 'l', 'l', 'o'});
  CHECK_THROWS_WITH_AS(io::load_image(tmp.file("text.png")),
                       doctest::Contains("is not a readable PNG, JPEG or BMP image"), Error);
  CHECK_THROWS_WITH_AS(io::load_image(png, 2), doctest::Contains("channels must be 1 or 3"), Error);
}

TEST_CASE("image: files the fuzzer found are refused before stb_image misreads them") {
  // A JPEG whose Huffman table declares more than 256 codes: Debian's stb_image writes past its code-length
  // array on it (UBSan, tests/fuzz/run.sh image); spdlab checks the tables first.
  CHECK_THROWS_WITH_AS(io::load_image(test::reference_path("fuzz/jpeg_huffman_overflow.jpg")),
                       doctest::Contains("is a corrupt JPEG: a Huffman table at byte"), Error);
  // ... and one whose last table's counts run past the end of the file, which stb_image reads as zeros after
  // the bytes that are there (822 codes here).
  CHECK_THROWS_WITH_AS(io::load_image(test::reference_path("fuzz/jpeg_huffman_past_end.jpg")),
                       doctest::Contains("a Huffman table at byte 458 declares 822 codes"), Error);
  // ... and one that starts with 0xFF fill bytes before SOI, which stb_image also takes for a JPEG.
  CHECK_THROWS_WITH_AS(io::load_image(test::reference_path("fuzz/jpeg_fill_before_soi.jpg")),
                       doctest::Contains("a Huffman table at byte 10 declares 1372 codes"), Error);
  // A BMP declaring 61 x 1048578 pixels in 78 bytes: stb_image would decode the missing rows as black (slowly).
  CHECK_THROWS_WITH_AS(io::load_image(test::reference_path("fuzz/bmp_truncated_rows.bmp")),
                       doctest::Contains("is a truncated BMP: 61x1048578 pixels at 24 bits need 192938406 bytes, the "
                                         "file has 78"),
                       Error);
  // A 117-byte PNG whose IDAT chunk declares 1145110588 bytes: stb_image would allocate that much first.
  CHECK_THROWS_WITH_AS(io::load_image(test::reference_path("fuzz/png_huge_chunk.png")),
                       doctest::Contains("is a truncated PNG: its IDAT chunk at byte 105 declares 1145110588 bytes"),
                       Error);
  // A PNM header with a width past int's range: the PNM decoder (signed overflow in it) is not built.
  TempDir tmp;
  write_raw(tmp.file("big.pgm"), Bytes{'P', '5', '\n', '9', '9', '9', '9', '9', '9', '9', '9', '9', '9', ' ', '1',
                                       '\n', '2', '5', '5', '\n', 0});
  CHECK_THROWS_WITH_AS(io::load_image(tmp.file("big.pgm")), doctest::Contains("is not a readable PNG, JPEG or BMP"),
                       Error);
}

TEST_CASE("image: bilinear resize matches torch (align_corners=False) and PIL") {
  // Enlarging [0 1] to 4: sample points -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
  const Tensor up = io::resize(Tensor::from_vector(std::vector<float>{0, 1}, {1, 1, 2}), 1, 4);
  const std::vector<float> u = up.to_vector_f32();
  CHECK(u == std::vector<float>{0.0f, 0.25f, 0.75f, 1.0f});

  const Tensor row = Tensor::from_vector(std::vector<float>{0, 1, 2, 3}, {1, 1, 4});
  // Shrinking [0 1 2 3] to 2 without antialias (torch's default): points 0.5 and 2.5.
  CHECK(io::resize(row, 1, 2, io::Interp::bilinear, false).to_vector_f32() == std::vector<float>{0.5f, 2.5f});
  // PIL widens the triangle by the scale 2: taps 0,1,2 weigh 0.75, 0.75, 0.25 for the first output.
  const std::vector<float> aa = io::resize(row, 1, 2, io::Interp::bilinear, true).to_vector_f32();
  CHECK(aa[0] == doctest::Approx(1.25 / 1.75));
  CHECK(aa[1] == doctest::Approx(4.0 / 1.75));

  const Tensor flat = Tensor::full({2, 5, 7}, 0.3);
  for (io::Interp m : {io::Interp::bilinear, io::Interp::bicubic})
    for (bool anti : {false, true})
      for (float val : io::resize(flat, 3, 11, m, anti).to_vector_f32()) CHECK(val == doctest::Approx(0.3));
}

TEST_CASE("image: bicubic resize is PIL's a = -0.5 cubic") {
  // Enlarging [0 1] to 4: the first output's taps are at distances 0.25 and 1.25, weights 0.8671875
  // and -0.0703125 (renormalized over the two in-image taps); the second's at 0.25 and 0.75.
  const std::vector<float> b =
      io::resize(Tensor::from_vector(std::vector<float>{0, 1}, {1, 1, 2}), 1, 4, io::Interp::bicubic).to_vector_f32();
  CHECK(b[0] == doctest::Approx(-0.0703125 / 0.796875));
  CHECK(b[1] == doctest::Approx(0.2265625 / 1.09375));
  CHECK(b[2] == doctest::Approx(1 - 0.2265625 / 1.09375));
  CHECK(b[3] == doctest::Approx(1 + 0.0703125 / 0.796875));
  // Separable: resizing a column is the same as resizing the row.
  const std::vector<float> col =
      io::resize(Tensor::from_vector(std::vector<float>{0, 1}, {1, 2, 1}), 4, 1, io::Interp::bicubic).to_vector_f32();
  CHECK(col == b);
}

TEST_CASE("image: center_crop rounds like torchvision, normalize per channel") {
  std::vector<float> v(25);
  for (int i = 0; i < 25; ++i) v[i] = static_cast<float>(i);
  const Tensor img = Tensor::from_vector(v, {1, 5, 5});
  // (5 - 2) / 2 = 1.5 rounds to 2 (half to even); (5 - 4) / 2 = 0.5 rounds to 0.
  CHECK(io::center_crop(img, 2, 4).to_vector_f32() == std::vector<float>{10, 11, 12, 13, 15, 16, 17, 18});
  CHECK(io::center_crop(img, 3, 3).to_vector_f32() == std::vector<float>{6, 7, 8, 11, 12, 13, 16, 17, 18});
  CHECK_THROWS_WITH_AS(io::center_crop(img, 6, 1), doctest::Contains("does not fit"), Error);

  const Tensor two = Tensor::from_vector(std::vector<float>{1, 3, 2, 6}, {2, 1, 2});
  CHECK(io::normalize(two, {1, 2}, {2, 4}).to_vector_f32() == std::vector<float>{0, 1, 0, 1});
  CHECK(io::normalize(two, {1}, {1}).to_vector_f32() == std::vector<float>{0, 2, 1, 5});
  CHECK_THROWS_WITH_AS(io::normalize(two, {1, 2, 3}, {1}), doctest::Contains("mean has 3 entries"), Error);
}

TEST_CASE("image folder: classes and files sorted by name, resized and cropped") {
  TempDir tmp;
  const fs::path root = tmp.path / "root";
  fs::create_directories(root / "dog");
  fs::create_directories(root / "cat");
  auto write_gray = [](const fs::path& p, int w, int h, uint8_t value) {
    std::vector<uint8_t> px(w * h, value);
    const std::string ext = p.extension().string();
    const int ok = ext == ".bmp" ? stbi_write_bmp(p.string().c_str(), w, h, 1, px.data())
                                 : stbi_write_png(p.string().c_str(), w, h, 1, px.data(), w);
    REQUIRE(ok != 0);
  };
  write_gray(root / "dog" / "b.png", 8, 4, 51);
  write_gray(root / "dog" / "a.BMP", 4, 4, 102);
  write_gray(root / "cat" / "z.png", 4, 8, 204);
  write_raw((root / "cat" / "notes.txt").string(), Bytes{'x'});

  const Dataset ds = load_image_folder(root.string(), 1, 2);
  CHECK(ds.class_names == std::vector<std::string>{"cat", "dog"});
  CHECK(ds.num_classes == 2);
  CHECK(ds.size() == 3);
  CHECK(ds.image_shape() == Shape{1, 2, 2});
  CHECK(ds.labels.to_vector_i64() == std::vector<int64_t>{0, 1, 1});
  std::vector<float> px(12);
  for (int64_t i = 0; i < 3; ++i) ds.read_image(i, px.data() + 4 * i);
  for (int p = 0; p < 4; ++p) {
    CHECK(px[0 + p] == doctest::Approx(0.8));
    CHECK(px[4 + p] == doctest::Approx(0.4));  // a.BMP sorts before b.png
    CHECK(px[8 + p] == doctest::Approx(0.2));
  }
  CHECK(load_image_folder(root.string(), 3, 3).image_shape() == Shape{3, 3, 3});

  CHECK_THROWS_WITH_AS(load_image_folder((tmp.path / "missing").string(), 1, 2),
                       doctest::Contains("is not a directory"), Error);
  fs::create_directories(tmp.path / "empty");
  CHECK_THROWS_WITH_AS(load_image_folder((tmp.path / "empty").string(), 1, 2),
                       doctest::Contains("has no class subdirectories"), Error);
  fs::create_directories(root / "emu");
  CHECK_THROWS_WITH_AS(load_image_folder(root.string(), 1, 2), doctest::Contains("has no .png, .jpg"), Error);
}

TEST_CASE("image folder: decoding on 1 or 2 threads gives the same bytes; the cache round-trips them") {
  TempDir tmp;
  const fs::path root = tmp.path / "root";
  Generator gen(5);
  for (const char* cls : {"a", "b", "c"}) {
    fs::create_directories(root / cls);
    for (int k = 0; k < 4; ++k) {
      Tensor img = Tensor::rand({3, 9 + k, 12 - k}, gen);
      io::save_image((root / cls / (std::to_string(k) + (k % 2 ? ".jpg" : ".png"))).string(), img);
    }
  }
  const int saved = get_num_threads();
  set_num_threads(1);
  const Dataset one = load_image_folder(root.string(), 3, 8);
  set_num_threads(2);
  int64_t last_done = -1;
  const Dataset two = load_image_folder(root.string(), 3, 8, [&](int64_t done, int64_t total) {
    CHECK(total == 12);
    last_done = done;
  });
  set_num_threads(saved);
  CHECK(last_done == 12);
  REQUIRE(one.size() == 12);
  CHECK(std::memcmp(one.pixels.data, two.pixels.data, 12 * 3 * 8 * 8) == 0);

  const std::string cache = (tmp.path / "c.safetensors").string();
  write_image_cache(cache, one, "folder:" + root.string());
  const Dataset back = load_image_cache(cache);
  CHECK(back.class_names == one.class_names);
  CHECK(back.labels.to_vector_i64() == one.labels.to_vector_i64());
  CHECK(back.image_shape() == Shape{3, 8, 8});
  CHECK(std::memcmp(back.pixels.data, one.pixels.data, 12 * 3 * 8 * 8) == 0);
  // A subset shares the mapping and starts at its first image.
  const Dataset part = subset(back, 5, 7);
  std::vector<float> a(3 * 64), b(3 * 64);
  part.read_image(1, a.data());
  one.read_image(6, b.data());
  CHECK(a == b);
  // Not a cache: a checkpoint, or a cache with a label past its classes.
  CHECK_THROWS_WITH_AS(load_image_cache(test::reference_path("vit_nometa.safetensors")),
                       doctest::Contains("is not an image cache"), Error);
}

TEST_CASE("image folder: an unreadable image stops decoding with its name; class sets are matched by name") {
  TempDir tmp;
  const fs::path root = tmp.path / "root";
  fs::create_directories(root / "cat");
  fs::create_directories(root / "dog");
  io::save_image((root / "cat" / "1.png").string(), Tensor::zeros({3, 4, 4}));
  write_raw((root / "dog" / "broken.jpg").string(), Bytes{0xFF, 0xD8, 0xFF, 0x00, 1, 2, 3});
  CHECK_THROWS_WITH_AS(load_image_folder(root.string(), 3, 4),
                       doctest::Contains("broken.jpg' is not a readable PNG, JPEG or BMP image"), Error);

  Dataset d;
  d.class_names = {"cat", "dog", "owl"};
  d.num_classes = 3;
  d.labels = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 2}, {4});
  Dataset same = d;
  align_classes(same, {"owl", "cat", "dog"}, "--eval b", "--train");
  CHECK(same.labels.to_vector_i64() == std::vector<int64_t>{1, 2, 0, 0});
  CHECK_THROWS_WITH_AS(align_classes(d, {"cat", "dog", "emu"}, "--eval b=folder:B", "--train folder:A"),
                       doctest::Contains("the classes of --eval b=folder:B (3) differ from those of --train folder:A "
                                         "(3): missing in --eval b=folder:B: emu; missing in --train folder:A: owl"),
                       Error);
}

TEST_CASE("random resized crop: windows within the image and of the allowed area and ratio, per seed") {
  ResizedCropOptions opt;
  int fallback = 0;
  for (uint64_t seed = 0; seed < 500; ++seed) {
    const CropWindow w = random_resized_crop_window(40, 60, opt, seed);
    REQUIRE(w.height >= 1);
    REQUIRE(w.width >= 1);
    CHECK(w.top >= 0);
    CHECK(w.left >= 0);
    CHECK(w.top + w.height <= 40);
    CHECK(w.left + w.width <= 60);
    const double area = double(w.height) * w.width / (40.0 * 60.0), ratio = double(w.width) / w.height;
    if (w.height == 40 && w.width == 60) ++fallback;
    else {
      CHECK(area >= 0.08 * 0.8);  // rounding of small windows
      CHECK(ratio >= 0.75 * 0.85);
      CHECK(ratio <= 4.0 / 3.0 * 1.15);
    }
    const CropWindow again = random_resized_crop_window(40, 60, opt, seed);
    CHECK(again.top == w.top);
    CHECK(again.width == w.width);
  }
  CHECK(fallback < 25);  // ten tries rarely all miss
  // A constant image stays constant; flipping mirrors a ramp.
  std::vector<float> in(2 * 6 * 6, 0.25f), out(in.size());
  random_resized_crop(in.data(), out.data(), 2, 6, 6, opt, 3);
  for (float v : out) CHECK(v == doctest::Approx(0.25f));
  ResizedCropOptions whole{1.0, 1.0, 6.0, 6.0, true};  // the whole 1 x 6 image
  std::vector<float> ramp(6), r(6);
  for (int x = 0; x < 6; ++x) ramp[x] = float(x);
  int flipped = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    random_resized_crop(ramp.data(), r.data(), 1, 1, 6, whole, seed);
    if (r[0] == 5.0f) ++flipped;
    else CHECK(r == ramp);
  }
  CHECK(flipped > 8);
  CHECK(flipped < 32);
}

TEST_CASE("loader: 8-bit pixels are read as value / 255, with and without a transform") {
  auto bytes = std::make_shared<std::vector<uint8_t>>(std::vector<uint8_t>{0, 51, 102, 255, 10, 20, 30, 40});
  Dataset ds;
  ds.labels = Tensor::from_vector(std::vector<int64_t>{1, 0}, {2});
  ds.num_classes = 2;
  ds.pixels = Pixels{bytes->data(), 2, 1, 2, 2, bytes};
  BatchLoader plain(ds, {.batch_size = 2, .shuffle = false});
  plain.start_epoch(0);
  Batch b;
  REQUIRE(plain.next(b));
  CHECK(b.x.to_vector_f32() == std::vector<float>{0.0f, 51 / 255.0f, 102 / 255.0f, 1.0f, 10 / 255.0f, 20 / 255.0f,
                                                  30 / 255.0f, 40 / 255.0f});
  CHECK(b.y.to_vector_i64() == std::vector<int64_t>{1, 0});
  BatchLoader negated(ds, {.batch_size = 2, .shuffle = false,
                           .transform = [](const float* in, float* out, int64_t C, int64_t H, int64_t W, uint64_t) {
                             for (int64_t i = 0; i < C * H * W; ++i) out[i] = -in[i];
                           }});
  negated.start_epoch(0);
  REQUIRE(negated.next(b));
  CHECK(b.x.to_vector_f32()[3] == -1.0f);
}

TEST_CASE("select and split_holdout: the samples asked for, a seeded disjoint split, f32 images and 8-bit pixels") {
  // Ten samples whose label and every pixel value are their index, as f32 images and as 8-bit pixels.
  std::vector<float> img;
  std::vector<int64_t> lab;
  auto bytes = std::make_shared<std::vector<uint8_t>>();
  for (int i = 0; i < 10; ++i) {
    for (int p = 0; p < 4; ++p) {
      img.push_back(static_cast<float>(i));
      bytes->push_back(static_cast<uint8_t>(i));
    }
    lab.push_back(i);
  }
  Dataset f32{Tensor::from_vector(img, {10, 1, 2, 2}), Tensor::from_vector(lab, {10}), 10, {}, {}};
  Dataset u8;
  u8.labels = Tensor::from_vector(lab, {10});
  u8.num_classes = 10;
  u8.pixels = Pixels{bytes->data(), 10, 1, 2, 2, bytes};
  for (const Dataset* d : {&f32, &u8}) {
    const Dataset picked = select(*d, {7, 2, 2});
    CHECK(picked.labels.to_vector_i64() == std::vector<int64_t>{7, 2, 2});
    std::vector<float> px(4);
    picked.read_image(0, px.data());
    CHECK(px[0] == doctest::Approx(d == &f32 ? 7.0f : 7 / 255.0f));
    auto [train, val] = split_holdout(*d, 3, 5);
    CHECK(train.size() == 7);
    CHECK(val.size() == 3);
    std::vector<int64_t> all = train.labels.to_vector_i64(), v = val.labels.to_vector_i64();
    CHECK(std::is_sorted(all.begin(), all.end()));  // each part keeps the original order
    all.insert(all.end(), v.begin(), v.end());
    std::sort(all.begin(), all.end());
    CHECK(all == lab);  // disjoint, and together every sample once
    for (int64_t i = 0; i < val.size(); ++i) {  // images travel with their labels
      val.read_image(i, px.data());
      CHECK(px[3] == doctest::Approx(d == &f32 ? float(v[i]) : v[i] / 255.0f));
    }
    CHECK(split_holdout(*d, 3, 5).second.labels.to_vector_i64() == v);  // the same seed, the same split
  }
  CHECK(split_holdout(f32, 3, 5).second.labels.to_vector_i64() != split_holdout(f32, 3, 6).second.labels.to_vector_i64());
  CHECK_THROWS_WITH_AS(select(f32, {10}), doctest::Contains("index 10 is outside a dataset of 10 samples"), Error);
  CHECK_THROWS_WITH_AS(split_holdout(f32, 10, 0), doctest::Contains("cannot hold out 10 of 10 samples"), Error);
}

// ---------------------------------------------------------------- loader

TEST_CASE("loader: every sample once per epoch, rows match labels, drop_last") {
  const Dataset ds = counting_dataset(10);
  BatchLoader loader(ds, {.batch_size = 3, .shuffle = true, .seed = 1});
  CHECK(loader.num_batches() == 4);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const std::vector<Batch> batches = whole_epoch(loader, epoch);
    REQUIRE(batches.size() == 4);
    CHECK(batches.back().y.numel() == 1);
    std::multiset<int64_t> seen;
    for (const Batch& b : batches) {
      CHECK(b.x.shape()[1] == 1);
      const std::vector<float> x = b.x.to_vector_f32();
      const std::vector<int64_t> y = b.y.to_vector_i64();
      for (size_t j = 0; j < y.size(); ++j) {
        seen.insert(y[j]);
        for (int p = 0; p < 12; ++p) CHECK(x[j * 12 + p] == static_cast<float>(y[j]) / 100.0f);
      }
    }
    CHECK(seen == std::multiset<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  }

  BatchLoader dropping(ds, {.batch_size = 3, .drop_last = true});
  CHECK(dropping.num_batches() == 3);
  CHECK(whole_epoch(dropping, 0).size() == 3);

  BatchLoader ordered(ds, {.batch_size = 4, .shuffle = false});
  const std::vector<Batch> in_order = whole_epoch(ordered, 5);
  CHECK(in_order[0].y.to_vector_i64() == std::vector<int64_t>{0, 1, 2, 3});
  CHECK(in_order[2].y.to_vector_i64() == std::vector<int64_t>{8, 9});

  CHECK_THROWS_WITH_AS(BatchLoader(ds, {.batch_size = 11, .drop_last = true}), doctest::Contains("leaves no batch"),
                       Error);
  Batch b;
  BatchLoader unstarted(ds, {});
  CHECK_THROWS_WITH_AS(unstarted.next(b), doctest::Contains("call start_epoch"), Error);
}

TEST_CASE("loader: batches depend only on (seed, epoch), not on timing") {
  const Dataset ds = counting_dataset(50, 6, 6);
  const LoaderOptions opt{.batch_size = 8, .seed = 3, .transform = random_domain_transform(pretrain_domains())};
  BatchLoader fast(ds, opt), slow(ds, opt);
  const std::vector<Batch> a = whole_epoch(fast, 2);
  slow.start_epoch(2);
  std::vector<Batch> b;
  Batch next;
  while (slow.next(next)) {
    b.push_back(next);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // the worker runs ahead and waits
  }
  check_same_batches(a, b);
  // Another epoch first, then back: the same batches again, and a different order for epoch 3.
  const std::vector<Batch> e3 = whole_epoch(fast, 3);
  check_same_batches(a, whole_epoch(fast, 2));
  CHECK(e3[0].y.to_vector_i64() != a[0].y.to_vector_i64());
  // A new seed, a new order.
  LoaderOptions other = opt;
  other.seed = 4;
  BatchLoader reseeded(ds, other);
  CHECK(whole_epoch(reseeded, 2)[0].y.to_vector_i64() != a[0].y.to_vector_i64());
  // Restarting mid-epoch drops the rest and begins the new epoch from its first batch.
  fast.start_epoch(2);
  fast.next(next);
  fast.next(next);
  check_same_batches(a, whole_epoch(fast, 2));
}

TEST_CASE("loader: transforms see each sample's own seed") {
  const Dataset ds = counting_dataset(40, 5, 5);
  BatchLoader edge(ds, {.batch_size = 16, .transform = domain_transform(Domain::edge)});
  for (const Batch& b : whole_epoch(edge, 0))
    for (float v : b.x.to_vector_f32()) CHECK(v == 0.0f);  // constant images have no edges

  // Every pre-training domain gets drawn, and each sample is exactly one of them.
  const Dataset gray = counting_dataset(60, 4, 4);
  BatchLoader mixed(gray, {.batch_size = 20, .transform = random_domain_transform(pretrain_domains())});
  // On a constant image clean and blur agree; the other deterministic domains differ from each other.
  std::set<std::string> drawn;
  for (const Batch& b : whole_epoch(mixed, 0)) {
    const std::vector<float> x = b.x.to_vector_f32();
    const std::vector<int64_t> y = b.y.to_vector_i64();
    for (size_t j = 0; j < y.size(); ++j) {
      const std::vector<float> got(x.begin() + j * 16, x.begin() + (j + 1) * 16);
      const std::vector<float> src(16, static_cast<float>(y[j]) / 100.0f);
      std::string which = "noise";
      for (Domain d : {Domain::clean, Domain::contrast, Domain::invert, Domain::rotate})
        if (got == run_domain(d, src, 4, 4)) which = domain_name(d);
      drawn.insert(which);
    }
  }
  CHECK(drawn == std::set<std::string>{"clean", "contrast", "invert", "noise", "rotate"});

  const SampleTransform both = compose({domain_transform(Domain::invert), augment_transform({.hflip = true})});
  BatchLoader composed(ds, {.batch_size = 40, .shuffle = false, .transform = both});
  const std::vector<Batch> c = whole_epoch(composed, 0);
  CHECK(c[0].x.to_vector_f32()[0] == doctest::Approx(1.0));
}

TEST_CASE("loader: a failing transform rethrows in the consumer; shutdown mid-epoch is clean") {
  const Dataset ds = counting_dataset(12);
  const SampleTransform fails = [](const float* in, float* out, int64_t C, int64_t H, int64_t W, uint64_t) {
    if (in[0] == 0.05f) SPDLAB_FAIL("transform: sample 5 is broken");
    std::copy(in, in + C * H * W, out);
  };
  BatchLoader loader(ds, {.batch_size = 4, .shuffle = false, .transform = fails});
  loader.start_epoch(0);
  Batch b;
  CHECK(loader.next(b));
  CHECK_THROWS_WITH_AS(loader.next(b), doctest::Contains("sample 5 is broken"), Error);
  CHECK_FALSE(loader.next(b));
  loader.start_epoch(1);
  CHECK(loader.next(b));

  // Destroying a loader whose worker holds a prepared batch must not hang.
  for (int i = 0; i < 20; ++i) {
    BatchLoader l(counting_dataset(30), {.batch_size = 2, .seed = static_cast<uint64_t>(i)});
    l.start_epoch(0);
    if (i % 2) l.next(b);
  }
}

}  // TEST_SUITE("data")
