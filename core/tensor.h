// Tensor: a shared handle to one record (storage, shape, strides, offset, dtype, device, autograd state).
// Views share storage. There is no separate Variable type; ops live in core/ops.h.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "core/check.h"

namespace spdlab {

enum class DType : uint8_t { f32, f64, i64 };
using Shape = std::vector<int64_t>;

// Where a tensor's memory lives: the CPU, or CUDA device `index` (0 for the first GPU).
// `Device::cpu` and `Device::cuda` (= cuda:0) read as the old enum did; `Device::parse("cuda:1")` takes the
// spelling of the command line.
enum class DeviceType : uint8_t { cpu, cuda };
struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;
  static const Device cpu;
  static const Device cuda;
  static constexpr Device cuda_at(int index) { return Device{DeviceType::cuda, index}; }
  static Device parse(const std::string& text);  // "cpu", "cuda", "cuda:N"; errors name what was expected
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool is_cpu() const { return type == DeviceType::cpu; }
  std::string str() const;  // "cpu", "cuda:0"
  friend bool operator==(const Device&, const Device&) = default;
};
inline constexpr Device Device::cpu{DeviceType::cpu, 0};
inline constexpr Device Device::cuda{DeviceType::cuda, 0};

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);
std::ostream& operator<<(std::ostream& os, DType dt);
std::ostream& operator<<(std::ostream& os, Device d);
std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t numel_of(const Shape& s);

namespace kernels { class Kernels; }

// A block of device memory from its device's kernels (a caching allocator on the CPU and on a GPU).
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device = Device::cpu;
  Storage(size_t nbytes, Device device);
  // Wraps memory someone else owns (a memory-mapped file); `keep` holds it alive.
  Storage(void* data, size_t nbytes, Device device, std::shared_ptr<void> keep);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

 private:
  std::shared_ptr<void> keep_;
  bool owned_ = true;
  kernels::Kernels* owner_ = nullptr;  // who allocated `data` and takes it back
};

namespace autograd { struct Node; }
class Tensor;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape, strides;  // strides in elements
  int64_t offset = 0;    // in elements
  DType dtype = DType::f32;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;           // accumulated gradient of a leaf (or retained)
  std::shared_ptr<autograd::Node> grad_fn;    // the op that produced this tensor; null for leaves
};

class Generator;

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Creation. All take dtype f32 unless told; memory of `empty` is uninitialized.
  static Tensor empty(const Shape& shape, DType dt = DType::f32, Device dev = Device::cpu);
  static Tensor zeros(const Shape& shape, DType dt = DType::f32, Device dev = Device::cpu);
  static Tensor ones(const Shape& shape, DType dt = DType::f32, Device dev = Device::cpu);
  static Tensor full(const Shape& shape, double value, DType dt = DType::f32, Device dev = Device::cpu);
  static Tensor arange(int64_t start, int64_t end, int64_t step = 1, DType dt = DType::i64);
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape);
  static Tensor from_vector(const std::vector<double>& v, const Shape& shape);
  static Tensor from_vector(const std::vector<int64_t>& v, const Shape& shape);
  static Tensor randn(const Shape& shape, Generator& gen, DType dt = DType::f32);
  static Tensor rand(const Shape& shape, Generator& gen, DType dt = DType::f32);  // U[0,1)
  static Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen, DType dt = DType::f32);
  static Tensor empty_like(const Tensor& t);
  static Tensor zeros_like(const Tensor& t);
  // Wraps existing memory (no copy) as a contiguous tensor.
  static Tensor from_storage(std::shared_ptr<Storage> st, const Shape& shape, DType dt, int64_t offset = 0);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl()->shape; }
  const Shape& strides() const { return impl()->strides; }
  int64_t dim() const { return static_cast<int64_t>(impl()->shape.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return numel_of(impl()->shape); }
  int64_t offset() const { return impl()->offset; }
  DType dtype() const { return impl()->dtype; }
  Device device() const { return impl()->storage->device; }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return impl()->storage; }

  // Typed pointer to the first element (offset applied), in the tensor's device memory: host code may
  // dereference it only for CPU tensors. Checks the dtype.
  template <typename T> T* data() const;
  void* raw_data() const;

  // Scalar read of a one-element tensor, any dtype, on any device (a GPU value is copied back).
  double item() const;
  // Element read at a flat index of the logical (row-major) order; for tests and printing. On a GPU this
  // copies the whole tensor to the host first: read many elements from a cpu() copy instead.
  double at(int64_t flat_index) const;
  std::vector<float> to_vector_f32() const;
  std::vector<double> to_vector_f64() const;
  std::vector<int64_t> to_vector_i64() const;

  // Autograd.
  bool requires_grad() const { return impl()->requires_grad; }
  Tensor& requires_grad_(bool on = true);
  Tensor grad() const;  // undefined Tensor when none
  void set_grad(const Tensor& g);
  void zero_grad();     // drops .grad
  bool is_leaf() const { return impl()->grad_fn == nullptr; }
  const std::shared_ptr<autograd::Node>& grad_fn() const { return impl()->grad_fn; }
  // backward() from a scalar; backward(g) from any tensor with a gradient of its shape.
  void backward(bool retain_graph = false) const;
  void backward(const Tensor& grad_output, bool retain_graph = false) const;
  Tensor detach() const;  // shares storage, no history
  Tensor clone() const;   // contiguous copy, differentiable

  // Method forms of the ops of the same names (core/ops.h), for code that reads left to right.
  Tensor matmul(const Tensor& other) const;
  Tensor sum() const;   // of all elements, a scalar
  Tensor mean() const;  // of all elements, a scalar

  // Views (no copy where strides allow); each is differentiable.
  Tensor view(const Shape& shape) const;     // needs compatible strides; errors otherwise
  Tensor reshape(const Shape& shape) const;  // view when possible, else copy
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor select(int64_t dim, int64_t index) const;  // drops dim
  Tensor expand(const Shape& shape) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor contiguous() const;
  Tensor to(DType dt) const;  // differentiable between f32 and f64
  // A copy on `device` (the tensor itself when it is there already); differentiable, so a gradient flows
  // back to the source device. cpu() and cuda() are shorthands.
  Tensor to(Device device) const;
  Tensor cpu() const { return to(Device::cpu); }
  Tensor cuda(int index = 0) const { return to(Device::cuda_at(index)); }

  // In-place helpers, refused on tensors that require grad while grad mode is on.
  Tensor& copy_(const Tensor& src);  // shapes must match (src broadcast allowed); dtype converted
  Tensor& fill_(double v);
  Tensor& zero_() { return fill_(0.0); }

  TensorImpl* impl() const {
    SPDLAB_CHECK(impl_ != nullptr, "Tensor: use of an undefined tensor");
    return impl_.get();
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Counter-based generator (SplitMix64 stream): the same seed gives the same numbers on every machine.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : state_(seed) {}
  uint64_t next_u64();
  double next_double();  // [0, 1), 53 bits
  float next_float();    // [0, 1), 24 bits
  double next_normal();  // Box-Muller, caches the second value
  uint64_t seed_state() const { return state_; }
  void set_state(uint64_t s) { state_ = s; has_spare_ = false; }

 private:
  uint64_t state_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

}  // namespace spdlab
