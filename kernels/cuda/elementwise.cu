// CUDA kernels for memory, elementwise math, reductions and indexing: the methods of CudaKernels declared
// under "elementwise.cu" in backend.h. Elementwise kernels are grid-stride loops; strided operands carry
// their shape and strides by value (StridedArgs). Sums reduce in a fixed order, never with float atomics,
// so a seed gives the same bits run after run on one GPU.
#include "kernels/cuda/backend.h"
#include "kernels/cuda/common.cuh"
#include "kernels/philox.h"

namespace spdlab::cuda {

using kernels::Binary;
using kernels::Reduce;
using kernels::Strided;
using kernels::Unary;

namespace {

// Element offset of logical index i in operand k of a strided iteration.
__device__ __forceinline__ int64_t offset_of(const StridedArgs& a, int k, int64_t i) {
  int64_t off = 0;
  for (int d = a.ndim - 1; d >= 0; --d) {
    int64_t s = a.shape[d];
    off += (i % s) * a.stride[k][d];
    i /= s;
  }
  return off;
}

template <typename S, typename D>
__global__ void copy_strided_kernel(const S* src, D* dst, StridedArgs a) {
  // src and dst both strided over a.shape; converts S to D
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < a.numel; i += int64_t(gridDim.x) * blockDim.x)
    dst[offset_of(a, 1, i)] = static_cast<D>(src[offset_of(a, 0, i)]);
}

template <typename T>
__global__ void fill_kernel(T* y, int64_t n, T v) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) y[i] = v;
}

template <typename T>
__device__ __forceinline__ T gelu_exact(T x) {
  return T(0.5) * x * (T(1) + erf(x * T(0.7071067811865476)));
}
template <typename T>
__device__ __forceinline__ T gelu_exact_grad(T x) {
  T cdf = T(0.5) * (T(1) + erf(x * T(0.7071067811865476)));
  T pdf = exp(T(-0.5) * x * x) * T(0.3989422804014327);  // 1/sqrt(2 pi)
  return cdf + x * pdf;
}

template <typename T>
__global__ void unary_fwd_kernel(int op, const T* x, T* y, int64_t n, T a, bool square) {
  // y[n] = f(x[n]); op is a kernels::Unary
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    T v = x[i], r = v;
    switch (static_cast<Unary>(op)) {
      case Unary::neg: r = -v; break;
      case Unary::exp: r = exp(v); break;
      case Unary::log: r = log(v); break;
      case Unary::sqrt: r = sqrt(v); break;
      case Unary::rsqrt: r = T(1) / sqrt(v); break;
      case Unary::tanh: r = tanh(v); break;
      case Unary::abs: r = fabs(v); break;
      case Unary::relu: r = v > T(0) ? v : T(0); break;
      case Unary::gelu: r = gelu_exact(v); break;
      case Unary::gelu_tanh: r = T(0.5) * v * (T(1) + tanh(T(0.7978845608028654) * (v + T(0.044715) * v * v * v))); break;
      case Unary::pow: r = square ? v * v : pow(v, a); break;
      case Unary::add_scalar: r = v + a; break;
      case Unary::mul_scalar: r = v * a; break;
      case Unary::rsub_scalar: r = a - v; break;
    }
    y[i] = r;
  }
}

template <typename T>
__global__ void unary_bwd_kernel(int op, const T* x, const T* y, const T* dy, T* dx, int64_t n, T a, bool square) {
  // dx[n] = dy * f'(x), from x or from y = f(x) where that is cheaper
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    T g = dy[i], r = g;
    switch (static_cast<Unary>(op)) {
      case Unary::neg: case Unary::rsub_scalar: r = -g; break;
      case Unary::exp: r = g * y[i]; break;
      case Unary::log: r = g / x[i]; break;
      case Unary::sqrt: r = g * T(0.5) / y[i]; break;
      case Unary::rsqrt: r = g * T(-0.5) * y[i] * y[i] * y[i]; break;
      case Unary::tanh: r = g * (T(1) - y[i] * y[i]); break;
      case Unary::abs: r = x[i] > T(0) ? g : (x[i] < T(0) ? -g : T(0)); break;
      case Unary::relu: r = x[i] > T(0) ? g : T(0); break;
      case Unary::gelu: r = g * gelu_exact_grad(x[i]); break;
      case Unary::gelu_tanh: {
        const T k = T(0.7978845608028654), c = T(0.044715);
        T xi = x[i], t = tanh(k * (xi + c * xi * xi * xi)), dinner = k * (T(1) + T(3) * c * xi * xi);
        r = g * (T(0.5) * (T(1) + t) + T(0.5) * xi * (T(1) - t * t) * dinner);
        break;
      }
      case Unary::pow: r = square ? g * T(2) * x[i] : g * a * pow(x[i], a - T(1)); break;
      case Unary::add_scalar: r = g; break;
      case Unary::mul_scalar: r = g * a; break;
    }
    dx[i] = r;
  }
}

template <typename T>
__global__ void binary_kernel(int op, const T* a, const T* b, T* out, StridedArgs s) {
  // out (contiguous over s.shape) = a op b, a and b broadcast by their strides
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < s.numel; i += int64_t(gridDim.x) * blockDim.x) {
    T x = a[offset_of(s, 0, i)], y = b[offset_of(s, 1, i)], r;
    switch (static_cast<Binary>(op)) {
      case Binary::add: r = x + y; break;
      case Binary::sub: r = x - y; break;
      case Binary::mul: r = x * y; break;
      case Binary::div: r = x / y; break;
      default: r = (x >= y || x != x) ? x : y; break;  // maximum; a NaN in a wins, as on the CPU
    }
    out[i] = r;
  }
}

template <typename C, typename T>
__global__ void where_kernel(const C* cond, const T* a, const T* b, T* out, StridedArgs s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < s.numel; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = cond[offset_of(s, 0, i)] != C(0) ? a[offset_of(s, 1, i)] : b[offset_of(s, 2, i)];
}

// x [outer, r, inner] -> y [outer, inner]: one block per output column group. Each thread of a block sums a
// fixed set of rows for one column in f64, then the block adds the threads' partials in a fixed tree.
// blockDim = (32 columns, 8 row lanes); shared: 8 x 32 partials (and arg indices for max).
template <typename T>
__global__ void reduce_kernel(int op, const T* x, T* y, int64_t outer, int64_t r, int64_t inner, int64_t* argmax) {
  double* part = shared_mem<double>();
  int64_t* arg = reinterpret_cast<int64_t*>(part + blockDim.x * blockDim.y);
  const int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const bool live = col < inner, is_sum = static_cast<Reduce>(op) == Reduce::sum;
  const int t = threadIdx.y * blockDim.x + threadIdx.x;
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    // Each row lane scans its rows in order like the CPU: the first maximum, or the last NaN.
    double acc = is_sum ? 0.0 : -INFINITY;
    int64_t best = -1;
    if (live) {
      const T* px = x + o * r * inner + col;
      for (int64_t j = threadIdx.y; j < r; j += blockDim.y) {
        double v = static_cast<double>(px[j * inner]);
        if (is_sum) acc += v;
        else if (best < 0 || v > acc || v != v) {
          acc = v;
          best = j;
        }
      }
    }
    part[t] = acc;
    arg[t] = best;
    __syncthreads();
    if (threadIdx.y == 0 && live) {
      double total = part[threadIdx.x];
      int64_t bi = arg[threadIdx.x];
      for (unsigned k = 1; k < blockDim.y; ++k) {  // lanes in a fixed order
        double v = part[k * blockDim.x + threadIdx.x];
        int64_t vi = arg[k * blockDim.x + threadIdx.x];
        if (is_sum) {
          total += v;
        } else if (vi >= 0) {
          // Lanes interleave rows, so merge as the CPU's scan would: the last NaN, else the first maximum.
          bool v_nan = v != v, t_nan = total != total;
          bool take = bi < 0 || (v_nan && (!t_nan || vi > bi)) ||
                      (!t_nan && !v_nan && (v > total || (v == total && vi < bi)));
          if (take) {
            total = v;
            bi = vi;
          }
        }
      }
      y[o * inner + col] = static_cast<T>(total);
      if (!is_sum && argmax) argmax[o * inner + col] = bi;
    }
    __syncthreads();  // the partials are read before the next slice overwrites them
  }
}

template <typename T>
__global__ void max_bwd_kernel(const T* dy, const int64_t* argmax, T* dx, int64_t outer, int64_t r, int64_t inner) {
  // dx [outer, r, inner] = dy at the argmax row, 0 elsewhere
  int64_t n = outer * r * inner;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t c = i % inner, j = (i / inner) % r, o = i / (inner * r);
    dx[i] = argmax[o * inner + c] == j ? dy[o * inner + c] : T(0);
  }
}

template <typename T>
__global__ void fill_rows_kernel(T* y, const T* bias, int64_t rows, int64_t cols) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * cols; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = bias[i % cols];
}

template <typename T>
__global__ void unfold_kernel(const T* x, T* y, int64_t B, int64_t C, int64_t H, int64_t W, int64_t P, bool backward) {
  // forward: y [B, gh*gw, C*P*P] = patches of x [B, C, H, W]; backward: x is dy and y is dx, each element of
  // dx is written once (patches do not overlap), so it is an add without races
  int64_t gh = H / P, gw = W / P, L = C * P * P, n = B * C * H * W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t xw = i % W, xh = (i / W) % H, c = (i / (W * H)) % C, b = i / (W * H * C);
    int64_t gy = xh / P, py = xh % P, gx = xw / P, px = xw % P;
    int64_t yo = ((b * gh + gy) * gw + gx) * L + (c * P + py) * P + px;
    if (backward) y[i] += x[yo];
    else y[yo] = x[i];
  }
}

// index_select and gather in one pair of kernels: x viewed as [outer, n, inner], y as [outer, m, inner]. The
// source row of y's element (o, j, c) is index[j] for index_select (one index per position, per_element
// false) and index[(o, j, c)] for gather.
template <typename T>
__global__ void pick_rows_fwd_kernel(const T* x, const int64_t* index, T* y, int64_t outer, int64_t n, int64_t m,
                                     int64_t inner, bool per_element) {
  // y [outer, m, inner] = x [outer, source row, inner]
  int64_t total = outer * m * inner;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t c = i % inner, j = (i / inner) % m, o = i / (inner * m);
    y[i] = x[(o * n + index[per_element ? i : j]) * inner + c];
  }
}

template <typename T>
__global__ void pick_rows_bwd_kernel(const T* dy, const int64_t* index, T* dx, int64_t outer, int64_t n, int64_t m,
                                     int64_t inner, bool per_element) {
  // dx [outer, n, inner] += every dy [o, j, c] whose source row is this one, added in j order (no atomics)
  int64_t total = outer * n * inner;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t c = i % inner, row = (i / inner) % n, o = i / (inner * n);
    T acc = dx[i];
    for (int64_t j = 0; j < m; ++j) {
      int64_t k = (o * m + j) * inner + c;
      if (index[per_element ? k : j] == row) acc += dy[k];
    }
    dx[i] = acc;
  }
}

template <typename T>
__global__ void dropout_mask_kernel(T* mask, int64_t n, double p, double keep, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    mask[i] = philox::uniform(seed, offset + i) >= p ? T(keep) : T(0);
}

// index_select (per_element false) and gather, forward or backward.
void pick_rows(CudaKernels& k, const char* op, DType dt, const void* src, const int64_t* index, void* dst,
               int64_t outer, int64_t n, int64_t m, int64_t inner, bool per_element, bool backward) {
  int64_t total = outer * (backward ? n : m) * inner;
  if (total == 0) return;
  float_dispatch(dt, op, [&](auto t) {
    using T = decltype(t);
    auto kernel = backward ? pick_rows_bwd_kernel<T> : pick_rows_fwd_kernel<T>;
    ::spdlab::cuda::launch(op, kernel, grid_for(k, total, kThreads), kThreads, 0, k.stream(),
                           static_cast<const T*>(src), index, static_cast<T*>(dst), outer, n, m, inner, per_element);
  });
}

template <typename S>
void copy_from(CudaKernels& k, const S* src, DType dst_dt, void* dst, const StridedArgs& a) {
  unsigned g = grid_for(k, a.numel, kThreads);
  switch (dst_dt) {
    case DType::f32: SPDLAB_LAUNCH((copy_strided_kernel<S, float>), g, kThreads, 0, k.stream(), src, static_cast<float*>(dst), a); break;
    case DType::f64: SPDLAB_LAUNCH((copy_strided_kernel<S, double>), g, kThreads, 0, k.stream(), src, static_cast<double*>(dst), a); break;
    case DType::i64: SPDLAB_LAUNCH((copy_strided_kernel<S, int64_t>), g, kThreads, 0, k.stream(), src, static_cast<int64_t*>(dst), a); break;
  }
}

}  // namespace

void CudaKernels::copy_strided(DType src_dt, Strided src, DType dst_dt, void* dst, const int64_t* dst_strides,
                               const int64_t* shape, int ndim) {
  StridedArgs a = make_strided("copy", shape, ndim, {src.strides, dst_strides});
  if (a.numel == 0) return;
  switch (src_dt) {
    case DType::f32: copy_from(*this, static_cast<const float*>(src.data), dst_dt, dst, a); break;
    case DType::f64: copy_from(*this, static_cast<const double*>(src.data), dst_dt, dst, a); break;
    case DType::i64: copy_from(*this, static_cast<const int64_t*>(src.data), dst_dt, dst, a); break;
  }
}

void CudaKernels::fill(DType dt, void* dst, int64_t n, double v) {
  unsigned g = grid_for(*this, n, kThreads);
  if (n == 0) return;
  switch (dt) {
    case DType::f32: SPDLAB_LAUNCH(fill_kernel<float>, g, kThreads, 0, stream_, static_cast<float*>(dst), n, float(v)); break;
    case DType::f64: SPDLAB_LAUNCH(fill_kernel<double>, g, kThreads, 0, stream_, static_cast<double*>(dst), n, v); break;
    case DType::i64: SPDLAB_LAUNCH(fill_kernel<int64_t>, g, kThreads, 0, stream_, static_cast<int64_t*>(dst), n, int64_t(v)); break;
  }
}

void CudaKernels::unary_fwd(Unary op, DType dt, const void* x, void* y, int64_t n, double alpha) {
  if (n == 0) return;
  unsigned g = grid_for(*this, n, kThreads);
  float_dispatch(dt, "unary", [&](auto t) {
    using T = decltype(t);
    SPDLAB_LAUNCH(unary_fwd_kernel<T>, g, kThreads, 0, stream_, int(op), static_cast<const T*>(x), static_cast<T*>(y),
                  n, T(alpha), alpha == 2.0);
  });
}

void CudaKernels::unary_bwd(Unary op, DType dt, const void* x, const void* y, const void* dy, void* dx, int64_t n,
                            double alpha) {
  if (n == 0) return;
  unsigned g = grid_for(*this, n, kThreads);
  float_dispatch(dt, "unary_bwd", [&](auto t) {
    using T = decltype(t);
    SPDLAB_LAUNCH(unary_bwd_kernel<T>, g, kThreads, 0, stream_, int(op), static_cast<const T*>(x),
                  static_cast<const T*>(y), static_cast<const T*>(dy), static_cast<T*>(dx), n, T(alpha), alpha == 2.0);
  });
}

void CudaKernels::binary_fwd(Binary op, DType dt, Strided a, Strided b, void* out, const int64_t* shape, int ndim) {
  StridedArgs s = make_strided("binary", shape, ndim, {a.strides, b.strides});
  if (s.numel == 0) return;
  unsigned g = grid_for(*this, s.numel, kThreads);
  float_dispatch(dt, "binary", [&](auto t) {
    using T = decltype(t);
    SPDLAB_LAUNCH(binary_kernel<T>, g, kThreads, 0, stream_, int(op), static_cast<const T*>(a.data),
                  static_cast<const T*>(b.data), static_cast<T*>(out), s);
  });
}

void CudaKernels::where_fwd(DType cond_dt, Strided cond, DType dt, Strided a, Strided b, void* out,
                            const int64_t* shape, int ndim) {
  StridedArgs s = make_strided("where", shape, ndim, {cond.strides, a.strides, b.strides});
  if (s.numel == 0) return;
  unsigned g = grid_for(*this, s.numel, kThreads);
  float_dispatch(dt, "where", [&](auto t) {
    using T = decltype(t);
    auto go = [&](auto c) {
      using C = decltype(c);
      SPDLAB_LAUNCH((where_kernel<C, T>), g, kThreads, 0, stream_, static_cast<const C*>(cond.data),
                    static_cast<const T*>(a.data), static_cast<const T*>(b.data), static_cast<T*>(out), s);
    };
    if (cond_dt == DType::f32) go(float{});
    else if (cond_dt == DType::f64) go(double{});
    else go(int64_t{});
  });
}

void CudaKernels::reduce(Reduce op, DType dt, const void* x, void* y, int64_t outer, int64_t r, int64_t inner,
                         int64_t* argmax) {
  if (outer == 0 || inner == 0) return;
  // inner == 1 (a row sum) uses 256 row lanes per output, else 8 row lanes for each of 32 columns.
  dim3 block = inner == 1 ? dim3(1, 256) : dim3(32, 8);
  dim3 grid(static_cast<unsigned>((inner + block.x - 1) / block.x), static_cast<unsigned>(std::min<int64_t>(outer, 65535)));
  size_t shared = size_t(block.x) * block.y * (sizeof(double) + sizeof(int64_t));
  float_dispatch(dt, "reduce", [&](auto t) {
    using T = decltype(t);
    SPDLAB_LAUNCH(reduce_kernel<T>, grid, block, shared, stream_, int(op), static_cast<const T*>(x),
                  static_cast<T*>(y), outer, r, inner, argmax);
  });
}

void CudaKernels::max_bwd(DType dt, const void* dy, const int64_t* argmax, void* dx, int64_t outer, int64_t r,
                          int64_t inner) {
  int64_t n = outer * r * inner;
  if (n == 0) return;
  float_dispatch(dt, "max_bwd", [&](auto t) {
    using T = decltype(t);
    SPDLAB_LAUNCH(max_bwd_kernel<T>, grid_for(*this, n, kThreads), kThreads, 0, stream_, static_cast<const T*>(dy),
                  argmax, static_cast<T*>(dx), outer, r, inner);
  });
}

void CudaKernels::fill_rows(DType dt, void* y, const void* bias, int64_t rows, int64_t cols) {
  if (rows * cols == 0) return;
  float_dispatch(dt, "fill_rows", [&](auto t) {
    using T = decltype(t);
    SPDLAB_LAUNCH(fill_rows_kernel<T>, grid_for(*this, rows * cols, kThreads), kThreads, 0, stream_,
                  static_cast<T*>(y), static_cast<const T*>(bias), rows, cols);
  });
}

void CudaKernels::unfold_patches_fwd(DType dt, const void* x, void* y, int64_t B, int64_t C, int64_t H, int64_t W,
                                     int64_t P) {
  int64_t n = B * C * H * W;
  if (n == 0) return;
  float_dispatch(dt, "unfold_patches", [&](auto t) {
    using T = decltype(t);
    SPDLAB_LAUNCH(unfold_kernel<T>, grid_for(*this, n, kThreads), kThreads, 0, stream_, static_cast<const T*>(x),
                  static_cast<T*>(y), B, C, H, W, P, false);
  });
}

void CudaKernels::unfold_patches_bwd(DType dt, const void* dy, void* dx, int64_t B, int64_t C, int64_t H, int64_t W,
                                     int64_t P) {
  int64_t n = B * C * H * W;
  if (n == 0) return;
  float_dispatch(dt, "unfold_patches_bwd", [&](auto t) {
    using T = decltype(t);
    SPDLAB_LAUNCH(unfold_kernel<T>, grid_for(*this, n, kThreads), kThreads, 0, stream_, static_cast<const T*>(dy),
                  static_cast<T*>(dx), B, C, H, W, P, true);
  });
}

void CudaKernels::index_select_fwd(DType dt, const void* x, const int64_t* index, void* y, int64_t outer, int64_t n,
                                   int64_t m, int64_t inner) {
  pick_rows(*this, "index_select", dt, x, index, y, outer, n, m, inner, false, false);
}
void CudaKernels::gather_fwd(DType dt, const void* x, const int64_t* index, void* y, int64_t outer, int64_t n,
                             int64_t m, int64_t inner) {
  pick_rows(*this, "gather", dt, x, index, y, outer, n, m, inner, true, false);
}
void CudaKernels::index_select_bwd(DType dt, const void* dy, const int64_t* index, void* dx, int64_t outer,
                                   int64_t n, int64_t m, int64_t inner) {
  pick_rows(*this, "index_select_bwd", dt, dy, index, dx, outer, n, m, inner, false, true);
}
void CudaKernels::gather_bwd(DType dt, const void* dy, const int64_t* index, void* dx, int64_t outer, int64_t n,
                             int64_t m, int64_t inner) {
  pick_rows(*this, "gather_bwd", dt, dy, index, dx, outer, n, m, inner, true, true);
}

void CudaKernels::dropout_mask(DType dt, void* mask, int64_t n, double p, uint64_t seed, uint64_t offset) {
  if (n == 0) return;
  float_dispatch(dt, "dropout_mask", [&](auto t) {
    using T = decltype(t);
    SPDLAB_LAUNCH(dropout_mask_kernel<T>, grid_for(*this, n, kThreads), kThreads, 0, stream_, static_cast<T*>(mask), n,
                  p, 1.0 / (1.0 - p), seed, offset);
  });
}

}  // namespace spdlab::cuda
