// IDX reading: whole file into memory, gunzip with zlib's inflate when the gzip magic is present,
// then a strict parse (the dims must account for every byte). Not a streaming reader.
#include "data/idx.h"

#include <cstring>

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>

#include "core/ops.h"

namespace spdlab::data {
namespace {

// Anything larger than this is a corrupt header (or a decompression bomb), not a dataset.
constexpr uint64_t kMaxPayloadBytes = uint64_t{1} << 32;

std::string hex_bytes(const uint8_t* p, size_t n) {
  std::string s;
  char buf[4];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%s%02x", i ? " " : "", p[i]);
    s += buf;
  }
  return s;
}

const char* idx_type_name(uint8_t t) {
  switch (t) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "unknown";
  }
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::error_code ec;
  SPDLAB_CHECK(std::filesystem::is_regular_file(path, ec), "read_idx: cannot open '", path,
               "': no such file");
  std::ifstream f(path, std::ios::binary);
  SPDLAB_CHECK(f.good(), "read_idx: cannot open '", path, "' for reading");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  SPDLAB_CHECK(!f.bad(), "read_idx: read error on '", path, "'");
  return bytes;
}

// Inflates every gzip member of `in` (gzip allows several, concatenated). Truncation, a bad CRC and
// bytes after the last member are all errors: a damaged download must not parse as a smaller dataset.
std::vector<uint8_t> gunzip(const std::vector<uint8_t>& in, const std::string& path) {
  SPDLAB_CHECK(in.size() < (uint64_t{1} << 32), "read_idx: '", path, "' is too large to inflate in one pass");
  z_stream zs{};
  SPDLAB_CHECK(inflateInit2(&zs, 15 + 16) == Z_OK, "read_idx: zlib inflateInit2 failed for '", path, "'");
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  std::vector<uint8_t> out;
  // The gzip trailer holds the last member's size mod 2^32: a good first guess for one member.
  uint64_t guess = 0;
  if (in.size() >= 4) {
    const uint8_t* t = in.data() + in.size() - 4;
    guess = uint64_t{t[0]} | uint64_t{t[1]} << 8 | uint64_t{t[2]} << 16 | uint64_t{t[3]} << 24;
  }
  // Deflate cannot expand more than 1032:1, so a larger claim is a damaged trailer, not a size to allocate.
  if (guess > 1032 * static_cast<uint64_t>(in.size())) guess = 4 * in.size();
  out.resize(std::max<uint64_t>(std::min(guess, kMaxPayloadBytes) + 1, 1 << 16));
  size_t produced = 0;
  std::string failure;
  for (;;) {
    if (produced == out.size()) {
      if (out.size() > kMaxPayloadBytes) {
        failure = "inflates to more than " + std::to_string(kMaxPayloadBytes) + " bytes";
        break;
      }
      out.resize(out.size() * 2);
    }
    const size_t room = std::min<size_t>(out.size() - produced, 1u << 30);
    zs.next_out = out.data() + produced;
    zs.avail_out = static_cast<uInt>(room);
    const int ret = inflate(&zs, Z_NO_FLUSH);
    produced += room - zs.avail_out;
    if (ret == Z_STREAM_END) {
      if (zs.avail_in == 0) break;
      if (zs.avail_in >= 2 && zs.next_in[0] == 0x1f && zs.next_in[1] == 0x8b) {
        inflateReset(&zs);
        continue;
      }
      failure = std::to_string(zs.avail_in) + " bytes of non-gzip data follow the compressed stream";
      break;
    }
    if (ret == Z_BUF_ERROR && zs.avail_in == 0) {
      failure = "the compressed stream ends early (truncated file)";
      break;
    }
    if (ret != Z_OK && ret != Z_BUF_ERROR) {
      failure = std::string("zlib: ") + (zs.msg ? zs.msg : "error " + std::to_string(ret));
      break;
    }
  }
  inflateEnd(&zs);
  SPDLAB_CHECK(failure.empty(), "read_idx: '", path, "' is not a valid gzip file: ", failure);
  out.resize(produced);
  return out;
}

}  // namespace

IdxArray parse_idx(const std::vector<uint8_t>& bytes, const std::string& name) {
  SPDLAB_CHECK(bytes.size() >= 4, "read_idx: '", name, "' has ", bytes.size(),
               " bytes; expected an IDX file starting with the 4-byte magic 00 00 08 <ndims>");
  const uint8_t* b = bytes.data();
  SPDLAB_CHECK(b[0] == 0 && b[1] == 0, "read_idx: '", name,
               "' is not an IDX file: expected magic 00 00 <type> <ndims>, got ", hex_bytes(b, 4));
  SPDLAB_CHECK(b[2] == 0x08, "read_idx: '", name, "' holds element type 0x", hex_bytes(b + 2, 1), " (",
               idx_type_name(b[2]), "); only 0x08 (unsigned byte) is supported");
  const size_t ndims = b[3];
  SPDLAB_CHECK(ndims >= 1, "read_idx: '", name, "' declares 0 dimensions; expected at least 1");
  const size_t header = 4 + 4 * ndims;
  SPDLAB_CHECK(bytes.size() >= header, "read_idx: '", name, "' is truncated: ", ndims,
               " dimensions need a ", header, "-byte header, the file has ", bytes.size(), " bytes");
  IdxArray out;
  uint64_t count = 1;
  for (size_t i = 0; i < ndims; ++i) {
    const uint8_t* p = b + 4 + 4 * i;
    const uint64_t d = uint64_t{p[0]} << 24 | uint64_t{p[1]} << 16 | uint64_t{p[2]} << 8 | p[3];
    out.dims.push_back(static_cast<int64_t>(d));
    // d < 2^32 and count <= 2^32 before the multiply, so the product cannot wrap.
    count *= d;
    SPDLAB_CHECK(count <= kMaxPayloadBytes, "read_idx: '", name, "' declares dims ", shape_str(out.dims),
                 "..., more than ", kMaxPayloadBytes, " elements; the header is corrupt");
  }
  const uint64_t payload = bytes.size() - header;
  SPDLAB_CHECK(payload >= count, "read_idx: '", name, "' is truncated: dims ", shape_str(out.dims), " need ",
               count, " bytes of data, the file has ", payload);
  SPDLAB_CHECK(payload == count, "read_idx: '", name, "' has ", payload - count,
               " bytes of trailing data after the ", count, " bytes that dims ", shape_str(out.dims),
               " describe");
  out.data.assign(bytes.begin() + header, bytes.end());
  return out;
}

IdxArray read_idx(const std::string& path) {
  std::vector<uint8_t> bytes = read_file(path);
  if (bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b) bytes = gunzip(bytes, path);
  return parse_idx(bytes, path);
}

Dataset load_idx_pair(const std::string& images_path, const std::string& labels_path, int64_t num_classes) {
  SPDLAB_CHECK(num_classes > 0, "load_idx_pair: num_classes must be positive; got ", num_classes);
  const IdxArray img = read_idx(images_path);
  const IdxArray lab = read_idx(labels_path);
  SPDLAB_CHECK(img.dims.size() == 3, "load_idx_pair: images '", images_path, "' should be [N, H, W]; got dims ",
               shape_str(img.dims));
  SPDLAB_CHECK(lab.dims.size() == 1, "load_idx_pair: labels '", labels_path, "' should be [N]; got dims ",
               shape_str(lab.dims));
  const int64_t n = img.dims[0], h = img.dims[1], w = img.dims[2];
  SPDLAB_CHECK(lab.dims[0] == n, "load_idx_pair: '", images_path, "' holds ", n, " images but '", labels_path,
               "' holds ", lab.dims[0], " labels");
  Dataset ds;
  ds.num_classes = num_classes;
  ds.labels = Tensor::empty({n}, DType::i64);
  int64_t* y = ds.labels.data<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    SPDLAB_CHECK(lab.data[i] < num_classes, "load_idx_pair: label ", int{lab.data[i]}, " at index ", i, " of '",
                 labels_path, "' is not below num_classes ", num_classes);
    y[i] = lab.data[i];
  }
  ds.images = Tensor::empty({n, 1, h, w});
  float* x = ds.images.data<float>();
  const int64_t total = n * h * w;
  // Division, not multiplication by 1/255, so pixels equal torchvision's ToTensor bit for bit.
  for (int64_t i = 0; i < total; ++i) x[i] = static_cast<float>(img.data[i]) / 255.0f;
  return ds;
}

Dataset load_fashion_mnist(const std::string& root, bool train) {
  const std::string prefix = train ? "train" : "t10k";
  auto locate = [&](const std::string& stem) {
    const std::string base = root + "/" + prefix + "-" + stem;
    std::error_code ec;
    for (const std::string& p : {base + ".gz", base})
      if (std::filesystem::is_regular_file(p, ec)) return p;
    SPDLAB_FAIL("load_fashion_mnist: no Fashion-MNIST file ", base, "[.gz]; install Debian's dataset-fashion-mnist ",
                "(apt-get install dataset-fashion-mnist) or pass --data <dir> with the IDX files");
  };
  const std::string images = locate("images-idx3-ubyte"), labels = locate("labels-idx1-ubyte");
  Dataset ds = load_idx_pair(images, labels, 10);
  ds.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return ds;
}

Shape Dataset::image_shape() const {
  if (images.defined()) return {images.size(1), images.size(2), images.size(3)};
  return {pixels.c, pixels.h, pixels.w};
}

void Dataset::read_image(int64_t i, float* out) const {
  SPDLAB_CHECK(0 <= i && i < size(), "Dataset::read_image: index ", i, " is outside ", size(), " images");
  if (images.defined()) {
    const Shape s = image_shape();
    const int64_t per = s[0] * s[1] * s[2];
    const Tensor row = images.select(0, i).contiguous();
    std::memcpy(out, row.data<float>(), per * sizeof(float));
    return;
  }
  const uint8_t* src = pixels.data + i * pixels.per_image();
  for (int64_t k = 0; k < pixels.per_image(); ++k) out[k] = static_cast<float>(src[k]) / 255.0f;  // as io::load_image
}

Dataset subset(const Dataset& d, int64_t begin, int64_t end) {
  SPDLAB_CHECK(0 <= begin && begin <= end && end <= d.size(), "subset: range [", begin, ", ", end,
               ") is not inside a dataset of ", d.size(), " samples");
  Dataset out{d.images.defined() ? d.images.narrow(0, begin, end - begin) : Tensor(),
              d.labels.narrow(0, begin, end - begin), d.num_classes, d.class_names, d.pixels};
  if (!d.images.defined()) {
    out.pixels.data += begin * d.pixels.per_image();
    out.pixels.n = end - begin;
  }
  return out;
}

Dataset select(const Dataset& d, const std::vector<int64_t>& indices) {
  const int64_t n = d.size();
  for (int64_t i : indices)
    SPDLAB_CHECK(0 <= i && i < n, "select: index ", i, " is outside a dataset of ", n, " samples");
  const Tensor idx = Tensor::from_vector(indices, {static_cast<int64_t>(indices.size())});
  Dataset out;
  const std::vector<int64_t> labels = d.labels.to_vector_i64();
  std::vector<int64_t> picked;
  picked.reserve(indices.size());
  for (int64_t i : indices) picked.push_back(labels[i]);
  out.labels = Tensor::from_vector(picked, {static_cast<int64_t>(indices.size())});
  out.num_classes = d.num_classes;
  out.class_names = d.class_names;
  if (d.images.defined()) {
    out.images = index_select(d.images, 0, idx);
    return out;
  }
  const int64_t per = d.pixels.per_image();
  auto bytes = std::make_shared<std::vector<uint8_t>>(indices.size() * per);
  for (size_t k = 0; k < indices.size(); ++k)
    std::memcpy(bytes->data() + k * per, d.pixels.data + indices[k] * per, per);
  out.pixels = d.pixels;
  out.pixels.data = bytes->data();
  out.pixels.n = static_cast<int64_t>(indices.size());
  out.pixels.owner = bytes;
  return out;
}

std::pair<Dataset, Dataset> split_holdout(const Dataset& d, int64_t n, uint64_t seed) {
  SPDLAB_CHECK(0 < n && n < d.size(), "split_holdout: cannot hold out ", n, " of ", d.size(),
               " samples; expected at least 1 and fewer than all");
  std::vector<int64_t> perm(d.size());
  for (int64_t i = 0; i < d.size(); ++i) perm[i] = i;
  Generator gen(seed);  // Fisher-Yates with spdlab's generator: the same split on every platform
  for (int64_t i = d.size() - 1; i > 0; --i) std::swap(perm[i], perm[gen.next_u64() % static_cast<uint64_t>(i + 1)]);
  std::vector<int64_t> val(perm.end() - n, perm.end()), train(perm.begin(), perm.end() - n);
  std::sort(val.begin(), val.end());
  std::sort(train.begin(), train.end());
  return {select(d, train), select(d, val)};
}

}  // namespace spdlab::data
