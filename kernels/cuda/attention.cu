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

// Row `row` of a (b, h) slice times `scale`, into registers; zeros past D and for a thread without a row.
template <typename T, int DMAX>
__device__ __forceinline__ void load_row(T (&dst)[DMAX], const T* src, Str3 s, int64_t b, int64_t h, int64_t row,
                                         bool live, int64_t D, T scale) {
  for (int d = 0; d < DMAX; ++d) dst[d] = live && d < D ? src[b * s.b + h * s.h + row * s.r + d] * scale : T(0);
}
template <typename T, int DMAX>
__device__ __forceinline__ void store_row(T* dst, Str3 s, int64_t b, int64_t h, int64_t row, const T (&src)[DMAX],
                                          int64_t D, T scale) {
  for (int d = 0; d < DMAX && d < D; ++d) dst[b * s.b + h * s.h + row * s.r + d] = src[d] * scale;
}

// Streams the key and value rows of a (b, h) slice through shared memory, a tile at a time; for a thread
// with a query row (live), calls f(k_row, v_row) on each key row in order. Every thread of the block takes
// part in the loads and barriers.
template <typename T, typename F>
__device__ __forceinline__ void for_each_kv_row(T* kt, T* vt, const T* k, Str3 ks, const T* v, Str3 vs, int64_t b,
                                                int64_t h, const Dims& dm, bool live, F&& f) {
  for (int64_t j0 = 0; j0 < dm.M; j0 += dm.tile) {
    load_tile(kt, k, ks, b, h, j0, dm.M, dm.tile, dm.D);
    load_tile(vt, v, vs, b, h, j0, dm.M, dm.tile, dm.D);
    __syncthreads();
    int64_t rows = dm.M - j0 < dm.tile ? dm.M - j0 : dm.tile;
    if (live)
      for (int64_t r = 0; r < rows; ++r) f(kt + r * dm.D, vt + r * dm.D);
    __syncthreads();  // the tile is read by every thread before the next one overwrites it
  }
}

template <typename T, int DMAX>
__global__ void attention_fwd_kernel(const T* q, Str3 qs, const T* k, Str3 ks, const T* v, Str3 vs, T* out, Str3 os,
                                     T* lse, Dims dm, T scale) {
  // out [B, H, N, D] = softmax(q k^T scale) v; lse [B, H, N] = the log-sum-exp of each query row's scores (lse
  // null: no backward follows)
  T* kt = shared_mem<T>();
  T* vt = kt + dm.tile * dm.D;
  const int64_t b = blockIdx.z, h = blockIdx.y, n = blockIdx.x * int64_t(kRows) + threadIdx.x, D = dm.D;
  const bool live = n < dm.N;
  T qr[DMAX], acc[DMAX] = {};
  load_row(qr, q, qs, b, h, n, live, D, scale);
  T mx = -INFINITY, sum = T(0);
  for_each_kv_row(kt, vt, k, ks, v, vs, b, h, dm, live, [&](const T* kr, const T* vr) {
    T s = T(0);
    for (int d = 0; d < DMAX && d < D; ++d) s += qr[d] * kr[d];
    if (s > mx) {  // a new maximum rescales what was summed so far
      T c = exp(mx - s);
      sum *= c;
      for (int d = 0; d < DMAX; ++d) acc[d] *= c;
      mx = s;
    }
    T p = exp(s - mx);
    sum += p;
    for (int d = 0; d < DMAX && d < D; ++d) acc[d] += p * vr[d];
  });
  if (live) {
    store_row(out, os, b, h, n, acc, D, T(1) / sum);
    if (lse) lse[(b * gridDim.y + h) * dm.N + n] = mx + log(sum);
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
  T qr[DMAX], dor[DMAX], acc[DMAX] = {};
  load_row(qr, q, qs, b, h, n, live, D, scale);
  load_row(dor, dout, ds, b, h, n, live, D, T(1));
  const T l = live ? lse[(b * gridDim.y + h) * dm.N + n] : T(0);
  T di = T(0);
  for (int pass = 0; pass < 2; ++pass) {  // pass 0 sums D_i, pass 1 accumulates dq with it
    for_each_kv_row(kt, vt, k, ks, v, vs, b, h, dm, live, [&](const T* kr, const T* vr) {
      T s = T(0), dp = T(0);
      for (int d = 0; d < DMAX && d < D; ++d) {
        s += qr[d] * kr[d];
        dp += dor[d] * vr[d];
      }
      T p = exp(s - l);
      if (pass == 0) {
        di += p * dp;
      } else {
        T g = p * (dp - di) * scale;
        for (int d = 0; d < DMAX && d < D; ++d) acc[d] += g * kr[d];
      }
    });
  }
  if (live) {
    store_row(dq, dqs, b, h, n, acc, D, T(1));
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
  T kr[DMAX], vr[DMAX], dka[DMAX] = {}, dva[DMAX] = {};
  load_row(kr, k, ks, b, h, j, live, D, scale);
  load_row(vr, v, vs, b, h, j, live, D, T(1));
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
    store_row(dk, dks, b, h, j, dka, D, T(1));
    store_row(dv, dvs, b, h, j, dva, D, T(1));
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
