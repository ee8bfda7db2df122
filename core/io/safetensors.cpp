// Safetensors reader (mmap, validation of the whole header on open, zero-copy F32/F64/I64 when
// aligned, exact F16/BF16 decoding) and atomic writer. Every error names the file, and the tensor
// where there is one. Little-endian hosts only, like the format itself.
#include "core/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <tuple>
#include <type_traits>

#include "core/io/atomic_file.h"
#include "core/io/json.h"

namespace spdlab::io {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; so must the host be");

namespace {

// The same limit as the reference implementation: a longer header is a corrupt or hostile file.
constexpr uint64_t max_header_bytes = 100'000'000;

enum class FileDType : uint8_t { BOOL, U8, I8, U16, I16, U32, I32, U64, I64, F16, BF16, F32, F64 };

struct DTypeSpec {
  const char* name;
  FileDType kind;
  size_t size;
  bool is_float;
  std::optional<DType> native;  // the spdlab dtype with the same bytes, which can load without a copy
};

constexpr DTypeSpec dtype_specs[] = {
    {"BOOL", FileDType::BOOL, 1, false, std::nullopt}, {"U8", FileDType::U8, 1, false, std::nullopt},
    {"I8", FileDType::I8, 1, false, std::nullopt},     {"U16", FileDType::U16, 2, false, std::nullopt},
    {"I16", FileDType::I16, 2, false, std::nullopt},   {"U32", FileDType::U32, 4, false, std::nullopt},
    {"I32", FileDType::I32, 4, false, std::nullopt},   {"U64", FileDType::U64, 8, false, std::nullopt},
    {"I64", FileDType::I64, 8, false, DType::i64},     {"F16", FileDType::F16, 2, true, std::nullopt},
    {"BF16", FileDType::BF16, 2, true, std::nullopt},  {"F32", FileDType::F32, 4, true, DType::f32},
    {"F64", FileDType::F64, 8, true, DType::f64},
};

const DTypeSpec* find_dtype(std::string_view name) {
  for (const DTypeSpec& s : dtype_specs)
    if (name == s.name) return &s;
  return nullptr;
}

std::string supported_dtypes() {
  std::string out;
  for (const DTypeSpec& s : dtype_specs) {
    if (!out.empty()) out += ", ";
    out += s.name;
  }
  return out;
}

// A JSON value as it appears in the file, for messages; containers are only named.
std::string show(const json::Value& v) {
  if (v.is_array() || v.is_object()) return json::kind_name(v.kind());
  return json::dump(v);
}

template <typename T>
T read_le(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// IEEE binary16 -> binary32, exact for every input (subnormals, infinities, NaN payloads, -0).
float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  const uint32_t mant = h & 0x3FF;
  if (exp == 0) {
    // Subnormal or zero: mant * 2^-24 is exact in binary32.
    const float mag = static_cast<float>(mant) * 0x1p-24f;
    return sign ? -mag : mag;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

float bf16_to_f32(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

// Round to nearest even; NaN stays NaN (quieted) rather than rounding into infinity.
uint16_t f32_to_bf16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
}

// Converts n elements of file dtype `kind` at src (any alignment) into dst.
template <typename Out>
void convert(const DTypeSpec& spec, const unsigned char* src, Out* dst, int64_t n, const std::string& what) {
  const size_t sz = spec.size;
  switch (spec.kind) {
    case FileDType::BOOL:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(src[i] != 0);
      return;
    case FileDType::U8:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(src[i]);
      return;
    case FileDType::I8:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(static_cast<int8_t>(src[i]));
      return;
    case FileDType::U16:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(read_le<uint16_t>(src + i * sz));
      return;
    case FileDType::I16:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(read_le<int16_t>(src + i * sz));
      return;
    case FileDType::U32:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(read_le<uint32_t>(src + i * sz));
      return;
    case FileDType::I32:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(read_le<int32_t>(src + i * sz));
      return;
    case FileDType::U64:
      for (int64_t i = 0; i < n; ++i) {
        const uint64_t v = read_le<uint64_t>(src + i * sz);
        if constexpr (std::is_same_v<Out, int64_t>)
          SPDLAB_CHECK(v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), what, ": U64 element ", i,
                       " is ", v, ", which does not fit i64");
        dst[i] = static_cast<Out>(v);
      }
      return;
    case FileDType::I64:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(read_le<int64_t>(src + i * sz));
      return;
    case FileDType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(f16_to_f32(read_le<uint16_t>(src + i * sz)));
      return;
    case FileDType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(bf16_to_f32(read_le<uint16_t>(src + i * sz)));
      return;
    case FileDType::F32:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(read_le<float>(src + i * sz));
      return;
    case FileDType::F64:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(read_le<double>(src + i * sz));
      return;
  }
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

SafetensorsInfo parse_entry(const std::string& where, const std::string& name, const json::Value& entry,
                            uint64_t data_size) {
  const std::string tw = where + ": tensor '" + name + "'";
  SPDLAB_CHECK(entry.is_object(), tw, " is ", json::kind_name(entry.kind()),
               "; expected an object with \"dtype\", \"shape\" and \"data_offsets\"");
  SafetensorsInfo info;

  const json::Value* dt = entry.find("dtype");
  SPDLAB_CHECK(dt != nullptr, tw, " has no \"dtype\"");
  SPDLAB_CHECK(dt->is_string(), tw, ": \"dtype\" is ", show(*dt), "; expected a string such as \"F32\"");
  const DTypeSpec* spec = find_dtype(dt->as_string());
  SPDLAB_CHECK(spec != nullptr, tw, " has unsupported dtype \"", dt->as_string(), "\"; expected one of ",
               supported_dtypes());
  info.dtype = spec->name;

  const json::Value* shape = entry.find("shape");
  SPDLAB_CHECK(shape != nullptr, tw, " has no \"shape\"");
  SPDLAB_CHECK(shape->is_array(), tw, ": \"shape\" is ", show(*shape), "; expected an array of integers");
  uint64_t numel = 1;
  bool overflow = false;
  for (size_t i = 0; i < shape->as_array().size(); ++i) {
    const json::Value& d = shape->as_array()[i];
    SPDLAB_CHECK(d.is_integer() && d.as_int() >= 0, tw, ": shape entry ", i, " is ", show(d),
                 "; expected a non-negative integer");
    info.shape.push_back(d.as_int());
    overflow |= __builtin_mul_overflow(numel, static_cast<uint64_t>(d.as_int()), &numel);
  }
  uint64_t nbytes = 0;
  overflow |= __builtin_mul_overflow(numel, static_cast<uint64_t>(spec->size), &nbytes);
  // A zero dimension makes any product zero, however large the other dimensions are.
  if (std::find(info.shape.begin(), info.shape.end(), 0) != info.shape.end()) overflow = false, nbytes = 0;
  SPDLAB_CHECK(!overflow, tw, ": shape ", shape_str(info.shape), " of ", info.dtype,
               " has more bytes than fit in 64 bits");

  const json::Value* offs = entry.find("data_offsets");
  SPDLAB_CHECK(offs != nullptr, tw, " has no \"data_offsets\"");
  const bool offs_ok = offs->is_array() && offs->as_array().size() == 2 &&
                       offs->as_array()[0].is_integer() && offs->as_array()[0].as_int() >= 0 &&
                       offs->as_array()[1].is_integer() && offs->as_array()[1].as_int() >= 0;
  SPDLAB_CHECK(offs_ok, tw, ": \"data_offsets\" is ", offs->is_array() ? json::dump(*offs) : show(*offs),
               "; expected [begin, end] with non-negative integers");
  info.begin = static_cast<uint64_t>(offs->as_array()[0].as_int());
  info.end = static_cast<uint64_t>(offs->as_array()[1].as_int());
  SPDLAB_CHECK(info.begin <= info.end, tw, ": data_offsets [", info.begin, ", ", info.end, "] have begin > end");
  SPDLAB_CHECK(info.end <= data_size, tw, ": data_offsets [", info.begin, ", ", info.end,
               "] run past the end of the data area (", data_size, " bytes)");
  SPDLAB_CHECK(info.end - info.begin == nbytes, tw, ": shape ", shape_str(info.shape), " of ", info.dtype, " needs ",
               nbytes, " bytes but data_offsets [", info.begin, ", ", info.end, "] span ", info.end - info.begin);
  return info;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const std::string where = "safetensors: '" + path + "'";
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  SPDLAB_CHECK(f.fd >= 0, where, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  SPDLAB_CHECK(::fstat(f.fd, &st) == 0, where, ": cannot stat: ", std::strerror(errno));
  SPDLAB_CHECK(S_ISREG(st.st_mode), where, " is not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  SPDLAB_CHECK(size >= 8, where, " is ", size, " bytes long; expected at least 8 (the header length)");

  // Private and writable: tensors that point into the mapping may be written in place (copy-on-write)
  // without a fault and without touching the file.
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, f.fd, 0);
  SPDLAB_CHECK(p != MAP_FAILED, where, ": cannot mmap ", size, " bytes: ", std::strerror(errno));
  mapping_ = std::shared_ptr<void>(p, [size](void* q) { ::munmap(q, size); });
  const auto* base = static_cast<const unsigned char*>(p);

  const uint64_t n = read_le<uint64_t>(base);
  SPDLAB_CHECK(n <= max_header_bytes, where, ": header length ", n, " exceeds the limit of ", max_header_bytes,
               " bytes");
  SPDLAB_CHECK(n <= size - 8, where, ": header length ", n, " is larger than the ", size - 8,
               " bytes that follow the length field");
  const std::string_view text(reinterpret_cast<const char*>(base + 8), n);
  const json::Value header = json::parse(text, where + ": header");
  SPDLAB_CHECK(header.is_object(), where, ": header is ", json::kind_name(header.kind()),
               "; expected a JSON object");
  data_ = base + 8 + n;
  data_size_ = size - 8 - n;

  for (const auto& [name, entry] : header.as_object()) {
    if (name == "__metadata__") {
      SPDLAB_CHECK(entry.is_object(), where, ": \"__metadata__\" is ", json::kind_name(entry.kind()),
                   "; expected an object of strings");
      for (const auto& [k, v] : entry.as_object()) {
        SPDLAB_CHECK(v.is_string(), where, ": \"__metadata__\" entry '", k, "' is ", json::kind_name(v.kind()),
                     "; expected a string");
        metadata_.emplace(k, v.as_string());
      }
      continue;
    }
    entries_.emplace(name, parse_entry(where, name, entry, data_size_));
  }

  // The spec requires the tensors to tile the data area: no overlaps (aliasing) and no gaps
  // (bytes that no tensor accounts for could hide anything).
  std::vector<std::pair<const std::string*, const SafetensorsInfo*>> order;
  for (const auto& [name, info] : entries_) order.emplace_back(&name, &info);
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return std::tie(a.second->begin, a.second->end) < std::tie(b.second->begin, b.second->end);
  });
  uint64_t cursor = 0;
  const std::string* prev = nullptr;
  for (const auto& [name, info] : order) {
    SPDLAB_CHECK(info->begin >= cursor, where, ": tensors '", *prev, "' and '", *name,
                 "' overlap in the data area (bytes [", info->begin, ", ", cursor, "))");
    SPDLAB_CHECK(info->begin == cursor, where, ": bytes [", cursor, ", ", info->begin,
                 ") of the data area belong to no tensor (a gap before '", *name,
                 "'); the tensors must be contiguous");
    cursor = info->end;
    prev = name;
  }
  SPDLAB_CHECK(cursor == data_size_, where, ": the data area is ", data_size_, " bytes but the tensors end at byte ",
               cursor, "; the tensors must cover it exactly");
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

const SafetensorsInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = entries_.find(name);
  SPDLAB_CHECK(it != entries_.end(), "safetensors: '", path_, "': no tensor named '", name, "' (the file has ",
               entries_.size(), " tensors)");
  return it->second;
}

std::pair<const unsigned char*, std::shared_ptr<void>> SafetensorsFile::raw(const std::string& name) const {
  return {data_ + info(name).begin, mapping_};
}

Tensor SafetensorsFile::load(const std::string& name) const {
  return load(name, find_dtype(info(name).dtype)->is_float ? DType::f32 : DType::i64);
}

Tensor SafetensorsFile::load(const std::string& name, DType want) const {
  const SafetensorsInfo& e = info(name);
  const DTypeSpec& spec = *find_dtype(e.dtype);
  const std::string what = "safetensors: '" + path_ + "': tensor '" + name + "'";
  SPDLAB_CHECK(!(spec.is_float && want == DType::i64), what, " is ", e.dtype,
               "; floating-point data does not load as i64");
  const int64_t n = numel_of(e.shape);
  if (n == 0) return Tensor::empty(e.shape, want);
  const unsigned char* src = data_ + e.begin;
  if (spec.native == want && reinterpret_cast<uintptr_t>(src) % spec.size == 0) {
    auto st = std::make_shared<Storage>(const_cast<unsigned char*>(src), e.end - e.begin, Device::cpu, mapping_);
    return Tensor::from_storage(st, e.shape, want);
  }
  Tensor out = Tensor::empty(e.shape, want);
  switch (want) {
    case DType::f32: convert(spec, src, out.data<float>(), n, what); break;
    case DType::f64: convert(spec, src, out.data<double>(), n, what); break;
    case DType::i64: convert(spec, src, out.data<int64_t>(), n, what); break;
  }
  return out;
}

Tensor SafetensorsFile::load_exact(const std::string& name) const {
  const std::string& dt = info(name).dtype;
  return load(name, dt == "F64" ? DType::f64 : (dt == "F32" || dt == "F16" || dt == "BF16") ? DType::f32 : DType::i64);
}

std::map<std::string, Tensor> SafetensorsFile::load_all() const {
  std::map<std::string, Tensor> out;
  for (const auto& kv : entries_) out.emplace(kv.first, load(kv.first));
  return out;
}

std::map<std::string, Tensor> load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  SafetensorsFile file(path);
  if (metadata != nullptr) *metadata = file.metadata();
  return file.load_all();
}

namespace {

// What the header says of one tensor.
struct HeaderEntry {
  std::string name;
  const char* dtype;
  Shape shape;
  uint64_t nbytes;
};

// Checks the names, then returns the length prefix and the JSON header (metadata first, then the tensors in order,
// tiling the data area); the caller writes the data after it in the same order.
std::string header_bytes(const std::string& where, const std::vector<HeaderEntry>& entries,
                         const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  for (const HeaderEntry& e : entries) {
    SPDLAB_CHECK(e.name != "__metadata__", where, ": \"__metadata__\" is reserved and cannot name a tensor");
    SPDLAB_CHECK(seen.insert(e.name).second, where, ": duplicate tensor name '", e.name, "'");
  }
  json::Value::Object header;
  if (!metadata.empty()) {
    json::Value::Object meta;
    for (const auto& [k, v] : metadata) meta.emplace_back(k, json::Value::string(v));
    header.emplace_back("__metadata__", json::Value::object(std::move(meta)));
  }
  uint64_t offset = 0;
  for (const HeaderEntry& e : entries) {
    json::Value::Array shape;
    for (int64_t d : e.shape) shape.push_back(json::Value::integer(d));
    json::Value::Object entry;
    entry.emplace_back("dtype", json::Value::string(e.dtype));
    entry.emplace_back("shape", json::Value::array(std::move(shape)));
    entry.emplace_back("data_offsets", json::Value::array({json::Value::integer(static_cast<int64_t>(offset)),
                                                           json::Value::integer(static_cast<int64_t>(offset + e.nbytes))}));
    header.emplace_back(e.name, json::Value::object(std::move(entry)));
    offset += e.nbytes;
  }
  std::string text = json::dump(json::Value::object(std::move(header)));
  // Padding to 8 keeps the data area 8-aligned in the file, so aligned tensors load without a copy.
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_len = text.size();
  return std::string(reinterpret_cast<const char*>(&header_len), sizeof header_len) + text;
}

}  // namespace

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata, bool bf16) {
  const std::string where = "save_safetensors: cannot write '" + path + "'";
  std::vector<HeaderEntry> entries;
  for (const auto& [name, t] : tensors) {
    SPDLAB_CHECK(t.defined(), where, ": tensor '", name, "' is undefined");
    SPDLAB_CHECK(t.device() == Device::cpu, where, ": tensor '", name, "' is on ", t.device(),
                 "; move it to the CPU before saving");
    const bool as_bf16 = bf16 && t.dtype() == DType::f32;
    const char* dt = as_bf16 ? "BF16" : t.dtype() == DType::f32 ? "F32" : t.dtype() == DType::f64 ? "F64" : "I64";
    entries.push_back({name, dt, t.shape(), static_cast<uint64_t>(t.numel()) * (as_bf16 ? 2 : dtype_size(t.dtype()))});
  }

  const std::string header = header_bytes(where, entries, metadata);  // every check before the file is touched
  AtomicFile f(path);
  f.write(header);
  for (const auto& [name, t] : tensors) {
    if (t.numel() == 0) continue;
    const Tensor c = t.detach().cpu().contiguous();  // a GPU tensor is written from a host copy
    if (bf16 && c.dtype() == DType::f32) {
      // Converted in chunks so saving never holds a second full copy of a large tensor.
      const float* src = c.data<float>();
      const int64_t n = c.numel();
      std::vector<uint16_t> buf(static_cast<size_t>(std::min<int64_t>(n, 1 << 16)));
      for (int64_t i = 0; i < n; i += static_cast<int64_t>(buf.size())) {
        const int64_t m = std::min<int64_t>(n - i, static_cast<int64_t>(buf.size()));
        for (int64_t j = 0; j < m; ++j) buf[j] = f32_to_bf16(src[i + j]);
        f.write(buf.data(), static_cast<size_t>(m) * 2);
      }
    } else {
      f.write(c.raw_data(), static_cast<size_t>(c.numel()) * dtype_size(c.dtype()));
    }
  }
  f.commit();
}

void save_safetensors_raw(const std::string& path, const std::vector<RawTensor>& tensors,
                          const std::map<std::string, std::string>& metadata) {
  const std::string where = "save_safetensors: cannot write '" + path + "'";
  std::vector<HeaderEntry> entries;
  for (const RawTensor& t : tensors) {
    const DTypeSpec* spec = find_dtype(t.dtype);
    SPDLAB_CHECK(spec != nullptr, where, ": tensor '", t.name, "' has unsupported dtype \"", t.dtype,
                 "\"; expected one of ", supported_dtypes());
    SPDLAB_CHECK(t.data != nullptr || numel_of(t.shape) == 0, where, ": tensor '", t.name, "' has no data");
    entries.push_back({t.name, spec->name, t.shape, static_cast<uint64_t>(numel_of(t.shape)) * spec->size});
  }
  const std::string header = header_bytes(where, entries, metadata);
  AtomicFile f(path);
  f.write(header);
  for (size_t i = 0; i < tensors.size(); ++i)
    if (entries[i].nbytes > 0) f.write(tensors[i].data, static_cast<size_t>(entries[i].nbytes));
  f.commit();
}

}  // namespace spdlab::io
