// Reductions: sum and max over one axis of [outer, r, inner], and max's backward. Sums accumulate in double in
// fixed blocks, added in block order, so the result does not depend on the thread count. Compiled once per
// instruction set (kernels/cpu/variant.h).
#ifndef SPDLAB_CPU_VARIANT
#error "kernels/cpu/variant.h includes this file, inside an instruction set's namespace; include that instead"
#endif

// Rows per block where a kernel sums over rows into per-column partials: fixed, so that the partials, and
// the order they are added in, depend only on the shape and never on the thread count.
inline int64_t row_block(int64_t cols) { return std::max<int64_t>(8, 16384 / std::max<int64_t>(cols, 1)); }

template <typename T>
void reduce_t(Reduce op, const T* x, T* y, int64_t outer, int64_t r, int64_t inner, int64_t* argmax) {
  if (inner == 1) {
    parallel_for(outer, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(r, 1)), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        const T* px = x + o * r;
        if (op == Reduce::sum) {
          double acc = 0;
          _Pragma("omp simd reduction(+ : acc)") for (int64_t j = 0; j < r; ++j) acc += px[j];
          y[o] = static_cast<T>(acc);
        } else {
          int64_t best = 0;
          for (int64_t j = 1; j < r; ++j)
            if (px[j] > px[best] || std::isnan(px[j])) best = j;
          y[o] = px[best];
          if (argmax) argmax[o] = best;
        }
      }
    });
    return;
  }
  if (outer == 0 || inner == 0) return;  // nothing to write
  if (op == Reduce::sum) {
    // Column sums: fixed blocks of rows each sum into their own partials, added afterwards in block order.
    const int64_t rb = row_block(inner), nblk = (r + rb - 1) / rb;
    // Each block fills its own partials before summing into them: left uninitialized here, since zeroing them
    // all is a pass on one thread while the others wait.
    auto part = std::make_unique_for_overwrite<double[]>(outer * nblk * inner);
    parallel_for(outer * nblk, std::max<int64_t>(1, kParallelGrain / (rb * inner)), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        int64_t o = t / nblk, blk = t % nblk;
        double* acc = part.get() + t * inner;
        std::fill(acc, acc + inner, 0.0);
        for (int64_t j = blk * rb; j < std::min(r, (blk + 1) * rb); ++j) {
          const T* px = x + (o * r + j) * inner;
          SPDLAB_SIMD for (int64_t c = 0; c < inner; ++c) acc[c] += px[c];
        }
      }
    });
    parallel_for(outer * inner, kParallelGrain, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        int64_t o = t / inner, c = t % inner;
        double acc = 0;
        for (int64_t blk = 0; blk < nblk; ++blk) acc += part[(o * nblk + blk) * inner + c];
        y[t] = static_cast<T>(acc);
      }
    });
    return;
  }
  // Column maxima of [r, inner] blocks: parallel over (outer, column chunk), each column scanned in row order.
  const int64_t cchunk = 256;
  int64_t nchunks = (inner + cchunk - 1) / cchunk;
  parallel_for(outer * nchunks, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(r * cchunk, 1)),
               [&](int64_t b, int64_t e) {
                 std::vector<int64_t> best(cchunk);
                 for (int64_t t = b; t < e; ++t) {
                   int64_t o = t / nchunks, c0 = (t % nchunks) * cchunk, c1 = std::min(inner, c0 + cchunk);
                   int64_t w = c1 - c0;
                   const T* px = x + o * r * inner + c0;
                   std::fill(best.begin(), best.begin() + w, 0);
                   for (int64_t j = 1; j < r; ++j)
                     for (int64_t c = 0; c < w; ++c) {
                       T v = px[j * inner + c];
                       if (v > px[best[c] * inner + c] || std::isnan(v)) best[c] = j;
                     }
                   for (int64_t c = 0; c < w; ++c) {
                     y[o * inner + c0 + c] = px[best[c] * inner + c];
                     if (argmax) argmax[o * inner + c0 + c] = best[c];
                   }
                 }
               });
}

template <typename T>
void max_bwd_t(const T* dy, const int64_t* argmax, T* dx, int64_t outer, int64_t r, int64_t inner) {
  std::memset(dx, 0, sizeof(T) * outer * r * inner);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < inner; ++c) dx[(o * r + argmax[o * inner + c]) * inner + c] = dy[o * inner + c];
}