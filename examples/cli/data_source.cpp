// --data parsing and loading; see data_source.h.
#include "examples/cli/data_source.h"

#include <cctype>
#include <optional>
#include <set>

#include "core/io/image.h"
#include "core/ops.h"
#include "data/image_folder.h"
#include "examples/cli/train.h"

namespace spdlab::cli {

namespace {
// Resizes every image of `d` to size x size (bilinear) and adapts the channel count (gray <-> RGB).
data::Dataset fit_images(data::Dataset d, int64_t channels, int64_t size) {
  if (!d.images.defined()) return d;  // decoded folders are made at the model's size and channels
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
    d = load_image_source(spec, channels, size, "--data");
  } else {
    SPDLAB_FAIL("--data: unknown source '", spec, "'; expected fmnist, fmnist:ROOT, idx:IMAGES,LABELS or folder:DIR");
  }
  SPDLAB_CHECK(d.num_classes <= num_classes, "--data '", spec, "' has ", d.num_classes, " classes but the model has ",
               num_classes);
  return fit_images(std::move(d), channels, size);
}

bool is_image_source(const std::string& spec) {
  return spec.rfind("folder:", 0) == 0 || spec.rfind("cache:", 0) == 0;
}

data::Dataset load_image_source(const std::string& spec, int64_t channels, int64_t size, const std::string& what) {
  const size_t colon = spec.find(':');
  const std::string kind = spec.substr(0, colon), path = colon == std::string::npos ? "" : spec.substr(colon + 1);
  SPDLAB_CHECK(is_image_source(spec) && !path.empty(), what, ": expected folder:DIR or cache:FILE, got '", spec, "'");
  if (kind == "folder") {
    std::optional<Progress> p;  // made once the folder is listed and its size known
    data::Dataset d = data::load_image_folder(path, static_cast<int>(channels), size, [&](int64_t done, int64_t total) {
      if (!p) p.emplace("decode " + path, total);
      p->update(done, -1, done);
    });
    if (p) p->finish();
    return d;
  }
  data::Dataset d = data::load_image_cache(path);
  const Shape s = d.image_shape();
  SPDLAB_CHECK(s[0] == channels && s[1] == size && s[2] == size, what, ": the cache '", path, "' holds ", s[0], "x",
               s[1], "x", s[2], " images but the model takes ", channels, "x", size, "x", size,
               "; make it again with spdlab cache --size ", size, " --channels ", channels);
  return d;
}

std::vector<NamedSource> parse_eval_sets(const std::vector<std::string>& items) {
  std::vector<NamedSource> out;
  std::set<std::string> seen;
  for (const auto& item : items) {
    const size_t eq = item.find('=');
    SPDLAB_CHECK(eq != std::string::npos && eq > 0, "--eval: expected NAME=folder:DIR or NAME=cache:FILE, got '", item,
                 "'");
    NamedSource ns{item.substr(0, eq), item.substr(eq + 1)};
    for (char c : ns.name)
      SPDLAB_CHECK(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-', "--eval: the name '", ns.name,
                   "' may hold only letters, digits, '_' and '-'");
    SPDLAB_CHECK(ns.name != "ood_mean" && ns.name != "deviation", "--eval: '", ns.name,
                 "' names a column of the report; pick another name");
    SPDLAB_CHECK(seen.insert(ns.name).second, "--eval: the name '", ns.name, "' is given twice");
    SPDLAB_CHECK(is_image_source(ns.spec), "--eval ", ns.name, ": expected folder:DIR or cache:FILE, got '", ns.spec,
                 "'");
    out.push_back(ns);
  }
  SPDLAB_CHECK(!out.empty(), "--eval: expected at least one NAME=SRC");
  return out;
}

}  // namespace spdlab::cli
