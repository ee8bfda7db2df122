// Directory scanning, parallel decoding to 8-bit pixels, the decode cache, and class matching; decoding and
// resampling are core/io/image.h's. Sorting by name makes the label of each class and the sample order reproducible.
#include "data/image_folder.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "core/io/image.h"
#include "core/io/json.h"
#include "core/io/safetensors.h"
#include "kernels/threads.h"

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

constexpr const char* kCacheFormat = "spdlab-image-cache";

}  // namespace

FolderListing list_image_folder(const std::string& root) {
  std::error_code ec;
  SPDLAB_CHECK(fs::is_directory(root, ec), "image folder '", root, "' is not a directory");
  FolderListing out;
  for (const fs::directory_entry& e : fs::directory_iterator(root))
    if (e.is_directory()) out.classes.push_back(e.path().filename().string());
  SPDLAB_CHECK(!out.classes.empty(), "image folder '", root,
               "' has no class subdirectories; expected ROOT/<class>/<image>.png|jpg|jpeg|bmp");
  std::sort(out.classes.begin(), out.classes.end());
  for (size_t c = 0; c < out.classes.size(); ++c) {
    std::vector<std::string> names;
    for (const fs::directory_entry& e : fs::directory_iterator(fs::path(root) / out.classes[c]))
      if (e.is_regular_file() && is_image_file(e.path())) names.push_back(e.path().filename().string());
    SPDLAB_CHECK(!names.empty(), "image folder '", root, "': class directory '", out.classes[c],
                 "' has no .png, .jpg, .jpeg or .bmp files");
    std::sort(names.begin(), names.end());
    for (const std::string& n : names) {
      out.files.push_back((fs::path(root) / out.classes[c] / n).string());
      out.labels.push_back(static_cast<int64_t>(c));
    }
  }
  return out;
}

Dataset load_image_folder(const std::string& root, int channels, int64_t size, const DecodeProgress& progress) {
  SPDLAB_CHECK(size > 0 && size <= 8192, "load_image_folder: size must be in [1, 8192]; got ", size);
  SPDLAB_CHECK(channels == 1 || channels == 3, "load_image_folder: channels must be 1 or 3; got ", channels);
  const FolderListing list = list_image_folder(root);
  const int64_t N = static_cast<int64_t>(list.files.size()), per = channels * size * size;
  auto bytes = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(N * per));

  // Workers take images in index order from a shared counter; each writes only its own images' bytes, so the
  // result is the same for any number of workers. The first error (by index) is the one reported.
  std::atomic<int64_t> next{0}, done{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  int64_t error_index = N;
  std::string error;
  auto work = [&] {
    for (int64_t i = next++; i < N && !failed; i = next++) {
      try {
        const Tensor img = resize_and_crop(io::load_image(list.files[i], channels), size);
        const float* src = img.data<float>();
        uint8_t* dst = bytes->data() + i * per;
        for (int64_t k = 0; k < per; ++k)
          dst[k] = static_cast<uint8_t>(std::lround(std::clamp(src[k], 0.0f, 1.0f) * 255.0f));
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lk(mu);
        if (i < error_index) {
          error_index = i;
          error = e.what();
        }
        failed = true;
      }
      ++done;
    }
  };
  const int threads = std::max(1, std::min<int>(get_num_threads(), static_cast<int>(std::min<int64_t>(N, 64))));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work);
  if (progress)
    while (done < N && !failed) {
      progress(done, N);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  for (auto& t : pool) t.join();
  SPDLAB_CHECK(!failed, "image folder '", root, "': ", error);
  if (progress) progress(N, N);

  Dataset ds;
  ds.num_classes = static_cast<int64_t>(list.classes.size());
  ds.class_names = list.classes;
  ds.labels = Tensor::from_vector(list.labels, {N});
  ds.pixels = Pixels{bytes->data(), N, channels, size, size, bytes};
  return ds;
}

void write_image_cache(const std::string& path, const Dataset& d, const std::string& source) {
  SPDLAB_CHECK(!d.images.defined() && d.pixels.data != nullptr, "write_image_cache: '", path,
               "': the dataset holds no 8-bit pixels (only decoded image folders are cached)");
  json::Value::Array classes;
  for (const auto& c : d.class_names) classes.push_back(json::Value::string(c));
  const Tensor labels = d.labels.contiguous();
  io::save_safetensors_raw(
      path,
      {{"labels", "I64", {d.size()}, labels.data<int64_t>()},
       {"pixels", "U8", {d.size(), d.pixels.c, d.pixels.h, d.pixels.w}, d.pixels.data}},
      {{"format", kCacheFormat},
       {"classes", json::dump(json::Value::array(classes))},
       {"source", source},
       {"size", std::to_string(d.pixels.h)},
       {"channels", std::to_string(d.pixels.c)},
       {"resize", "shorter side to size (bilinear, antialiased), center crop size x size, rounded to 8 bits"}});
}

Dataset load_image_cache(const std::string& path) {
  io::SafetensorsFile f(path);
  const auto& meta = f.metadata();
  auto fmt = meta.find("format");
  SPDLAB_CHECK(fmt != meta.end() && fmt->second == kCacheFormat, "'", path,
               "' is not an image cache (its metadata has no format = ", kCacheFormat, "); make one with spdlab cache");
  SPDLAB_CHECK(f.has("labels") && f.has("pixels") && f.names().size() == 2 && meta.count("classes"), "'", path,
               "': an image cache holds exactly 'labels' and 'pixels' and lists its classes");
  const auto& pi = f.info("pixels");
  const auto& li = f.info("labels");
  SPDLAB_CHECK(pi.dtype == "U8" && pi.shape.size() == 4 && (pi.shape[1] == 1 || pi.shape[1] == 3) &&
                   pi.shape[2] == pi.shape[3] && li.dtype == "I64" && li.shape.size() == 1 && li.shape[0] == pi.shape[0],
               "'", path, "': expected pixels U8 [N, 1 or 3, S, S] and labels I64 [N]; got pixels ", pi.dtype, " ",
               shape_str(pi.shape), " and labels ", li.dtype, " ", shape_str(li.shape));
  Dataset d;
  const json::Value classes = json::parse(meta.at("classes"), path + ": metadata 'classes'");
  SPDLAB_CHECK(classes.is_array(), "'", path, "': metadata 'classes' should be a JSON array of names");
  for (const auto& c : classes.as_array()) {
    SPDLAB_CHECK(c.is_string(), "'", path, "': metadata 'classes' should be a JSON array of names");
    d.class_names.push_back(c.as_string());
  }
  d.num_classes = static_cast<int64_t>(d.class_names.size());
  SPDLAB_CHECK(d.num_classes > 0, "'", path, "': the cache lists no classes");
  d.labels = f.load("labels");
  const int64_t* y = d.labels.data<int64_t>();
  for (int64_t i = 0; i < d.labels.numel(); ++i)
    SPDLAB_CHECK(0 <= y[i] && y[i] < d.num_classes, "'", path, "': label ", y[i], " of image ", i,
                 " is outside the ", d.num_classes, " classes");
  auto [data, owner] = f.raw("pixels");
  d.pixels = Pixels{data, pi.shape[0], pi.shape[1], pi.shape[2], pi.shape[3], owner};
  return d;
}

void align_classes(Dataset& d, const std::vector<std::string>& classes, const std::string& what,
                   const std::string& reference_what) {
  SPDLAB_CHECK(!d.class_names.empty(), what, " has no class names to match against ", reference_what);
  const std::set<std::string> mine(d.class_names.begin(), d.class_names.end()), ref(classes.begin(), classes.end());
  if (mine != ref) {
    auto missing = [](const std::set<std::string>& a, const std::set<std::string>& b) {
      std::string s;
      for (const auto& x : b)
        if (!a.count(x)) s += (s.empty() ? "" : ", ") + x;
      return s.empty() ? std::string("none") : s;
    };
    SPDLAB_FAIL("the classes of ", what, " (", mine.size(), ") differ from those of ", reference_what, " (", ref.size(),
                "): missing in ", what, ": ", missing(mine, ref), "; missing in ", reference_what, ": ",
                missing(ref, mine));
  }
  std::vector<int64_t> to(d.class_names.size());
  for (size_t i = 0; i < d.class_names.size(); ++i)
    to[i] = std::find(classes.begin(), classes.end(), d.class_names[i]) - classes.begin();
  Tensor relabeled = Tensor::empty({d.size()}, DType::i64);
  const Tensor src = d.labels.contiguous();
  for (int64_t i = 0; i < d.size(); ++i) relabeled.data<int64_t>()[i] = to[src.data<int64_t>()[i]];
  d.labels = relabeled;
  d.class_names = classes;
  d.num_classes = static_cast<int64_t>(classes.size());
}

}  // namespace spdlab::data
