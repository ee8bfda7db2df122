// Decoding through stb_image (its one implementation lives here) and PIL-style separable resampling.
// Everything is scalar CPU code: images are resized once while loading, never inside a training step.
#include "core/io/image.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>

// Only the decoders image datasets use are compiled: fewer parsers of untrusted bytes. (tests/fuzz found signed
// overflow in stb_image's PNM header reader, which is now not built at all.)
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STB_IMAGE_IMPLEMENTATION
#include "stb_image.h"
// The writer's one implementation too (the tests' fixtures use its stdio functions).
#define STB_IMAGE_WRITE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include "stb_image_write.h"
#pragma GCC diagnostic pop

#include "core/io/atomic_file.h"

namespace spdlab::io {
namespace {

void check_image(const Tensor& img, const char* op) {
  SPDLAB_CHECK(img.dtype() == DType::f32 && img.device() == Device::cpu && img.dim() == 3, op,
               ": expected an f32 [C, H, W] image on cpu; got ", img.dtype(), " ", shape_str(img.shape()), " on ",
               img.device());
}

double triangle(double x) {
  x = std::abs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Keys' cubic convolution kernel with a = -0.5, as PIL's bicubic_filter.
double cubic(double x) {
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// The taps of one output index along one axis: input [start, start + w.size()) with weights w.
struct Taps {
  int64_t start = 0;
  std::vector<double> w;
};

// PIL's precompute_coeffs (Resample.c): output pixel i is centered at input coordinate
// (i + 0.5) * in / out; taps outside the image are dropped and the rest renormalized to sum 1.
std::vector<Taps> make_taps(int64_t in, int64_t out, Interp interp, bool antialias) {
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  const double filterscale = antialias ? std::max(scale, 1.0) : 1.0;
  const double support = (interp == Interp::bilinear ? 1.0 : 2.0) * filterscale;
  std::vector<Taps> taps(out);
  for (int64_t i = 0; i < out; ++i) {
    const double center = (i + 0.5) * scale;
    const int64_t lo = std::max<int64_t>(0, static_cast<int64_t>(center - support + 0.5));
    const int64_t hi = std::min<int64_t>(in, static_cast<int64_t>(center + support + 0.5));
    Taps& t = taps[i];
    t.start = lo;
    double total = 0;
    for (int64_t x = lo; x < hi; ++x) {
      const double arg = (x - center + 0.5) / filterscale;
      const double w = interp == Interp::bilinear ? triangle(arg) : cubic(arg);
      t.w.push_back(w);
      total += w;
    }
    if (total != 0.0)
      for (double& w : t.w) w /= total;
  }
  return taps;
}

// Debian's stb_image writes past a Huffman table's 257-entry code-length array when a JPEG's DHT segment
// declares more than 256 codes (found by tests/fuzz under UBSan). Such a file is corrupt, so the markers are
// walked here first and it is refused before stb_image reads it.
void check_jpeg_huffman_tables(const std::vector<unsigned char>& b, const std::string& path) {
  // stb_image takes a file for a JPEG when, after any number of 0xFF fill bytes, the next byte is SOI (0xD8).
  size_t i = 0;
  while (i < b.size() && b[i] == 0xFF) ++i;
  if (i == 0 || i >= b.size() || b[i] != 0xD8) return;
  ++i;
  while (i + 1 < b.size()) {
    if (b[i] != 0xFF) {  // entropy-coded data between the markers
      ++i;
      continue;
    }
    const unsigned char m = b[i + 1];
    if (m == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {  // stuffed zero, TEM, RSTn: no length
      i += 2;
      continue;
    }
    if (m == 0xD9 || i + 4 > b.size()) return;  // EOI, or a truncation stb_image reports itself
    const size_t len = (size_t{b[i + 2]} << 8) | b[i + 3];
    if (m == 0xC4) {
      // DHT: per table, a class/id byte, 16 code counts, then the values. Read as stb_image reads it: tables
      // while the declared length lasts, even one that crosses the segment's or the file's end (bytes past the
      // end read as 0).
      auto at = [&](size_t k) -> size_t { return k < b.size() ? b[k] : 0; };
      int64_t left = int64_t(len) - 2;
      for (size_t p = i + 4; left > 0 && p < b.size();) {
        size_t codes = 0;
        for (size_t k = 1; k <= 16; ++k) codes += at(p + k);
        SPDLAB_CHECK(codes <= 256, "load_image: '", path, "' is a corrupt JPEG: a Huffman table at byte ", p,
                     " declares ", codes, " codes (at most 256)");
        p += 17 + codes;
        left -= int64_t(17 + codes);
      }
    }
    i += 2 + std::max<size_t>(len, 2);
  }
}

// stb_image reads missing bytes as 0, so a BMP header claiming 8192x8192 on a 60-byte file decoded to a black
// 8192x8192 image (tests/fuzz, as a timeout). An uncompressed BMP must hold every row it declares.
void check_bmp_size(const std::vector<unsigned char>& b, const std::string& path) {
  auto u16 = [&](size_t k) { return uint32_t(b[k]) | uint32_t(b[k + 1]) << 8; };
  auto u32 = [&](size_t k) { return u16(k) | u16(k + 2) << 16; };
  if (b.size() < 26) return;  // too short for a header: stb_image reports it
  const uint64_t offset = u32(10), dib = u32(14);
  int64_t w = 0, h = 0;
  uint32_t bpp = 0, compression = 0;
  if (dib == 12) {
    w = int16_t(u16(18));
    h = int16_t(u16(20));
    bpp = u16(24);
  } else if (dib >= 40 && b.size() >= 34) {
    w = int32_t(u32(18));
    h = int32_t(u32(22));
    bpp = u16(28);
    compression = u32(30);
  } else {
    return;
  }
  if ((compression != 0 && compression != 3) || w <= 0 || h == 0 || bpp == 0 || bpp > 32) return;
  const uint64_t stride = (uint64_t(w) * bpp + 31) / 32 * 4, rows = uint64_t(h < 0 ? -h : h);
  SPDLAB_CHECK(stride * rows <= uint64_t(INT64_MAX) - offset && offset + stride * rows <= b.size(), "load_image: '",
               path, "' is a truncated BMP: ", w, "x", rows, " pixels at ", bpp, " bits need ", offset + stride * rows,
               " bytes, the file has ", b.size());
}

// stb_image grows its buffer to a PNG chunk's declared length before reading the chunk, so 60 bytes claiming a
// 2 GiB IDAT made it allocate 2 GiB (tests/fuzz, as an out-of-memory). Every chunk must fit in the file.
void check_png_chunks(const std::vector<unsigned char>& b, const std::string& path) {
  static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (b.size() < 8 || !std::equal(sig, sig + 8, b.begin())) return;
  for (size_t i = 8; i + 8 <= b.size();) {
    const uint64_t len = uint64_t(b[i]) << 24 | uint64_t(b[i + 1]) << 16 | uint64_t(b[i + 2]) << 8 | b[i + 3];
    const std::string type(reinterpret_cast<const char*>(&b[i + 4]), 4);
    SPDLAB_CHECK(i + 12 + len <= b.size(), "load_image: '", path, "' is a truncated PNG: its ", type,
                 " chunk at byte ", i, " declares ", len, " bytes, ", b.size() - std::min(b.size(), i + 12),
                 " remain");
    if (type == "IEND") return;
    i += 12 + len;
  }
}

}  // namespace

Tensor load_image(const std::string& path, int channels) {
  SPDLAB_CHECK(channels == 1 || channels == 3, "load_image: channels must be 1 or 3; got ", channels);
  std::error_code ec;
  SPDLAB_CHECK(std::filesystem::is_regular_file(path, ec), "load_image: cannot open '", path, "': no such file");
  std::ifstream f(path, std::ios::binary);
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  SPDLAB_CHECK(!f.bad(), "load_image: cannot read '", path, "'");
  SPDLAB_CHECK(bytes.size() <= size_t{INT32_MAX}, "load_image: '", path, "' is ", bytes.size(), " bytes; at most 2 GiB");
  check_jpeg_huffman_tables(bytes, path);
  check_png_chunks(bytes, path);
  if (bytes.size() >= 2 && bytes[0] == 'B' && bytes[1] == 'M') check_bmp_size(bytes, path);
  const int n = static_cast<int>(bytes.size());
  int w = 0, h = 0, in_channels = 0;
  // The header first: a few bytes can claim any size, and decoding would allocate it before finding out.
  if (stbi_info_from_memory(bytes.data(), n, &w, &h, &in_channels))
    SPDLAB_CHECK(int64_t{w} * h <= kMaxImagePixels, "load_image: '", path, "' claims ", w, "x", h,
                 " pixels; images up to ", kMaxImagePixels, " pixels (8192x8192) are read");
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
      stbi_load_from_memory(bytes.data(), n, &w, &h, &in_channels, channels), stbi_image_free);
  SPDLAB_CHECK(pixels != nullptr, "load_image: '", path, "' is not a readable PNG, JPEG or BMP image: ",
               stbi_failure_reason());
  Tensor img = Tensor::empty({channels, h, w});
  float* dst = img.data<float>();
  const int64_t plane = int64_t{h} * w;
  // stb gives interleaved [H, W, C]; models want planar [C, H, W].
  for (int64_t p = 0; p < plane; ++p)
    for (int c = 0; c < channels; ++c) dst[c * plane + p] = static_cast<float>(pixels.get()[p * channels + c]) / 255.0f;
  return img;
}

void save_image(const std::string& path, const Tensor& img_in) {
  check_image(img_in, "save_image");
  const Tensor img = img_in.contiguous();
  const int64_t C = img.size(0), H = img.size(1), W = img.size(2);
  SPDLAB_CHECK((C == 1 || C == 3) && H > 0 && W > 0 && H * W <= kMaxImagePixels, "save_image: '", path,
               "': expected a [1 or 3, H, W] image of at most ", kMaxImagePixels, " pixels, got ", shape_str(img.shape()));
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  std::vector<unsigned char> px(static_cast<size_t>(C * H * W));
  const float* src = img.data<float>();
  for (int64_t p = 0; p < H * W; ++p)
    for (int64_t c = 0; c < C; ++c) {
      const float v = src[c * H * W + p];
      px[p * C + c] = static_cast<unsigned char>(std::lround(std::clamp(std::isfinite(v) ? v : 0.0f, 0.0f, 1.0f) * 255));
    }
  std::string bytes;
  auto sink = [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size); };
  const int w = static_cast<int>(W), h = static_cast<int>(H), c = static_cast<int>(C);
  int ok = 0;
  if (ext == ".png") ok = stbi_write_png_to_func(sink, &bytes, w, h, c, px.data(), w * c);
  else if (ext == ".jpg" || ext == ".jpeg") ok = stbi_write_jpg_to_func(sink, &bytes, w, h, c, px.data(), 95);
  else if (ext == ".bmp") ok = stbi_write_bmp_to_func(sink, &bytes, w, h, c, px.data());
  else SPDLAB_FAIL("save_image: '", path, "' has no .png, .jpg, .jpeg or .bmp extension");
  SPDLAB_CHECK(ok != 0, "save_image: cannot encode '", path, "'");
  write_file_atomic(path, bytes);
}

Tensor resize(const Tensor& img, int64_t out_h, int64_t out_w, Interp interp, bool antialias) {
  check_image(img, "resize");
  SPDLAB_CHECK(out_h > 0 && out_w > 0, "resize: output size must be positive; got ", out_h, "x", out_w);
  const int64_t C = img.size(0), H = img.size(1), W = img.size(2);
  SPDLAB_CHECK(H > 0 && W > 0, "resize: input image is empty: ", shape_str(img.shape()));
  const Tensor src = img.contiguous();
  const float* in = src.data<float>();
  const std::vector<Taps> tx = make_taps(W, out_w, interp, antialias);
  const std::vector<Taps> ty = make_taps(H, out_h, interp, antialias);
  std::vector<double> rows(C * H * out_w);  // after the horizontal pass, before rounding to f32
  for (int64_t r = 0; r < C * H; ++r)
    for (int64_t x = 0; x < out_w; ++x) {
      double acc = 0;
      for (size_t k = 0; k < tx[x].w.size(); ++k) acc += tx[x].w[k] * in[r * W + tx[x].start + k];
      rows[r * out_w + x] = acc;
    }
  Tensor out = Tensor::empty({C, out_h, out_w});
  float* dst = out.data<float>();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = 0; y < out_h; ++y)
      for (int64_t x = 0; x < out_w; ++x) {
        double acc = 0;
        for (size_t k = 0; k < ty[y].w.size(); ++k)
          acc += ty[y].w[k] * rows[(c * H + ty[y].start + k) * out_w + x];
        dst[(c * out_h + y) * out_w + x] = static_cast<float>(acc);
      }
  return out;
}

Tensor center_crop(const Tensor& img, int64_t h, int64_t w) {
  check_image(img, "center_crop");
  const int64_t H = img.size(1), W = img.size(2);
  SPDLAB_CHECK(h > 0 && w > 0 && h <= H && w <= W, "center_crop: a ", h, "x", w, " window does not fit in a ", H,
               "x", W, " image");
  auto half_even = [](int64_t diff) { return diff / 2 + ((diff % 2 == 1 && (diff / 2) % 2 == 1) ? 1 : 0); };
  return img.narrow(1, half_even(H - h), h).narrow(2, half_even(W - w), w).contiguous();
}

Tensor normalize(const Tensor& img, const std::vector<double>& mean, const std::vector<double>& std) {
  check_image(img, "normalize");
  const int64_t C = img.size(0), plane = img.size(1) * img.size(2);
  auto per_channel = [&](const std::vector<double>& v, const char* what) {
    SPDLAB_CHECK(v.size() == 1 || static_cast<int64_t>(v.size()) == C, "normalize: ", what, " has ", v.size(),
                 " entries; expected 1 or ", C, " (one per channel)");
    return [&v](int64_t c) { return v.size() == 1 ? v[0] : v[c]; };
  };
  auto m = per_channel(mean, "mean");
  auto s = per_channel(std, "std");
  for (int64_t c = 0; c < C; ++c)
    SPDLAB_CHECK(s(c) != 0.0, "normalize: std of channel ", c, " is 0");
  const Tensor src = img.contiguous();
  const float* in = src.data<float>();
  Tensor out = Tensor::empty({C, img.size(1), img.size(2)});
  float* dst = out.data<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double mc = m(c), sc = s(c);
    for (int64_t p = 0; p < plane; ++p) dst[c * plane + p] = static_cast<float>((in[c * plane + p] - mc) / sc);
  }
  return out;
}

}  // namespace spdlab::io
