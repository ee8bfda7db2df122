// Fused optimizer steps on the GPU: one pass per tensor for SGD, Adam/AdamW/L2-SP and SPD's Adam pass, with
// the coefficients rounded to float on the host exactly as the CPU kernels round them. SPD's three sums
// (<g, w - w0>, ||w - w0||^2, ||w~ - w0||^2) are block sums in f64 written per block, then added in block
// order by one more block: no float atomics, so the same inputs give the same bits.
#include <cmath>

#include "kernels/cuda/backend.h"
#include "kernels/cuda/common.cuh"

namespace spdlab::cuda {
namespace {

// Adam's per-step coefficients as float, from the doubles of AdamStep (see kernels.h).
struct AdamCoef {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, inv_bc2_sqrt, eps;
};
AdamCoef adam_coef(const kernels::AdamStep& h) {
  return {float(h.beta1), float(h.beta2), float(1.0 - h.beta1), float(1.0 - h.beta2), float(h.lr / h.bias_correction1),
          float(1.0 / std::sqrt(h.bias_correction2)), float(h.eps)};
}

// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; returns p - step (m / (sqrt(v) / sqrt(bc2) + eps)).
__device__ __forceinline__ float adam_update(const AdamCoef& k, float p, float g, float& m, float& v, float vd_extra,
                                             bool use_extra) {
  m = k.beta1 * m + k.one_minus_beta1 * g;
  v = k.beta2 * v + k.one_minus_beta2 * g * g;
  float vd = use_extra ? vd_extra : v;
  return p - k.step_size * (m / (sqrtf(vd) * k.inv_bc2_sqrt + k.eps));
}

__global__ void sgd_kernel(float* p, const float* g, float* buf, int64_t n, float lr, float momentum, float keep,
                           float wd, bool nesterov, bool first) {
  // p -= lr * d, d = g + wd p, through the momentum buffer when momentum != 0 (PyTorch's SGD)
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float pi = p[i], d = g[i] + wd * pi;
    if (momentum != 0.0f) {
      float bi = first ? d : momentum * buf[i] + keep * d;
      buf[i] = bi;
      d = nesterov ? d + momentum * bi : bi;
    }
    p[i] = pi - lr * d;
  }
}

struct AdamFlags {
  float wd, keep, alpha, beta;
  bool decoupled, coupled, l2sp, amsgrad;
};

__global__ void adam_kernel(float* p, const float* g, float* m, float* v, float* vmax, const float* anchor, int64_t n,
                            AdamCoef k, AdamFlags f) {
  // Adam, AdamW (decoupled decay first) and L2-SP (g += alpha (p - p0), or beta p without an anchor)
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float gi = g[i], pi = p[i], mi = m[i], vi = v[i];
    if (f.decoupled) pi = pi * f.keep;
    if (f.coupled) gi = gi + f.wd * pi;
    if (f.l2sp) gi = gi + (anchor ? f.alpha * (pi - anchor[i]) : f.beta * pi);
    float vd = 0;
    if (f.amsgrad) {
      float vn = k.beta2 * vi + k.one_minus_beta2 * gi * gi;
      vd = fmaxf(vmax[i], vn);
      vmax[i] = vd;
    }
    p[i] = adam_update(k, pi, gi, mi, vi, vd, f.amsgrad);
    m[i] = mi;
    v[i] = vi;
  }
}

__global__ void spd_adam_kernel(float* p, const float* g, float* m, float* v, const float* anchor, int64_t n,
                                AdamCoef k, double* part) {
  // p = the plain Adam update w~; part [gridDim.x, 3] = this block's sums of g (w - w0), (w - w0)^2, (w~ - w0)^2
  double* red = shared_mem<double>();
  double gd = 0, d0 = 0, d1 = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float gi = g[i], pi = p[i], mi = m[i], vi = v[i], ai = anchor ? anchor[i] : 0.0f;
    float pn = adam_update(k, pi, gi, mi, vi, 0.0f, false);
    m[i] = mi;
    v[i] = vi;
    p[i] = pn;
    float dev = pi - ai, ndev = pn - ai;
    gd += double(gi * dev);
    d0 += double(dev * dev);
    d1 += double(ndev * ndev);
  }
  gd = block_sum(gd, red);
  d0 = block_sum(d0, red);
  d1 = block_sum(d1, red);
  if (threadIdx.x == 0) {
    part[blockIdx.x * 3] = gd;
    part[blockIdx.x * 3 + 1] = d0;
    part[blockIdx.x * 3 + 2] = d1;
  }
}

__global__ void sum_parts_kernel(const double* part, int64_t nparts, double* out) {
  // out[3] = the column sums of part [nparts, 3], each lane's parts in order, then lanes in a fixed tree
  double* red = shared_mem<double>();
  for (int c = 0; c < 3; ++c) {
    double s = 0;
    for (int64_t i = threadIdx.x; i < nparts; i += blockDim.x) s += part[i * 3 + c];
    s = block_sum(s, red);
    if (threadIdx.x == 0) out[c] = s;
  }
}

__global__ void spd_project_kernel(float* p, const float* anchor, int64_t n, float scale) {
  // p -= scale (p - p0); a missing anchor is 0
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] -= scale * (p[i] - (anchor ? anchor[i] : 0.0f));
}

constexpr size_t kRedBytes = 32 * sizeof(double);

// SPD's sums go through a block count that depends only on n, so their rounding does too.
unsigned spd_blocks(int64_t n) { return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((n + 4095) / 4096, 1024))); }

}  // namespace

void CudaKernels::sgd_step(float* p, const float* g, float* buf, int64_t n, float lr, float momentum, float dampening,
                           float weight_decay, bool nesterov, bool first_step) {
  if (n == 0) return;
  SPDLAB_LAUNCH(sgd_kernel, grid_for(*this, n, kThreads), kThreads, 0, stream_, p, g, buf, n, lr, momentum,
                1.0f - dampening, weight_decay, nesterov, first_step);
}

void CudaKernels::adam_step(float* p, const float* g, float* m, float* v, float* vmax, const float* anchor, int64_t n,
                            const kernels::AdamStep& h) {
  if (n == 0) return;
  AdamFlags f{float(h.weight_decay), float(1.0 - h.lr * h.weight_decay), float(h.l2sp_alpha), float(h.l2sp_beta),
              h.decoupled && h.weight_decay != 0, !h.decoupled && h.weight_decay != 0,
              h.l2sp_alpha != 0 || h.l2sp_beta != 0, h.amsgrad};
  SPDLAB_LAUNCH(adam_kernel, grid_for(*this, n, kThreads), kThreads, 0, stream_, p, g, m, v, vmax, anchor, n,
                adam_coef(h), f);
}

void CudaKernels::spd_adam_pass(float* p, const float* g, float* m, float* v, const float* anchor, int64_t n,
                                const kernels::AdamStep& h, kernels::SpdSums* sums) {
  if (n == 0) {
    *sums = {};
    return;
  }
  if (!spd_totals_) spd_totals_ = static_cast<double*>(allocate(kSpdSlots * 3 * sizeof(double)));
  if (spd_pending_.size() == kSpdSlots) synchronize();  // every slot is taken: collect them, then reuse
  unsigned blocks = spd_blocks(n);
  double* part = static_cast<double*>(scratch(size_t(blocks) * 3 * sizeof(double)));
  SPDLAB_LAUNCH(spd_adam_kernel, blocks, kThreads, kRedBytes, stream_, p, g, m, v, anchor, n, adam_coef(h), part);
  SPDLAB_LAUNCH(sum_parts_kernel, 1, kThreads, kRedBytes, stream_, static_cast<const double*>(part), int64_t(blocks),
                spd_totals_ + 3 * spd_pending_.size());
  spd_pending_.push_back(sums);
}

void CudaKernels::spd_project(float* p, const float* anchor, int64_t n, float scale) {
  if (n == 0) return;
  SPDLAB_LAUNCH(spd_project_kernel, grid_for(*this, n, kThreads), kThreads, 0, stream_, p, anchor, n, scale);
}

}  // namespace spdlab::cuda
