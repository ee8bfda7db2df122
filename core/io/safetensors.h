// Safetensors files (the format of HF/timm checkpoints): a memory-mapped, fully validated reader and
// an atomic writer. Layout: u64 little-endian header length N, N bytes of JSON, then the data area.
// Not a general archive: CPU tensors only, and the F8 and complex dtypes of the spec are refused.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace spdlab::io {

struct SafetensorsInfo {
  std::string dtype;  // as written in the file: "F32", "BF16", "I64", ...
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range within the data area
};

// Opening validates the whole header (types, shapes, sizes, and that the tensors tile the data area
// exactly), so a file that opens loads every tensor without further surprises.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::vector<std::string> names() const;  // sorted
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  const SafetensorsInfo& info(const std::string& name) const;

  // F32/F64/F16/BF16 load as f32; BOOL and the integer dtypes load as i64. F32 data aligned to 4 bytes
  // is not copied: the tensor points into the mapping, which lives as long as any such tensor does.
  // Writing into such a tensor is safe: the mapping is private (copy-on-write), the file never changes.
  Tensor load(const std::string& name) const;
  // `want` f64 keeps F64 exact; floats never load as i64 (that would truncate), integers load as any dtype.
  Tensor load(const std::string& name, DType want) const;
  // F64 as f64, the other floats as f32, integers as i64: no value changes (for states saved to be resumed).
  Tensor load_exact(const std::string& name) const;
  std::map<std::string, Tensor> load_all() const;
  // The bytes of a tensor as stored (little-endian, row-major), in the mapping, and the mapping's owner: data
  // that no DType holds (the U8 pixels of an image cache) is read through this without a copy.
  std::pair<const unsigned char*, std::shared_ptr<void>> raw(const std::string& name) const;

 private:
  std::string path_;
  std::shared_ptr<void> mapping_;  // munmaps when the last user (this file or a zero-copy tensor) goes
  const unsigned char* data_ = nullptr;  // start of the data area
  uint64_t data_size_ = 0;
  std::map<std::string, SafetensorsInfo> entries_;
  std::map<std::string, std::string> metadata_;
};

std::map<std::string, Tensor> load_safetensors(const std::string& path,
                                               std::map<std::string, std::string>* metadata = nullptr);

// Writes F32 (or BF16, rounded to nearest even, when bf16), F64 and I64 in the given order, each in
// logical row-major order whatever its strides. Atomic: writes "<path>.tmp.<pid>", fsyncs, renames.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {}, bool bf16 = false);

// Bytes as they are to be stored, for data no DType holds (the U8 pixels of an image cache): `dtype` is the file's
// name for it ("U8", "I64", ...) and `data` holds product(shape) elements of it in little-endian order.
struct RawTensor {
  std::string name, dtype;
  Shape shape;
  const void* data;
};
// The same file layout, checks and atomic write as save_safetensors, from raw bytes.
void save_safetensors_raw(const std::string& path, const std::vector<RawTensor>& tensors,
                          const std::map<std::string, std::string>& metadata = {});

}  // namespace spdlab::io
