// The CPU kernels compiled once (kernels/cpu/common.h): memory, copies, fills, OpenBLAS's products, gathers
// and dropout masks. None of them gains from AVX2 code of our own: copies are bound by memory, and OpenBLAS
// chooses its kernels for the CPU at run time.
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <exception>

#include "core/allocator.h"
#include "kernels/cpu/common.h"
#include "kernels/cpu/iter.h"
#include "kernels/cpu/parallel.h"
#include "kernels/philox.h"

namespace spdlab::cpu {

namespace {

template <typename S, typename D>
void copy_loop(const Iter& it, const S* src, D* dst) {
  int64_t ss = it.strides[0][it.ndim - 1], sd = it.strides[1][it.ndim - 1];
  it.for_each_span([&](int64_t, const int64_t* off, int64_t j0, int64_t j1) {
    const S* ps = src + off[0];
    D* pd = dst + off[1];
    if (ss == 1 && sd == 1) for (int64_t i = j0; i < j1; ++i) pd[i] = static_cast<D>(ps[i]);
    else for (int64_t i = j0; i < j1; ++i) pd[i * sd] = static_cast<D>(ps[i * ss]);
  });
}

template <typename S>
void copy_to(const Iter& it, const S* src, DType dst_dt, void* dst) {
  switch (dst_dt) {
    case DType::f32: copy_loop(it, src, static_cast<float*>(dst)); break;
    case DType::f64: copy_loop(it, src, static_cast<double*>(dst)); break;
    case DType::i64: copy_loop(it, src, static_cast<int64_t*>(dst)); break;
  }
}
}  // namespace

void blas_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
              B, ldb, beta, C, ldc);
}

void blas_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
               const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
              B, ldb, beta, C, ldc);
}

void* CpuKernelsShared::allocate(size_t nbytes) { return host_allocate(nbytes); }
void CpuKernelsShared::deallocate(void* p, size_t nbytes) noexcept { host_deallocate(p, nbytes); }
void CpuKernelsShared::copy_from_host(void* dst, const void* src, size_t nbytes) {
  if (nbytes) std::memcpy(dst, src, nbytes);
}
void CpuKernelsShared::copy_to_host(void* dst, const void* src, size_t nbytes) {
  if (nbytes) std::memcpy(dst, src, nbytes);
}
kernels::MemoryStats CpuKernelsShared::memory_stats() { return host_memory_stats(); }
void CpuKernelsShared::reset_peak_memory() { host_reset_peak_memory(); }

// parallel.h's run_products: with at least as many pieces as threads, each thread takes the next piece when done
// with one (pieces may differ in size: a batch's last chunk), and every kernel inside sees omp_in_parallel() and
// runs on the calling thread (OpenMP OpenBLAS does the same); else the pieces run in turn. An exception may not
// leave an OpenMP region, so each piece's is caught and the first rethrown once all have run.
void CpuKernelsShared::run_apart(int64_t n, const std::function<void(int64_t)>& f) {
  std::exception_ptr first;
  run_products(n, [&](int64_t i) {
    try {
      f(i);
    } catch (...) {
#pragma omp critical(spdlab_run_apart)
      if (!first) first = std::current_exception();
    }
  });
  if (first) std::rethrow_exception(first);
}

void CpuKernelsShared::dropout_mask(DType dt, void* mask, int64_t n, double p, uint64_t seed, uint64_t offset) {
  double keep = 1.0 / (1.0 - p);
  SPDLAB_FLOAT_DISPATCH(dt, "dropout_mask", parallel_for(n, kParallelGrain, [&](int64_t b, int64_t e) {
    T* m = mp<T>(mask);
    for (int64_t i = b; i < e; ++i) m[i] = philox::uniform(seed, offset + i) >= p ? T(keep) : T(0);
  }));
}

void CpuKernelsShared::copy_strided(DType src_dt, kernels::Strided src, DType dst_dt, void* dst,
                                    const int64_t* dst_strides, const int64_t* shape, int ndim) {
  Iter it(shape, ndim, {src.strides, dst_strides});
  switch (src_dt) {
    case DType::f32: copy_to(it, static_cast<const float*>(src.data), dst_dt, dst); break;
    case DType::f64: copy_to(it, static_cast<const double*>(src.data), dst_dt, dst); break;
    case DType::i64: copy_to(it, static_cast<const int64_t*>(src.data), dst_dt, dst); break;
  }
}

// On all threads: on one, a large fill kept the others waiting (seen in a vit-fmnist training step's profile).
namespace {
template <typename T>
void fill_n_parallel(T* dst, int64_t n, T v) {
  parallel_for(n, kParallelGrain, [&](int64_t b, int64_t e) { std::fill(dst + b, dst + e, v); });
}
}  // namespace
void CpuKernelsShared::fill(DType dt, void* dst, int64_t n, double v) {
  switch (dt) {
    case DType::f32: fill_n_parallel(static_cast<float*>(dst), n, static_cast<float>(v)); break;
    case DType::f64: fill_n_parallel(static_cast<double*>(dst), n, v); break;
    case DType::i64: fill_n_parallel(static_cast<int64_t*>(dst), n, static_cast<int64_t>(v)); break;
  }
}

void CpuKernelsShared::gemm(DType dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const void* A,
                            int64_t lda, const void* B, int64_t ldb, double beta, void* C, int64_t ldc) {
  if (dt == DType::f32)
    blas_gemm(ta, tb, M, N, K, static_cast<float>(alpha), cp<float>(A), lda, cp<float>(B), ldb,
              static_cast<float>(beta), mp<float>(C), ldc);
  else if (dt == DType::f64)
    blas_gemm(ta, tb, M, N, K, alpha, cp<double>(A), lda, cp<double>(B), ldb, beta, mp<double>(C), ldc);
  else
    SPDLAB_FAIL("gemm: expected f32 or f64, got ", dt);
}

void CpuKernelsShared::gemm_batched(DType dt, int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                                    double alpha, const void* A, int64_t lda, int64_t sa, const void* B, int64_t ldb,
                                    int64_t sb, double beta, void* C, int64_t ldc, int64_t sc) {
  size_t es = dtype_size(dt);
  auto one = [&](int64_t i) {
    gemm(dt, ta, tb, M, N, K, alpha, static_cast<const char*>(A) + i * sa * es, lda,
         static_cast<const char*>(B) + i * sb * es, ldb, beta, static_cast<char*>(C) + i * sc * es, ldc);
  };
  run_pairs(batch, M * N * K, one);
}

// With at least as many products as threads, each thread runs whole products on single-threaded BLAS
// (OpenBLAS runs on one thread inside a parallel region), so no thread waits on another inside a product.
// Every product then runs on one thread whichever thread takes it, so the schedule cannot change the
// results; they may differ in the last bits from the serial branch, as OpenBLAS rounds differently on 1
// and on N threads. Either way a given thread count gives the same bits every run.
void CpuKernelsShared::gemm_group(DType dt, const Gemm* g, int64_t n) {
  run_products(n, [&](int64_t i) {
    gemm(dt, g[i].trans_a, g[i].trans_b, g[i].M, g[i].N, g[i].K, g[i].alpha, g[i].A, g[i].lda, g[i].B, g[i].ldb,
         g[i].beta, g[i].C, g[i].ldc);
  });
}

void CpuKernelsShared::fill_rows(DType dt, void* y, const void* bias, int64_t rows, int64_t cols) {
  SPDLAB_FLOAT_DISPATCH(dt, "fill_rows", {
    T* py = mp<T>(y);
    const T* pb = cp<T>(bias);
    parallel_for(rows, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(cols, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) std::copy(pb, pb + cols, py + r * cols);
    });
  });
}

void CpuKernelsShared::index_select_fwd(DType dt, const void* x, const int64_t* index, void* y, int64_t outer,
                                        int64_t n, int64_t m, int64_t inner) {
  size_t es = dtype_size(dt);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < m; ++j)
      std::memcpy(static_cast<char*>(y) + ((o * m + j) * inner) * es,
                  static_cast<const char*>(x) + ((o * n + index[j]) * inner) * es, inner * es);
}

void CpuKernelsShared::index_select_bwd(DType dt, const void* dy, const int64_t* index, void* dx, int64_t outer,
                                        int64_t n, int64_t m, int64_t inner) {
  SPDLAB_FLOAT_DISPATCH(dt, "index_select_bwd", {
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < m; ++j)
        for (int64_t i = 0; i < inner; ++i)
          mp<T>(dx)[(o * n + index[j]) * inner + i] += cp<T>(dy)[(o * m + j) * inner + i];
  });
}

void CpuKernelsShared::gather_fwd(DType dt, const void* x, const int64_t* index, void* y, int64_t outer, int64_t n,
                                  int64_t m, int64_t inner) {
  SPDLAB_FLOAT_DISPATCH(dt, "gather", {
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < m; ++j)
        for (int64_t i = 0; i < inner; ++i)
          mp<T>(y)[(o * m + j) * inner + i] = cp<T>(x)[(o * n + index[(o * m + j) * inner + i]) * inner + i];
  });
}

void CpuKernelsShared::gather_bwd(DType dt, const void* dy, const int64_t* index, void* dx, int64_t outer, int64_t n,
                                  int64_t m, int64_t inner) {
  SPDLAB_FLOAT_DISPATCH(dt, "gather_bwd", {
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < m; ++j)
        for (int64_t i = 0; i < inner; ++i)
          mp<T>(dx)[(o * n + index[(o * m + j) * inner + i]) * inner + i] += cp<T>(dy)[(o * m + j) * inner + i];
  });
}

}  // namespace spdlab::cpu
