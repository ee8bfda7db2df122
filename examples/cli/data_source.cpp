// --data parsing and loading; see data_source.h.
#include "examples/cli/data_source.h"

#include "core/io/image.h"
#include "core/ops.h"
#include "data/image_folder.h"

namespace spdlab::cli {

namespace {
// Resizes every image of `d` to size x size (bilinear) and adapts the channel count (gray <-> RGB).
data::Dataset fit_images(data::Dataset d, int64_t channels, int64_t size) {
  int64_t N = d.size(), C = d.images.size(1), H = d.images.size(2), W = d.images.size(3);
  if (C == channels && H == size && W == size) return d;
  SPDLAB_CHECK(C == channels || C == 1 || channels == 1, "data: cannot turn ", C, "-channel images into ", channels,
               " channels");
  Tensor out = Tensor::empty({N, channels, size, size});
  for (int64_t i = 0; i < N; ++i) {
    Tensor img = d.images.select(0, i);
    if (H != size || W != size) img = io::resize(img, size, size, io::Interp::bilinear);
    if (C != channels) img = channels == 1 ? mean(img, {0}, true) : img.expand({channels, size, size});
    out.select(0, i).copy_(img);
  }
  d.images = out;
  return d;
}
}  // namespace

data::Dataset load_data(const std::string& spec, bool train, int64_t channels, int64_t size, int64_t num_classes) {
  std::string kind = spec.substr(0, spec.find(':'));
  std::string rest = spec.find(':') == std::string::npos ? "" : spec.substr(spec.find(':') + 1);
  data::Dataset d;
  if (kind == "fmnist") {
    d = data::load_fashion_mnist(rest.empty() ? data::kFashionMnistRoot : rest, train);
  } else if (kind == "idx") {
    size_t comma = rest.find(',');
    SPDLAB_CHECK(comma != std::string::npos && comma > 0 && comma + 1 < rest.size(),
                 "--data idx: expected idx:IMAGES,LABELS (two IDX files), got '", spec, "'");
    d = data::load_idx_pair(rest.substr(0, comma), rest.substr(comma + 1), num_classes);
  } else if (kind == "folder") {
    SPDLAB_CHECK(!rest.empty(), "--data folder: expected folder:DIR, got '", spec, "'");
    d = data::load_image_folder(rest, static_cast<int>(channels), size);
  } else {
    SPDLAB_FAIL("--data: unknown source '", spec, "'; expected fmnist, fmnist:ROOT, idx:IMAGES,LABELS or folder:DIR");
  }
  SPDLAB_CHECK(d.num_classes <= num_classes, "--data '", spec, "' has ", d.num_classes, " classes but the model has ",
               num_classes);
  return fit_images(std::move(d), channels, size);
}

}  // namespace spdlab::cli
