// Domain transforms and augmentations on raw float planes. Arithmetic is plain scalar C++ in a fixed
// order, so results are bit-identical across runs and thread counts (the batch form splits by image).
// Not differentiable and not on the GPU: these run once per sample while loading.
#include "data/domains.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/io/image.h"
#include "kernels/threads.h"

namespace spdlab::data {
namespace {

struct DomainEntry {
  Domain d;
  const char* name;
};
constexpr DomainEntry kDomains[] = {
    {Domain::clean, "clean"},   {Domain::noise, "noise"},   {Domain::blur, "blur"},
    {Domain::contrast, "contrast"}, {Domain::invert, "invert"}, {Domain::rotate, "rotate"},
    {Domain::edge, "edge"},
};

inline float clip01(float v) { return std::min(1.0f, std::max(0.0f, v)); }
inline int64_t clamp_index(int64_t i, int64_t n) { return std::min(n - 1, std::max<int64_t>(0, i)); }

// One application of the separable binomial blur: rows into tmp, then columns into dst.
// dst may be src (src is fully consumed into tmp before dst is written).
void binomial_pass(const float* src, float* tmp, float* dst, int64_t H, int64_t W) {
  constexpr float k[5] = {1 / 16.0f, 4 / 16.0f, 6 / 16.0f, 4 / 16.0f, 1 / 16.0f};
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      float acc = 0;
      for (int64_t t = 0; t < 5; ++t) acc += k[t] * src[y * W + clamp_index(x + t - 2, W)];
      tmp[y * W + x] = acc;
    }
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      float acc = 0;
      for (int64_t t = 0; t < 5; ++t) acc += k[t] * tmp[clamp_index(y + t - 2, H) * W + x];
      dst[y * W + x] = acc;
    }
}

void rotate(const float* in, float* out, int64_t H, int64_t W) {
  const double theta = kRotateDegrees * std::numbers::pi / 180.0;
  const double c = std::cos(theta), s = std::sin(theta);
  const double cx = (W - 1) / 2.0, cy = (H - 1) / 2.0;
  auto tap = [&](int64_t y, int64_t x) -> double {
    return (y < 0 || y >= H || x < 0 || x >= W) ? 0.0 : in[y * W + x];
  };
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      // Inverse map: the source point that a counter-clockwise turn (y down) carries onto (x, y).
      const double dx = x - cx, dy = y - cy;
      const double sx = cx + c * dx - s * dy, sy = cy + s * dx + c * dy;
      const double fx0 = std::floor(sx), fy0 = std::floor(sy);
      const double fx = sx - fx0, fy = sy - fy0;
      const auto x0 = static_cast<int64_t>(fx0), y0 = static_cast<int64_t>(fy0);
      const double v = (1 - fy) * ((1 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1)) +
                       fy * ((1 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1));
      out[y * W + x] = static_cast<float>(v);
    }
}

void sobel(const float* in, float* out, int64_t H, int64_t W) {
  auto p = [&](int64_t y, int64_t x) { return in[clamp_index(y, H) * W + clamp_index(x, W)]; };
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      const float gx = (p(y - 1, x + 1) + 2 * p(y, x + 1) + p(y + 1, x + 1)) -
                       (p(y - 1, x - 1) + 2 * p(y, x - 1) + p(y + 1, x - 1));
      const float gy = (p(y + 1, x - 1) + 2 * p(y + 1, x) + p(y + 1, x + 1)) -
                       (p(y - 1, x - 1) + 2 * p(y - 1, x) + p(y - 1, x + 1));
      out[y * W + x] = clip01(std::sqrt(gx * gx + gy * gy));
    }
}

}  // namespace

Domain parse_domain(const std::string& name) {
  std::string valid;
  for (const DomainEntry& e : kDomains) {
    if (name == e.name) return e.d;
    valid += valid.empty() ? e.name : std::string(", ") + e.name;
  }
  SPDLAB_FAIL("parse_domain: unknown domain '", name, "'; valid domains: ", valid);
}

std::string domain_name(Domain d) {
  for (const DomainEntry& e : kDomains)
    if (e.d == d) return e.name;
  SPDLAB_FAIL("domain_name: invalid Domain value ", static_cast<int>(d));
}

const std::vector<Domain>& all_domains() {
  static const std::vector<Domain> v = {Domain::clean,  Domain::noise,  Domain::blur, Domain::contrast,
                                        Domain::invert, Domain::rotate, Domain::edge};
  return v;
}

const std::vector<Domain>& pretrain_domains() {
  static const std::vector<Domain> v = {Domain::clean,  Domain::noise, Domain::blur,
                                        Domain::contrast, Domain::invert, Domain::rotate};
  return v;
}

uint64_t seed_hash(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

void apply_domain(Domain d, const float* in, float* out, int64_t H, int64_t W, uint64_t seed) {
  SPDLAB_CHECK(H > 0 && W > 0, "apply_domain: image size must be positive; got ", H, "x", W);
  SPDLAB_CHECK(in != out, "apply_domain: out must be a different buffer from in");
  const int64_t n = H * W;
  switch (d) {
    case Domain::clean:
      std::copy(in, in + n, out);
      return;
    case Domain::noise: {
      Generator gen(seed_hash(seed));
      for (int64_t i = 0; i < n; ++i)
        out[i] = clip01(in[i] + static_cast<float>(kNoiseSigma * gen.next_normal()));
      return;
    }
    case Domain::blur: {
      std::vector<float> tmp(n);
      binomial_pass(in, tmp.data(), out, H, W);
      binomial_pass(out, tmp.data(), out, H, W);
      return;
    }
    case Domain::contrast:
      for (int64_t i = 0; i < n; ++i)
        out[i] = 0.5f + static_cast<float>(kContrastScale) * (in[i] - 0.5f);
      return;
    case Domain::invert:
      for (int64_t i = 0; i < n; ++i) out[i] = 1.0f - in[i];
      return;
    case Domain::rotate:
      rotate(in, out, H, W);
      return;
    case Domain::edge:
      sobel(in, out, H, W);
      return;
  }
  SPDLAB_FAIL("apply_domain: invalid Domain value ", static_cast<int>(d));
}

Tensor apply_domain(Domain d, const Tensor& images, uint64_t seed) {
  SPDLAB_CHECK(images.dtype() == DType::f32 && images.device() == Device::cpu && images.dim() == 4 &&
                   images.size(1) == 1,
               "apply_domain: expected f32 [N, 1, H, W] on cpu; got ", images.dtype(), " ",
               shape_str(images.shape()), " on ", images.device());
  const int64_t N = images.size(0), H = images.size(2), W = images.size(3);
  Tensor src = images.contiguous();
  Tensor dst = Tensor::empty(images.shape());
  if (N == 0) return dst;
  SPDLAB_CHECK(H > 0 && W > 0, "apply_domain: image size must be positive; got ", shape_str(images.shape()));
  const float* in = src.data<float>();
  float* out = dst.data<float>();
#pragma omp parallel for schedule(static) num_threads(get_num_threads())
  for (int64_t i = 0; i < N; ++i)
    apply_domain(d, in + i * H * W, out + i * H * W, H, W, seed ^ seed_hash(static_cast<uint64_t>(i)));
  return dst;
}

void augment(const float* in, float* out, int64_t C, int64_t H, int64_t W, const AugmentOptions& opt,
             uint64_t seed) {
  SPDLAB_CHECK(C > 0 && H > 0 && W > 0, "augment: image size must be positive; got ", C, "x", H, "x", W);
  SPDLAB_CHECK(opt.crop_padding >= 0, "augment: crop_padding must be >= 0; got ", opt.crop_padding);
  SPDLAB_CHECK(in != out, "augment: out must be a different buffer from in");
  Generator gen(seed_hash(seed));
  const uint64_t span = static_cast<uint64_t>(2 * opt.crop_padding + 1);
  // Draw in a fixed order (row offset, column offset, flip) whichever options are on, so turning one
  // option off leaves the other's choices for a seed unchanged.
  const int64_t oy = static_cast<int64_t>(gen.next_u64() % span) - opt.crop_padding;
  const int64_t ox = static_cast<int64_t>(gen.next_u64() % span) - opt.crop_padding;
  const bool flip = gen.next_double() < 0.5 && opt.hflip;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const int64_t sy = y + oy, sx = (flip ? W - 1 - x : x) + ox;
        out[(c * H + y) * W + x] = (sy < 0 || sy >= H || sx < 0 || sx >= W) ? 0.0f : in[(c * H + sy) * W + sx];
      }
}

CropWindow random_resized_crop_window(int64_t H, int64_t W, const ResizedCropOptions& opt, uint64_t seed) {
  SPDLAB_CHECK(H > 0 && W > 0, "random_resized_crop: image size must be positive; got ", H, "x", W);
  SPDLAB_CHECK(0 < opt.scale_min && opt.scale_min <= opt.scale_max && opt.scale_max <= 1 && 0 < opt.ratio_min &&
                   opt.ratio_min <= opt.ratio_max,
               "random_resized_crop: expected 0 < scale_min <= scale_max <= 1 and 0 < ratio_min <= ratio_max; got scale ",
               opt.scale_min, "..", opt.scale_max, ", ratio ", opt.ratio_min, "..", opt.ratio_max);
  Generator gen(seed_hash(seed));
  const double area = static_cast<double>(H) * W;
  const double log_lo = std::log(opt.ratio_min), log_hi = std::log(opt.ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * (opt.scale_min + (opt.scale_max - opt.scale_min) * gen.next_double());
    const double aspect = std::exp(log_lo + (log_hi - log_lo) * gen.next_double());
    const int64_t w = std::llround(std::sqrt(target * aspect)), h = std::llround(std::sqrt(target / aspect));
    if (0 < w && w <= W && 0 < h && h <= H) {
      const int64_t top = static_cast<int64_t>(gen.next_u64() % static_cast<uint64_t>(H - h + 1));
      const int64_t left = static_cast<int64_t>(gen.next_u64() % static_cast<uint64_t>(W - w + 1));
      return {top, left, h, w};
    }
  }
  // The fallback: the whole image, cut to the nearest allowed aspect ratio, centered.
  const double in_ratio = static_cast<double>(W) / H;
  int64_t w = W, h = H;
  if (in_ratio < opt.ratio_min) h = std::max<int64_t>(1, std::llround(W / opt.ratio_min));
  else if (in_ratio > opt.ratio_max) w = std::max<int64_t>(1, std::llround(H * opt.ratio_max));
  return {(H - h) / 2, (W - w) / 2, h, w};
}

void random_resized_crop(const float* in, float* out, int64_t C, int64_t H, int64_t W, const ResizedCropOptions& opt,
                         uint64_t seed) {
  SPDLAB_CHECK(C > 0, "random_resized_crop: channels must be positive; got ", C);
  SPDLAB_CHECK(in != out, "random_resized_crop: out must be a different buffer from in");
  const CropWindow win = random_resized_crop_window(H, W, opt, seed);
  // The flip's coin is drawn from its own stream, so the window of a seed does not depend on hflip.
  const bool flip = opt.hflip && Generator(seed_hash(seed ^ 0x9E3779B97F4A7C15ull)).next_double() < 0.5;
  Tensor crop = Tensor::empty({C, win.height, win.width});
  float* cp = crop.data<float>();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = 0; y < win.height; ++y)
      std::copy_n(in + (c * H + win.top + y) * W + win.left, win.width, cp + (c * win.height + y) * win.width);
  const Tensor resized = io::resize(crop, H, W, io::Interp::bilinear, true);
  const float* r = resized.data<float>();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) out[(c * H + y) * W + x] = r[(c * H + y) * W + (flip ? W - 1 - x : x)];
}

}  // namespace spdlab::data
