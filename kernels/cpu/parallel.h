// OpenMP helpers for the CPU kernels: loops go parallel only above a size threshold, and reductions
// use fixed chunks summed in order, so results do not depend on the thread count.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "kernels/threads.h"

namespace spdlab::cpu {

constexpr int64_t kParallelGrain = 32768;  // below this many elements a loop stays on one thread

template <typename F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  // f(begin, end) over [0, n)
  if (n <= grain || get_num_threads() <= 1 || omp_in_parallel()) {
    if (n > 0) f(int64_t(0), n);
    return;
  }
  int64_t chunks = std::min<int64_t>((n + grain - 1) / grain, get_num_threads() * 4);
#pragma omp parallel for schedule(static) num_threads(get_num_threads())
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t b = n * c / chunks, e = n * (c + 1) / chunks;
    f(b, e);
  }
}

// Runs f(i) for i in [0, n) where each i is one product of `work_each` multiply-adds: one product per thread
// when they are small, or serially when each is big enough for BLAS's own threads.
template <typename F>
void run_pairs(int64_t n, int64_t work_each, F&& f) {
  if (n >= 2 && work_each < (1 << 18) && get_num_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel for schedule(static) num_threads(get_num_threads())
    for (int64_t i = 0; i < n; ++i) f(i);
  } else {
    for (int64_t i = 0; i < n; ++i) f(i);
  }
}

// Runs f(i) for i in [0, n) independent products: with at least as many products as threads, each thread runs
// whole products (a product inside the parallel region runs on one thread), else one after another.
template <typename F>
void run_products(int64_t n, F&& f) {
  const int threads = get_num_threads();
  if (n >= 2 && threads > 1 && n >= threads && !omp_in_parallel()) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t i = 0; i < n; ++i) f(i);
  } else {
    for (int64_t i = 0; i < n; ++i) f(i);
  }
}

}  // namespace spdlab::cpu
