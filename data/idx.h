// IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed, and the in-memory Dataset.
// Only unsigned-byte IDX (type 0x08) is read; Fashion-MNIST needs nothing else.
// Datasets are whole tensors in memory (Fashion-MNIST is 55 MB as f32); batching is data/loader.h.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace spdlab::data {

// Where Debian's dataset-fashion-mnist package puts the files.
inline constexpr const char* kFashionMnistRoot = "/usr/share/datasets/fashion-mnist";

struct IdxArray {
  std::vector<int64_t> dims;  // as stored, outermost first
  std::vector<uint8_t> data;  // row-major, product(dims) bytes
};

// Reads `path` (gzip detected by its 1f 8b magic). Throws spdlab::Error naming the file on a missing
// file, a bad magic or element type, a corrupt gzip stream, a payload shorter or longer than the dims say.
IdxArray read_idx(const std::string& path);
// The same checks on bytes already in memory (decompressed); `name` is used in messages.
IdxArray parse_idx(const std::vector<uint8_t>& bytes, const std::string& name);

// 8-bit images [N, C, H, W], value / 255 in [0, 1]: decoded image folders (in memory) and decode caches
// (memory-mapped). A quarter of f32's memory, which is what lets a folder of 224x224 images stay resident.
struct Pixels {
  const uint8_t* data = nullptr;
  int64_t n = 0, c = 0, h = 0, w = 0;
  std::shared_ptr<const void> owner;  // keeps the bytes alive: a vector, or a file mapping
  int64_t per_image() const { return c * h * w; }
};

// A labelled image set. The images are either `images` (f32) or, when that is undefined, `pixels` (u8).
struct Dataset {
  Tensor images;  // f32 [N, C, H, W] in [0, 1]
  Tensor labels;  // i64 [N], each in [0, num_classes)
  int64_t num_classes = 0;
  std::vector<std::string> class_names;  // num_classes names, or empty when the source has none
  Pixels pixels;

  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  Shape image_shape() const;  // [C, H, W]
  // Image i as C*H*W floats in [0, 1] into `out`.
  void read_image(int64_t i, float* out) const;
};

// Images IDX [N, H, W] (pixels / 255 -> [N, 1, H, W]) with labels IDX [N]. Checks that the counts match
// and that every label is below num_classes.
Dataset load_idx_pair(const std::string& images_path, const std::string& labels_path,
                      int64_t num_classes = 10);

// The 60000 training or 10000 test images of Fashion-MNIST under `root` (files *-idx?-ubyte, gzipped
// or not). A missing file's message says how to get them.
Dataset load_fashion_mnist(const std::string& root = kFashionMnistRoot, bool train = true);

// Samples [begin, end) of `d`, sharing its memory (the protocol's disjoint pre-train / fine-tune splits).
Dataset subset(const Dataset& d, int64_t begin, int64_t end);

// The samples at `indices` (each in [0, size), any order, repeats allowed), copied.
Dataset select(const Dataset& d, const std::vector<int64_t>& indices);

// A held-out split: `n` samples drawn at random (a permutation seeded by `seed`) for validation, the rest for
// training, each in its original order. The draw depends only on the size, n and the seed.
std::pair<Dataset, Dataset> split_holdout(const Dataset& d, int64_t n, uint64_t seed);

}  // namespace spdlab::data
