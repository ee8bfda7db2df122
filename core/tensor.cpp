// Tensor basics: creation, element access, views and their backward, copies and dtype conversion.
// Arithmetic lives in core/ops/; the autograd engine in core/autograd.cpp.
#include "core/tensor.h"

#include <cmath>
#include <cstring>
#include <numeric>

#include "core/autograd.h"
#include "core/ops.h"
#include "kernels/kernels.h"

namespace spdlab {

size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i64: return 8;
  }
  return 0;
}
const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::i64: return "i64";
  }
  return "?";
}
std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
Device Device::parse(const std::string& text) {
  if (text == "cpu") return Device::cpu;
  if (text == "cuda") return Device::cuda;
  if (text.rfind("cuda:", 0) == 0 && text.size() > 5 && text.size() <= 8 &&
      text.find_first_not_of("0123456789", 5) == std::string::npos)
    return Device::cuda_at(std::stoi(text.substr(5)));
  SPDLAB_FAIL("device: expected cpu, cuda or cuda:N (N a GPU index), got '", text, "'");
}
std::ostream& operator<<(std::ostream& os, DType dt) { return os << dtype_name(dt); }
std::ostream& operator<<(std::ostream& os, Device d) { return os << d.str(); }

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

namespace {

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t s = 1;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) {
    st[i] = s;
    s *= shape[i];
  }
  return st;
}

int64_t wrap_dim(int64_t d, int64_t ndim, const char* op) {
  int64_t w = d < 0 ? d + ndim : d;
  SPDLAB_CHECK(w >= 0 && w < ndim, op, ": dim ", d, " is out of range for a tensor with ", ndim, " dims");
  return w;
}

Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(impl);
}

void check_shape(const Shape& shape, const char* op) {
  for (int64_t d : shape) SPDLAB_CHECK(d >= 0, op, ": negative dimension in shape ", shape_str(shape));
}

}  // namespace

// ---- creation ----

Tensor Tensor::empty(const Shape& shape, DType dt, Device dev) {
  check_shape(shape, "Tensor::empty");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(numel_of(shape)) * dtype_size(dt), dev);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dt;
  return Tensor(impl);
}

Tensor Tensor::full(const Shape& shape, double value, DType dt, Device dev) {
  Tensor t = empty(shape, dt, dev);
  kernels::get(dev).fill(dt, t.raw_data(), t.numel(), value);
  return t;
}
Tensor Tensor::zeros(const Shape& shape, DType dt, Device dev) { return full(shape, 0.0, dt, dev); }
Tensor Tensor::ones(const Shape& shape, DType dt, Device dev) { return full(shape, 1.0, dt, dev); }

Tensor Tensor::arange(int64_t start, int64_t end, int64_t step, DType dt) {
  SPDLAB_CHECK(step != 0, "arange: step must be nonzero");
  int64_t n = std::max<int64_t>(0, (end - start + step - (step > 0 ? 1 : -1)) / step);
  Tensor t = empty({n}, dt);
  for (int64_t i = 0; i < n; ++i) {
    double v = static_cast<double>(start + i * step);
    if (dt == DType::f32) t.data<float>()[i] = static_cast<float>(v);
    else if (dt == DType::f64) t.data<double>()[i] = v;
    else t.data<int64_t>()[i] = start + i * step;
  }
  return t;
}

template <typename T>
static Tensor from_vec(const std::vector<T>& v, const Shape& shape, DType dt) {
  SPDLAB_CHECK(numel_of(shape) == static_cast<int64_t>(v.size()), "Tensor::from_vector: ", v.size(),
               " values do not fill shape ", shape_str(shape));
  Tensor t = Tensor::empty(shape, dt);
  if (!v.empty()) std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(T));
  return t;
}
Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& s) { return from_vec(v, s, DType::f32); }
Tensor Tensor::from_vector(const std::vector<double>& v, const Shape& s) { return from_vec(v, s, DType::f64); }
Tensor Tensor::from_vector(const std::vector<int64_t>& v, const Shape& s) { return from_vec(v, s, DType::i64); }

Tensor Tensor::randn(const Shape& shape, Generator& gen, DType dt) {
  Tensor t = empty(shape, dt);
  int64_t n = t.numel();
  SPDLAB_CHECK(dt != DType::i64, "randn: expected a floating dtype, got i64");
  for (int64_t i = 0; i < n; ++i) {
    double v = gen.next_normal();
    if (dt == DType::f32) t.data<float>()[i] = static_cast<float>(v);
    else t.data<double>()[i] = v;
  }
  return t;
}

Tensor Tensor::uniform(const Shape& shape, double lo, double hi, Generator& gen, DType dt) {
  SPDLAB_CHECK(dt != DType::i64, "uniform: expected a floating dtype, got i64");
  Tensor t = empty(shape, dt);
  int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    double v = lo + (hi - lo) * gen.next_double();
    if (dt == DType::f32) t.data<float>()[i] = static_cast<float>(v);
    else t.data<double>()[i] = v;
  }
  return t;
}
Tensor Tensor::rand(const Shape& shape, Generator& gen, DType dt) { return uniform(shape, 0.0, 1.0, gen, dt); }

Tensor Tensor::empty_like(const Tensor& t) { return empty(t.shape(), t.dtype(), t.device()); }
Tensor Tensor::zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }

Tensor Tensor::from_storage(std::shared_ptr<Storage> st, const Shape& shape, DType dt, int64_t offset) {
  check_shape(shape, "Tensor::from_storage");
  size_t need = static_cast<size_t>(offset + numel_of(shape)) * dtype_size(dt);
  SPDLAB_CHECK(need <= st->nbytes, "Tensor::from_storage: shape ", shape_str(shape), " of ", dt, " at offset ", offset,
               " needs ", need, " bytes but the storage holds ", st->nbytes);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(st);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->offset = offset;
  impl->dtype = dt;
  return Tensor(impl);
}

// ---- access ----

int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim(), "Tensor::size")]; }

bool Tensor::is_contiguous() const {
  int64_t expect = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape()[i] == 1) continue;
    if (strides()[i] != expect) return false;
    expect *= shape()[i];
  }
  return true;
}

template <typename T>
static DType dtype_of();
template <> DType dtype_of<float>() { return DType::f32; }
template <> DType dtype_of<double>() { return DType::f64; }
template <> DType dtype_of<int64_t>() { return DType::i64; }

template <typename T>
T* Tensor::data() const {
  SPDLAB_CHECK(dtype() == dtype_of<T>(), "Tensor::data: the tensor is ", dtype(), ", asked for ", dtype_of<T>());
  return static_cast<T*>(storage()->data) + offset();
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template int64_t* Tensor::data<int64_t>() const;

void* Tensor::raw_data() const {
  return static_cast<char*>(storage()->data) + offset() * static_cast<int64_t>(dtype_size(dtype()));
}

double Tensor::at(int64_t flat) const {
  SPDLAB_CHECK(flat >= 0 && flat < numel(), "Tensor::at: index ", flat, " out of range for ", numel(), " elements");
  if (!device().is_cpu()) return detach().cpu().at(flat);
  int64_t off = 0;
  for (int64_t d = dim() - 1; d >= 0; --d) {
    off += (flat % shape()[d]) * strides()[d];
    flat /= shape()[d];
  }
  const char* base = static_cast<const char*>(storage()->data);
  switch (dtype()) {
    case DType::f32: return reinterpret_cast<const float*>(base)[offset() + off];
    case DType::f64: return reinterpret_cast<const double*>(base)[offset() + off];
    case DType::i64: return static_cast<double>(reinterpret_cast<const int64_t*>(base)[offset() + off]);
  }
  return 0;
}

double Tensor::item() const {
  SPDLAB_CHECK(numel() == 1, "Tensor::item: expected a one-element tensor, got shape ", shape_str(shape()));
  return at(0);
}

std::vector<float> Tensor::to_vector_f32() const {
  Tensor c = detach().cpu().to(DType::f32).contiguous();
  return std::vector<float>(c.data<float>(), c.data<float>() + c.numel());
}
std::vector<double> Tensor::to_vector_f64() const {
  Tensor c = detach().cpu().to(DType::f64).contiguous();
  return std::vector<double>(c.data<double>(), c.data<double>() + c.numel());
}
std::vector<int64_t> Tensor::to_vector_i64() const {
  Tensor c = detach().cpu().to(DType::i64).contiguous();
  return std::vector<int64_t>(c.data<int64_t>(), c.data<int64_t>() + c.numel());
}

// ---- autograd handles ----

Tensor& Tensor::requires_grad_(bool on) {
  SPDLAB_CHECK(!on || dtype() != DType::i64, "requires_grad_: only floating tensors can require grad; this one is i64");
  SPDLAB_CHECK(is_leaf(), "requires_grad_: only leaf tensors can change requires_grad; use detach() first");
  impl()->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return impl()->grad ? Tensor(impl()->grad) : Tensor(); }

void Tensor::set_grad(const Tensor& g) {
  if (!g.defined()) {
    impl()->grad.reset();
    return;
  }
  SPDLAB_CHECK(g.shape() == shape(), "set_grad: gradient shape ", shape_str(g.shape()), " != tensor shape ",
               shape_str(shape()));
  SPDLAB_CHECK(g.dtype() == dtype(), "set_grad: gradient dtype ", g.dtype(), " != tensor dtype ", dtype());
  impl()->grad = g.impl_ptr();
}

void Tensor::zero_grad() { impl()->grad.reset(); }

void Tensor::backward(bool retain_graph) const {
  SPDLAB_CHECK(numel() == 1, "backward: the tensor has shape ", shape_str(shape()),
               "; backward() without a gradient needs a scalar, so pass a gradient of that shape");
  autograd::run_backward(*this, Tensor::ones(shape(), dtype(), device()), retain_graph);
}

void Tensor::backward(const Tensor& grad_output, bool retain_graph) const {
  SPDLAB_CHECK(grad_output.shape() == shape(), "backward: gradient shape ", shape_str(grad_output.shape()),
               " does not match the tensor's shape ", shape_str(shape()));
  autograd::run_backward(*this, grad_output, retain_graph);
}

Tensor Tensor::detach() const { return make_view(*this, shape(), strides(), offset()); }

Tensor Tensor::clone() const {
  Tensor src = *this;
  Tensor out = Tensor::empty(shape(), dtype(), device());
  {
    autograd::NoGradGuard ng;
    out.copy_(src.detach());
  }
  return autograd::record("clone", out, {src}, [](const Tensor& dy) { return autograd::Grads{dy}; });
}

// ---- views ----

Tensor Tensor::view(const Shape& shape_in) const {
  Shape s = shape_in;
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      SPDLAB_CHECK(infer < 0, "view: only one dimension can be -1, got ", shape_str(shape_in));
      infer = static_cast<int64_t>(i);
    } else {
      SPDLAB_CHECK(s[i] >= 0, "view: invalid dimension in ", shape_str(shape_in));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    SPDLAB_CHECK(known > 0 && numel() % known == 0, "view: shape ", shape_str(shape_in), " is invalid for a tensor of ",
                 numel(), " elements");
    s[infer] = numel() / known;
  }
  SPDLAB_CHECK(numel_of(s) == numel(), "view: shape ", shape_str(shape_in), " is invalid for a tensor of shape ",
               shape_str(shape()), " (", numel(), " elements)");
  SPDLAB_CHECK(is_contiguous(), "view: the tensor of shape ", shape_str(shape()),
               " is not contiguous; use reshape() (which copies) instead");
  Tensor x = *this;
  Tensor y = make_view(*this, s, contiguous_strides(s), offset());
  Shape in_shape = shape();
  return autograd::record("view", y, {x}, [in_shape](const Tensor& dy) {
    return autograd::Grads{dy.reshape(in_shape)};
  });
}

Tensor Tensor::reshape(const Shape& s) const { return is_contiguous() ? view(s) : contiguous().view(s); }

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  SPDLAB_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: got ", dims.size(), " dims for a tensor with ",
               dim());
  Shape s(dim()), st(dim());
  std::vector<int64_t> inv(dim(), -1);
  for (int64_t i = 0; i < dim(); ++i) {
    int64_t d = wrap_dim(dims[i], dim(), "permute");
    SPDLAB_CHECK(inv[d] < 0, "permute: dim ", d, " appears twice");
    inv[d] = i;
    s[i] = shape()[d];
    st[i] = strides()[d];
  }
  Tensor x = *this;
  Tensor y = make_view(*this, s, st, offset());
  return autograd::record("permute", y, {x}, [inv](const Tensor& dy) { return autograd::Grads{dy.permute(inv)}; });
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  d0 = wrap_dim(d0, dim(), "transpose");
  d1 = wrap_dim(d1, dim(), "transpose");
  std::vector<int64_t> p(dim());
  std::iota(p.begin(), p.end(), 0);
  std::swap(p[d0], p[d1]);
  return permute(p);
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim(), "narrow");
  SPDLAB_CHECK(start >= 0 && length >= 0 && start + length <= shape()[d], "narrow: [", start, ", ", start + length,
               ") is out of range for dim ", d, " of size ", shape()[d]);
  Shape s = shape();
  s[d] = length;
  Tensor x = *this;
  Tensor y = make_view(*this, s, strides(), offset() + start * strides()[d]);
  Shape in_shape = shape();
  DType dt = dtype();
  return autograd::record("narrow", y, {x}, [in_shape, dt, d, start, length](const Tensor& dy) {
    Tensor dx = Tensor::zeros(in_shape, dt, dy.device());
    dx.narrow(d, start, length).copy_(dy);
    return autograd::Grads{dx};
  });
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  SPDLAB_CHECK(index >= -shape()[d] && index < shape()[d], "select: index ", index, " is out of range for dim ", d,
               " of size ", shape()[d]);
  if (index < 0) index += shape()[d];
  return narrow(d, index, 1).squeeze(d);
}

Tensor Tensor::expand(const Shape& target) const {
  SPDLAB_CHECK(static_cast<int64_t>(target.size()) >= dim(), "expand: cannot expand ", shape_str(shape()), " to ",
               shape_str(target), " (fewer dims)");
  size_t lead = target.size() - shape().size();
  Shape s(target.size()), st(target.size());
  for (size_t i = 0; i < target.size(); ++i) {
    if (i < lead) {
      s[i] = target[i];
      st[i] = 0;
      continue;
    }
    int64_t have = shape()[i - lead];
    int64_t want = target[i] == -1 ? have : target[i];
    SPDLAB_CHECK(have == want || have == 1, "expand: cannot expand ", shape_str(shape()), " to ", shape_str(target),
                 " (dim ", i, " is ", have, ", expected 1 or ", want, ")");
    s[i] = want;
    st[i] = have == want ? strides()[i - lead] : 0;
  }
  Tensor x = *this;
  Tensor y = make_view(*this, s, st, offset());
  Shape in_shape = shape();
  return autograd::record("expand", y, {x},
                          [in_shape](const Tensor& dy) { return autograd::Grads{autograd::sum_to(dy, in_shape)}; });
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape s = shape(), st = strides();
  int64_t stride = d < dim() ? strides()[d] * shape()[d] : 1;
  s.insert(s.begin() + d, 1);
  st.insert(st.begin() + d, stride);
  Tensor x = *this;
  Tensor y = make_view(*this, s, st, offset());
  Shape in_shape = shape();
  return autograd::record("unsqueeze", y, {x}, [in_shape](const Tensor& dy) {
    return autograd::Grads{dy.reshape(in_shape)};
  });
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  SPDLAB_CHECK(shape()[d] == 1, "squeeze: dim ", d, " has size ", shape()[d], ", expected 1");
  Shape s = shape(), st = strides();
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  Tensor x = *this;
  Tensor y = make_view(*this, s, st, offset());
  Shape in_shape = shape();
  return autograd::record("squeeze", y, {x}, [in_shape](const Tensor& dy) {
    return autograd::Grads{dy.reshape(in_shape)};
  });
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten");
  end = wrap_dim(end, dim(), "flatten");
  SPDLAB_CHECK(start <= end, "flatten: start_dim ", start, " is after end_dim ", end);
  Shape s(shape().begin(), shape().begin() + start);
  int64_t m = 1;
  for (int64_t i = start; i <= end; ++i) m *= shape()[i];
  s.push_back(m);
  s.insert(s.end(), shape().begin() + end + 1, shape().end());
  return reshape(s);
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor x = *this;
  Tensor y = Tensor::empty(shape(), dtype(), device());
  {
    autograd::NoGradGuard ng;
    y.copy_(x.detach());
  }
  return autograd::record("contiguous", y, {x}, [](const Tensor& dy) { return autograd::Grads{dy}; });
}

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  Tensor x = *this;
  Tensor y = Tensor::empty(shape(), dt, device());
  {
    autograd::NoGradGuard ng;
    y.copy_(x.detach());
  }
  if (dt == DType::i64) return y;
  DType src = dtype();
  return autograd::record("to", y, {x}, [src](const Tensor& dy) { return autograd::Grads{dy.to(src)}; });
}

Tensor Tensor::to(Device dev) const {
  if (dev == device()) return *this;
  Tensor x = *this;
  Tensor src = detach().contiguous();
  Tensor y = Tensor::empty(shape(), dtype(), dev);
  size_t bytes = static_cast<size_t>(numel()) * dtype_size(dtype());
  if (device().is_cpu()) {
    kernels::get(dev).copy_from_host(y.raw_data(), src.raw_data(), bytes);
  } else if (dev.is_cpu()) {
    kernels::get(device()).copy_to_host(y.raw_data(), src.raw_data(), bytes);
  } else {  // GPU to GPU goes through the host: rare, and needs no peer access
    Tensor h = src.cpu();
    kernels::get(dev).copy_from_host(y.raw_data(), h.raw_data(), bytes);
  }
  if (dtype() == DType::i64) return y;
  Device from = device();
  return autograd::record("to", y, {x}, [from](const Tensor& dy) { return autograd::Grads{dy.to(from)}; });
}

// ---- in-place ----

static void check_inplace(const Tensor& t, const char* op) {
  SPDLAB_CHECK(!(autograd::grad_enabled() && (t.requires_grad() || t.grad_fn())), op,
               ": in-place write to a tensor that requires grad (shape ", shape_str(t.shape()),
               "); wrap it in NoGradGuard or write to a detach()ed copy");
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace(*this, "copy_");
  SPDLAB_CHECK(src.device() == device(), "copy_: source is on ", src.device(), ", destination on ", device());
  Tensor s = src.dim() == dim() && src.shape() == shape() ? src : src.detach().expand(shape());
  kernels::get(device()).copy_strided(s.dtype(), {s.raw_data(), s.strides().data()}, dtype(), raw_data(),
                                      strides().data(), shape().data(), static_cast<int>(dim()));
  return *this;
}

Tensor& Tensor::fill_(double v) {
  check_inplace(*this, "fill_");
  if (is_contiguous()) {
    kernels::get(device()).fill(dtype(), raw_data(), numel(), v);
  } else {
    Tensor one = Tensor::full({}, v, dtype(), device());
    copy_(one);
  }
  return *this;
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "Tensor(undefined)";
  os << "Tensor(" << shape_str(t.shape()) << ", " << t.dtype();
  if (!t.device().is_cpu()) os << ", " << t.device();
  os << ", [";
  Tensor h = t.detach().cpu();
  int64_t n = std::min<int64_t>(t.numel(), 8);
  for (int64_t i = 0; i < n; ++i) os << (i ? ", " : "") << h.at(i);
  if (t.numel() > n) os << ", ...";
  return os << "])";
}

// ---- random numbers ----

uint64_t Generator::next_u64() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
double Generator::next_double() { return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
float Generator::next_float() { return static_cast<float>(next_u64() >> 40) * (1.0f / 16777216.0f); }
double Generator::next_normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = next_double(), u2 = next_double();
  if (u1 < 1e-300) u1 = 1e-300;
  double r = std::sqrt(-2.0 * std::log(u1)), th = 2.0 * M_PI * u2;
  spare_ = r * std::sin(th);
  has_spare_ = true;
  return r * std::cos(th);
}

}  // namespace spdlab
