// Directory scanning and per-image preprocessing for load_image_folder; decoding and resampling are
// core/io/image.h's. Sorting by name makes the label of each class and the sample order reproducible.
#include "data/image_folder.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>

#include "core/io/image.h"

namespace spdlab::data {
namespace fs = std::filesystem;

namespace {

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

// Shorter side to `size` (the longer one rounded like torchvision's int(size * long / short)), then the
// central size x size window.
Tensor resize_and_crop(const Tensor& img, int64_t size) {
  const int64_t H = img.size(1), W = img.size(2);
  const int64_t h = H <= W ? size : static_cast<int64_t>(size * H / W);
  const int64_t w = W <= H ? size : static_cast<int64_t>(size * W / H);
  return io::center_crop(io::resize(img, h, w, io::Interp::bilinear, true), size, size);
}

}  // namespace

Dataset load_image_folder(const std::string& root, int channels, int64_t size) {
  SPDLAB_CHECK(size > 0, "load_image_folder: size must be positive; got ", size);
  SPDLAB_CHECK(channels == 1 || channels == 3, "load_image_folder: channels must be 1 or 3; got ", channels);
  std::error_code ec;
  SPDLAB_CHECK(fs::is_directory(root, ec), "load_image_folder: '", root, "' is not a directory");
  std::vector<std::string> classes;
  for (const fs::directory_entry& e : fs::directory_iterator(root))
    if (e.is_directory()) classes.push_back(e.path().filename().string());
  SPDLAB_CHECK(!classes.empty(), "load_image_folder: '", root,
               "' has no class subdirectories; expected root/<class>/<image>.png|jpg|jpeg|bmp");
  std::sort(classes.begin(), classes.end());

  std::vector<std::pair<std::string, int64_t>> files;  // (path, label)
  for (size_t c = 0; c < classes.size(); ++c) {
    std::vector<std::string> names;
    for (const fs::directory_entry& e : fs::directory_iterator(fs::path(root) / classes[c]))
      if (e.is_regular_file() && is_image_file(e.path())) names.push_back(e.path().filename().string());
    SPDLAB_CHECK(!names.empty(), "load_image_folder: class directory '", (fs::path(root) / classes[c]).string(),
                 "' has no .png, .jpg, .jpeg or .bmp files");
    std::sort(names.begin(), names.end());
    for (const std::string& n : names)
      files.emplace_back((fs::path(root) / classes[c] / n).string(), static_cast<int64_t>(c));
  }

  const int64_t N = static_cast<int64_t>(files.size());
  Dataset ds;
  ds.num_classes = static_cast<int64_t>(classes.size());
  ds.class_names = classes;
  ds.images = Tensor::empty({N, channels, size, size});
  ds.labels = Tensor::empty({N}, DType::i64);
  float* x = ds.images.data<float>();
  int64_t* y = ds.labels.data<int64_t>();
  const int64_t per_image = channels * size * size;
  for (int64_t i = 0; i < N; ++i) {
    const Tensor img = resize_and_crop(io::load_image(files[i].first, channels), size);
    std::memcpy(x + i * per_image, img.data<float>(), per_image * sizeof(float));
    y[i] = files[i].second;
  }
  return ds;
}

}  // namespace spdlab::data
