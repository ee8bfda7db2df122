// CUDA kernels for the row-wise nn ops: softmax, layer norm and cross-entropy. One block walks one row at a
// time (rows in a grid-stride loop), and row sums are block sums in f64 in a fixed order, as the CPU
// accumulates in f64. LayerNorm's weight and bias gradients are column sums over fixed blocks of rows,
// added in block order by a second kernel.
#include "kernels/cuda/backend.h"
#include "kernels/cuda/common.cuh"

namespace spdlab::cuda {
namespace {

constexpr int kRowThreads = 128;
constexpr int64_t kRowBlock = 256;  // rows per partial in layer_norm_bwd's column sums

unsigned row_grid(int64_t rows) { return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(rows, 65535))); }

template <typename T>
__global__ void softmax_fwd_kernel(const T* x, T* y, int64_t rows, int64_t cols, T s, bool log) {
  // y [rows, cols] = softmax (or log_softmax) of s * x over each row
  double* red = shared_mem<double>();
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* px = x + r * cols;
    T* py = y + r * cols;
    double mx = -INFINITY;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) mx = fmax(mx, double(px[c] * s));
    mx = block_max(mx, red);
    T m = static_cast<T>(mx);
    double sum = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += static_cast<double>(exp(px[c] * s - m));
    sum = block_sum(sum, red);
    if (log) {
      T lse = m + static_cast<T>(::log(sum));
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) py[c] = px[c] * s - lse;
    } else {
      T inv = static_cast<T>(1.0 / sum);
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) py[c] = exp(px[c] * s - m) * inv;
    }
  }
}

template <typename T>
__global__ void softmax_bwd_kernel(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols, T s, bool log) {
  // dx = s * (dy - exp(y) sum dy) for log_softmax, s * y (dy - sum dy y) for softmax
  double* red = shared_mem<double>();
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* py = y + r * cols;
    const T* pd = dy + r * cols;
    T* px = dx + r * cols;
    double acc = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
      acc += log ? static_cast<double>(pd[c]) : static_cast<double>(pd[c]) * py[c];
    T a = static_cast<T>(block_sum(acc, red));
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
      px[c] = log ? s * (pd[c] - exp(py[c]) * a) : s * py[c] * (pd[c] - a);
  }
}

template <typename T>
__global__ void layer_norm_fwd_kernel(const T* x, const T* w, const T* b, T* y, double* mean, double* rstd,
                                      int64_t rows, int64_t cols, double eps) {
  // y [rows, cols] = (x - mean) * rstd * w + b per row; mean and rstd [rows] saved in f64
  double* red = shared_mem<double>();
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* px = x + r * cols;
    T* py = y + r * cols;
    double s = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += px[c];
    double mu = block_sum(s, red) / cols, v = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      double d = px[c] - mu;
      v += d * d;
    }
    double rs = 1.0 / ::sqrt(block_sum(v, red) / cols + eps);
    if (threadIdx.x == 0) {
      mean[r] = mu;
      rstd[r] = rs;
    }
    T m = static_cast<T>(mu), q = static_cast<T>(rs);
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
      py[c] = (px[c] - m) * q * (w ? w[c] : T(1)) + (b ? b[c] : T(0));
  }
}

template <typename T>
__global__ void layer_norm_bwd_dx_kernel(const T* x, const T* w, const double* mean, const double* rstd, const T* dy,
                                         T* dx, int64_t rows, int64_t cols) {
  // dx [rows, cols] = rstd * (g - mean(g) - h * mean(g h)), g = dy w, h the normalized x
  double* red = shared_mem<double>();
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* px = x + r * cols;
    const T* pd = dy + r * cols;
    T* po = dx + r * cols;
    const T m = static_cast<T>(mean[r]), q = static_cast<T>(rstd[r]);
    double sg = 0, sgh = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      T g = pd[c] * (w ? w[c] : T(1)), h = (px[c] - m) * q;
      sg += g;
      sgh += static_cast<double>(g) * h;
    }
    const T mg = static_cast<T>(block_sum(sg, red) / cols), mgh = static_cast<T>(block_sum(sgh, red) / cols);
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      T h = (px[c] - m) * q;
      po[c] = q * (pd[c] * (w ? w[c] : T(1)) - mg - h * mgh);
    }
  }
}

template <typename T>
__global__ void layer_norm_bwd_params_kernel(const T* x, const double* mean, const double* rstd, const T* dy,
                                             double* part, int64_t rows, int64_t cols) {
  // part [nblk, 2, cols]: block blockIdx.y's sums of dy * h (dw) and dy (db) over its kRowBlock rows
  int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  int64_t r0 = blockIdx.y * kRowBlock, r1 = r0 + kRowBlock < rows ? r0 + kRowBlock : rows;
  double aw = 0, ab = 0;
  for (int64_t r = r0; r < r1; ++r) {
    T d = dy[r * cols + c];
    T h = (x[r * cols + c] - static_cast<T>(mean[r])) * static_cast<T>(rstd[r]);
    aw += static_cast<double>(d) * h;
    ab += d;
  }
  part[(blockIdx.y * 2) * cols + c] = aw;
  part[(blockIdx.y * 2 + 1) * cols + c] = ab;
}

template <typename T>
__global__ void layer_norm_bwd_finish_kernel(const double* part, T* dw, T* db, int64_t nblk, int64_t cols) {
  // dw, db [cols] += the blocks' partials, added in block order
  int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  double aw = 0, ab = 0;
  for (int64_t k = 0; k < nblk; ++k) {
    aw += part[(k * 2) * cols + c];
    ab += part[(k * 2 + 1) * cols + c];
  }
  if (dw) dw[c] += static_cast<T>(aw);
  if (db) db[c] += static_cast<T>(ab);
}

template <typename T>
__global__ void cross_entropy_fwd_kernel(const T* logits, const int64_t* target, T* probs, double* loss, int64_t rows,
                                         int64_t cols, double smoothing) {
  // probs [rows, cols] = softmax(logits); loss [rows] = -((1 - eps) log p_t + eps/C sum_c log p_c)
  double* red = shared_mem<double>();
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* px = logits + r * cols;
    T* pp = probs + r * cols;
    double mx = -INFINITY;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) mx = fmax(mx, double(px[c]));
    mx = block_max(mx, red);
    double sum = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += ::exp(px[c] - mx);
    double lse = mx + ::log(block_sum(sum, red)), sum_logp = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      double lp = px[c] - lse;
      pp[c] = static_cast<T>(::exp(lp));
      sum_logp += lp;
    }
    sum_logp = block_sum(sum_logp, red);
    if (threadIdx.x == 0) {
      double lp_t = px[target[r]] - lse;
      loss[r] = -((1.0 - smoothing) * lp_t + smoothing / cols * sum_logp);
    }
  }
}

template <typename T>
__global__ void cross_entropy_bwd_kernel(const T* probs, const int64_t* target, T* dl, int64_t rows, int64_t cols,
                                         T off, T on, T s) {
  // dl [rows, cols] = (probs - smoothed one-hot) * s
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * cols; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = i / cols, c = i % cols;
    dl[i] = (probs[i] - off - (c == target[r] ? on : T(0))) * s;
  }
}

constexpr size_t kRedBytes = 32 * sizeof(double);

}  // namespace

void CudaKernels::softmax_fwd(DType dt, const void* x, void* y, int64_t rows, int64_t cols, double scale, bool log) {
  if (rows == 0 || cols == 0) return;
  float_dispatch(dt, "softmax", [&](auto t) {
    using T = decltype(t);
    SPDLAB_LAUNCH(softmax_fwd_kernel<T>, row_grid(rows), kRowThreads, kRedBytes, stream_, static_cast<const T*>(x),
                  static_cast<T*>(y), rows, cols, T(scale), log);
  });
}

void CudaKernels::softmax_bwd(DType dt, const void* y, const void* dy, void* dx, int64_t rows, int64_t cols,
                              double scale, bool log) {
  if (rows == 0 || cols == 0) return;
  float_dispatch(dt, "softmax_bwd", [&](auto t) {
    using T = decltype(t);
    SPDLAB_LAUNCH(softmax_bwd_kernel<T>, row_grid(rows), kRowThreads, kRedBytes, stream_, static_cast<const T*>(y),
                  static_cast<const T*>(dy), static_cast<T*>(dx), rows, cols, T(scale), log);
  });
}

void CudaKernels::layer_norm_fwd(DType dt, const void* x, const void* w, const void* b, void* y, double* mean,
                                 double* rstd, int64_t rows, int64_t cols, double eps) {
  if (rows == 0 || cols == 0) return;
  float_dispatch(dt, "layer_norm", [&](auto t) {
    using T = decltype(t);
    SPDLAB_LAUNCH(layer_norm_fwd_kernel<T>, row_grid(rows), kRowThreads, kRedBytes, stream_, static_cast<const T*>(x),
                  static_cast<const T*>(w), static_cast<const T*>(b), static_cast<T*>(y), mean, rstd, rows, cols, eps);
  });
}

void CudaKernels::layer_norm_bwd(DType dt, const void* x, const void* w, const double* mean, const double* rstd,
                                 const void* dy, void* dx, void* dw, void* db, int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return;
  float_dispatch(dt, "layer_norm_bwd", [&](auto t) {
    using T = decltype(t);
    SPDLAB_LAUNCH(layer_norm_bwd_dx_kernel<T>, row_grid(rows), kRowThreads, kRedBytes, stream_,
                  static_cast<const T*>(x), static_cast<const T*>(w), mean, rstd, static_cast<const T*>(dy),
                  static_cast<T*>(dx), rows, cols);
    if (!dw && !db) return;
    int64_t nblk = (rows + kRowBlock - 1) / kRowBlock;
    SPDLAB_CHECK(nblk <= 65535, "layer_norm_bwd: ", rows, " rows is more than the CUDA kernel's ", 65535 * kRowBlock);
    double* part = static_cast<double*>(scratch(size_t(nblk) * 2 * cols * sizeof(double)));
    unsigned cb = static_cast<unsigned>((cols + kThreads - 1) / kThreads);
    SPDLAB_LAUNCH(layer_norm_bwd_params_kernel<T>, dim3(cb, static_cast<unsigned>(nblk)), kThreads, 0, stream_,
                  static_cast<const T*>(x), mean, rstd, static_cast<const T*>(dy), part, rows, cols);
    SPDLAB_LAUNCH(layer_norm_bwd_finish_kernel<T>, cb, kThreads, 0, stream_, static_cast<const double*>(part),
                  static_cast<T*>(dw), static_cast<T*>(db), nblk, cols);
  });
}

void CudaKernels::cross_entropy_fwd(DType dt, const void* logits, const int64_t* target, void* probs, double* loss,
                                    int64_t rows, int64_t cols, double smoothing) {
  if (rows == 0) return;
  float_dispatch(dt, "cross_entropy", [&](auto t) {
    using T = decltype(t);
    SPDLAB_LAUNCH(cross_entropy_fwd_kernel<T>, row_grid(rows), 32, kRedBytes, stream_, static_cast<const T*>(logits),
                  target, static_cast<T*>(probs), loss, rows, cols, smoothing);
  });
}

void CudaKernels::cross_entropy_bwd(DType dt, const void* probs, const int64_t* target, void* dlogits, int64_t rows,
                                    int64_t cols, double smoothing, double scale) {
  if (rows * cols == 0) return;
  float_dispatch(dt, "cross_entropy_bwd", [&](auto t) {
    using T = decltype(t);
    SPDLAB_LAUNCH(cross_entropy_bwd_kernel<T>, grid_for(*this, rows * cols, kThreads), kThreads, 0, stream_,
                  static_cast<const T*>(probs), target, static_cast<T*>(dlogits), rows, cols, T(smoothing / cols),
                  T(1.0 - smoothing), T(scale));
  });
}

}  // namespace spdlab::cuda
