// Fused attention on the GPU in the FlashAttention manner (Dao et al. 2022; Dao 2023): keys and values
// stream through shared memory in tiles, each thread owns one query row and keeps a running maximum and sum
// (the online softmax), so no N x M score matrix is ever written to global memory. The forward pass saves
// one log-sum-exp per query row; the backward pass recomputes the probabilities from it:
//   pass 1 (one thread per query row): D_i = sum_j P_ij (dO_i . v_j), then dq_i = scale sum_j P_ij (dO_i . v_j - D_i) k_j
//   pass 2 (one thread per key row):   dv_j = sum_i P_ij dO_i,  dk_j = scale sum_i P_ij (dO_i . v_j - D_i) q_i
// Each output row is written by one thread, in a fixed order: no atomics. The reference is
// attention_reference in tests (matmul, softmax, matmul) and the CPU kernels.
#include <cmath>

#include "kernels/cuda/backend.h"
#include "kernels/cuda/common.cuh"

namespace spdlab::cuda {
namespace {

constexpr int kRows = 64;  // query rows (forward, pass 1) or key rows (pass 2) per block, one per thread

struct Str3 {  // element strides of (batch, head, row); the head dim is contiguous
  int64_t b, h, r;
};
Str3 str3(const int64_t* s) { return {s[0], s[1], s[2]}; }

struct Dims {
  int64_t N, M, D;
  int tile;  // rows per shared-memory tile
};

// Copies rows [r0, r0 + tile) of a (b, h) slice into shared memory as [tile][D]; rows past `rows` are zero.
template <typename T>
__device__ __forceinline__ void load_tile(T* dst, const T* src, Str3 s, int64_t b, int64_t h, int64_t r0,
                                          int64_t rows, int tile, int64_t D) {
  for (int64_t idx = threadIdx.x; idx < tile * D; idx += blockDim.x) {
    int64_t r = idx / D, d = idx % D;
    dst[idx] = r0 + r < rows ? src[b * s.b + h * s.h + (r0 + r) * s.r + d] : T(0);
  }
}

template <typename T, int DMAX>
__global__ void attention_fwd_kernel(const T* q, Str3 qs, const T* k, Str3 ks, const T* v, Str3 vs, T* out, Str3 os,
                                     T* lse, Dims dm, T scale) {
  // out [B, H, N, D] = softmax(q k^T scale) v; lse [B, H, N] = the log-sum-exp of each query row's scores
  T* kt = shared_mem<T>();
  T* vt = kt + dm.tile * dm.D;
  const int64_t b = blockIdx.z, h = blockIdx.y, n = blockIdx.x * int64_t(kRows) + threadIdx.x, D = dm.D;
  const bool live = n < dm.N;
  T qr[DMAX], acc[DMAX];
  for (int d = 0; d < DMAX; ++d) {
    qr[d] = live && d < D ? q[b * qs.b + h * qs.h + n * qs.r + d] * scale : T(0);
    acc[d] = T(0);
  }
  T mx = -INFINITY, sum = T(0);
  for (int64_t j0 = 0; j0 < dm.M; j0 += dm.tile) {
    load_tile(kt, k, ks, b, h, j0, dm.M, dm.tile, D);
    load_tile(vt, v, vs, b, h, j0, dm.M, dm.tile, D);
    __syncthreads();
    int64_t rows = dm.M - j0 < dm.tile ? dm.M - j0 : dm.tile;
    if (live) {
      for (int64_t r = 0; r < rows; ++r) {
        T s = T(0);
        for (int d = 0; d < DMAX && d < D; ++d) s += qr[d] * kt[r * D + d];
        if (s > mx) {  // a new maximum rescales what was summed so far
          T c = exp(mx - s);
          sum *= c;
          for (int d = 0; d < DMAX; ++d) acc[d] *= c;
          mx = s;
        }
        T p = exp(s - mx);
        sum += p;
        for (int d = 0; d < DMAX && d < D; ++d) acc[d] += p * vt[r * D + d];
      }
    }
    __syncthreads();  // the tile is read by every thread before the next one overwrites it
  }
  if (live) {
    T inv = T(1) / sum;
    for (int d = 0; d < DMAX && d < D; ++d) out[b * os.b + h * os.h + n * os.r + d] = acc[d] * inv;
    lse[(b * gridDim.y + h) * dm.N + n] = mx + log(sum);
  }
}

template <typename T, int DMAX>
__global__ void attention_bwd_dq_kernel(const T* q, Str3 qs, const T* k, Str3 ks, const T* v, Str3 vs, const T* lse,
                                        const T* dout, Str3 ds, T* dq, Str3 dqs, T* drow, Dims dm, T scale) {
  // dq [B, H, N, D]; drow [B, H, N] = D_i = sum_j P_ij (dO_i . v_j), for pass 2
  T* kt = shared_mem<T>();
  T* vt = kt + dm.tile * dm.D;
  const int64_t b = blockIdx.z, h = blockIdx.y, n = blockIdx.x * int64_t(kRows) + threadIdx.x, D = dm.D;
  const bool live = n < dm.N;
  T qr[DMAX], dor[DMAX], acc[DMAX];
  for (int d = 0; d < DMAX; ++d) {
    qr[d] = live && d < D ? q[b * qs.b + h * qs.h + n * qs.r + d] * scale : T(0);
    dor[d] = live && d < D ? dout[b * ds.b + h * ds.h + n * ds.r + d] : T(0);
    acc[d] = T(0);
  }
  const T l = live ? lse[(b * gridDim.y + h) * dm.N + n] : T(0);
  T di = T(0);
  for (int pass = 0; pass < 2; ++pass) {  // pass 0 sums D_i, pass 1 accumulates dq with it
    for (int64_t j0 = 0; j0 < dm.M; j0 += dm.tile) {
      load_tile(kt, k, ks, b, h, j0, dm.M, dm.tile, D);
      load_tile(vt, v, vs, b, h, j0, dm.M, dm.tile, D);
      __syncthreads();
      int64_t rows = dm.M - j0 < dm.tile ? dm.M - j0 : dm.tile;
      if (live) {
        for (int64_t r = 0; r < rows; ++r) {
          T s = T(0), dp = T(0);
          for (int d = 0; d < DMAX && d < D; ++d) {
            s += qr[d] * kt[r * D + d];
            dp += dor[d] * vt[r * D + d];
          }
          T p = exp(s - l);
          if (pass == 0) {
            di += p * dp;
          } else {
            T g = p * (dp - di) * scale;
            for (int d = 0; d < DMAX && d < D; ++d) acc[d] += g * kt[r * D + d];
          }
        }
      }
      __syncthreads();
    }
  }
  if (live) {
    for (int d = 0; d < DMAX && d < D; ++d) dq[b * dqs.b + h * dqs.h + n * dqs.r + d] = acc[d];
    drow[(b * gridDim.y + h) * dm.N + n] = di;
  }
}

template <typename T, int DMAX>
__global__ void attention_bwd_dkv_kernel(const T* q, Str3 qs, const T* k, Str3 ks, const T* v, Str3 vs, const T* lse,
                                         const T* drow, const T* dout, Str3 ds, T* dk, Str3 dks, T* dv, Str3 dvs,
                                         Dims dm, T scale) {
  // dk, dv [B, H, M, D]: one thread per key row, the query rows streamed through shared memory
  T* qt = shared_mem<T>();
  T* dot = qt + dm.tile * dm.D;
  T* lt = dot + dm.tile * dm.D;
  T* dt = lt + dm.tile;
  const int64_t b = blockIdx.z, h = blockIdx.y, j = blockIdx.x * int64_t(kRows) + threadIdx.x, D = dm.D;
  const bool live = j < dm.M;
  T kr[DMAX], vr[DMAX], dka[DMAX], dva[DMAX];
  for (int d = 0; d < DMAX; ++d) {
    kr[d] = live && d < D ? k[b * ks.b + h * ks.h + j * ks.r + d] * scale : T(0);
    vr[d] = live && d < D ? v[b * vs.b + h * vs.h + j * vs.r + d] : T(0);
    dka[d] = dva[d] = T(0);
  }
  const int64_t bh = b * gridDim.y + h;
  for (int64_t i0 = 0; i0 < dm.N; i0 += dm.tile) {
    load_tile(qt, q, qs, b, h, i0, dm.N, dm.tile, D);
    load_tile(dot, dout, ds, b, h, i0, dm.N, dm.tile, D);
    for (int64_t r = threadIdx.x; r < dm.tile; r += blockDim.x) {
      lt[r] = i0 + r < dm.N ? lse[bh * dm.N + i0 + r] : T(0);
      dt[r] = i0 + r < dm.N ? drow[bh * dm.N + i0 + r] : T(0);
    }
    __syncthreads();
    int64_t rows = dm.N - i0 < dm.tile ? dm.N - i0 : dm.tile;
    if (live) {
      for (int64_t r = 0; r < rows; ++r) {
        T s = T(0), dp = T(0);
        for (int d = 0; d < DMAX && d < D; ++d) {
          s += qt[r * D + d] * kr[d];
          dp += dot[r * D + d] * vr[d];
        }
        T p = exp(s - lt[r]);
        T g = p * (dp - dt[r]) * scale;
        for (int d = 0; d < DMAX && d < D; ++d) {
          dva[d] += p * dot[r * D + d];
          dka[d] += g * qt[r * D + d];
        }
      }
    }
    __syncthreads();
  }
  if (live) {
    for (int d = 0; d < DMAX && d < D; ++d) {
      dk[b * dks.b + h * dks.h + j * dks.r + d] = dka[d];
      dv[b * dvs.b + h * dvs.h + j * dvs.r + d] = dva[d];
    }
  }
}

// Rows per shared tile: two [tile, D] operands within 32 KiB, at most 64 rows.
int tile_rows(int64_t D, size_t es) {
  int64_t t = static_cast<int64_t>((32 * 1024) / (2 * D * es + 2 * es));
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(t, 64)));
}

// Calls f(T{}, DMAX constant) for the smallest register width that holds D.
template <typename F>
void dispatch_head_dim(DType dt, int64_t D, F&& f) {
  SPDLAB_CHECK(D >= 1 && D <= 128, "attention: the CUDA kernel takes head dims 1 to 128, got ", D);
  float_dispatch(dt, "attention", [&](auto t) {
    using T = decltype(t);
    if (D <= 32) f(T{}, std::integral_constant<int, 32>{});
    else if (D <= 64) f(T{}, std::integral_constant<int, 64>{});
    else f(T{}, std::integral_constant<int, 128>{});
  });
}

}  // namespace

void CudaKernels::attention_fwd(DType dt, int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, const void* q,
                                const int64_t* q_str, const void* k, const int64_t* k_str, const void* v,
                                const int64_t* v_str, void* out, const int64_t* out_str, void* saved, double scale) {
  if (B * H * N == 0) return;
  SPDLAB_CHECK(M >= 1, "attention: no keys to attend over (M = 0)");
  SPDLAB_CHECK(B <= 65535 && H <= 65535, "attention: the CUDA kernel takes at most 65535 batches and heads, got ", B,
               " and ", H);
  dispatch_head_dim(dt, D, [&](auto t, auto dmax) {
    using T = decltype(t);
    Dims dm{N, M, D, tile_rows(D, sizeof(T))};
    dim3 grid(static_cast<unsigned>((N + kRows - 1) / kRows), static_cast<unsigned>(H), static_cast<unsigned>(B));
    size_t shared = size_t(2) * dm.tile * D * sizeof(T);
    SPDLAB_LAUNCH((attention_fwd_kernel<T, decltype(dmax)::value>), grid, kRows, shared, stream_,
                  static_cast<const T*>(q), str3(q_str), static_cast<const T*>(k), str3(k_str), static_cast<const T*>(v),
                  str3(v_str), static_cast<T*>(out), str3(out_str), static_cast<T*>(saved), dm, T(scale));
  });
}

void CudaKernels::attention_bwd(DType dt, int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, const void* q,
                                const int64_t* q_str, const void* k, const int64_t* k_str, const void* v,
                                const int64_t* v_str, const void* saved, const void* dout, const int64_t* dout_str,
                                void* dq, const int64_t* dq_str, void* dk, const int64_t* dk_str, void* dv,
                                const int64_t* dv_str, double scale) {
  if (B * H * (N + M) == 0) return;
  dispatch_head_dim(dt, D, [&](auto t, auto dmax) {
    using T = decltype(t);
    constexpr int DM = decltype(dmax)::value;
    Dims dm{N, M, D, tile_rows(D, sizeof(T))};
    T* drow = static_cast<T*>(scratch(size_t(B * H * N) * sizeof(T)));
    size_t shared = size_t(2) * dm.tile * D * sizeof(T) + size_t(2) * dm.tile * sizeof(T);
    dim3 gq(static_cast<unsigned>((N + kRows - 1) / kRows), static_cast<unsigned>(H), static_cast<unsigned>(B));
    SPDLAB_LAUNCH((attention_bwd_dq_kernel<T, DM>), gq, kRows, shared, stream_, static_cast<const T*>(q), str3(q_str),
                  static_cast<const T*>(k), str3(k_str), static_cast<const T*>(v), str3(v_str),
                  static_cast<const T*>(saved), static_cast<const T*>(dout), str3(dout_str), static_cast<T*>(dq),
                  str3(dq_str), drow, dm, T(scale));
    dim3 gk(static_cast<unsigned>((M + kRows - 1) / kRows), static_cast<unsigned>(H), static_cast<unsigned>(B));
    SPDLAB_LAUNCH((attention_bwd_dkv_kernel<T, DM>), gk, kRows, shared, stream_, static_cast<const T*>(q), str3(q_str),
                  static_cast<const T*>(k), str3(k_str), static_cast<const T*>(v), str3(v_str),
                  static_cast<const T*>(saved), static_cast<const T*>(drow), static_cast<const T*>(dout),
                  str3(dout_str), static_cast<T*>(dk), str3(dk_str), static_cast<T*>(dv), str3(dv_str), dm, T(scale));
  });
}

}  // namespace spdlab::cuda
