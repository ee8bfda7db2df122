// N-d iteration for the CPU's strided kernels (elementwise, where, copy): up to four operands' strides over
// one shape, with adjacent dims merged wherever every operand is contiguous across them, so a contiguous
// tensor of any rank is walked as one row (cut into spans of columns to share it among the threads).
#pragma once
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "core/check.h"
#include "kernels/cpu/parallel.h"

namespace spdlab::cpu {

// The strides of up to four operands (dims of size 1 dropped, mergeable dims merged) and the shape they share.
struct Iter {
  int ndim = 0;
  int64_t shape[16];
  int64_t strides[4][16];
  int nops = 0;

  Iter(const int64_t* shp, int nd, std::initializer_list<const int64_t*> ops) {
    SPDLAB_CHECK(nd <= 16, "kernels: at most 16 dims are supported, got ", nd);
    nops = static_cast<int>(ops.size());
    for (int d = 0; d < nd; ++d) {
      if (shp[d] == 1) continue;  // size-1 dims never move an index
      shape[ndim] = shp[d];
      int k = 0;
      for (const int64_t* st : ops) strides[k++][ndim] = st[d];
      ++ndim;
    }
    // merge dim i into i+1 (from the back) when stride[i] == stride[i+1] * shape[i+1] for all operands
    int out = 0;
    for (int d = 0; d < ndim; ++d) {
      if (out > 0) {
        bool ok = true;
        for (int k = 0; k < nops; ++k)
          if (strides[k][out - 1] != strides[k][d] * shape[d]) ok = false;
        if (ok) {
          shape[out - 1] *= shape[d];
          for (int k = 0; k < nops; ++k) strides[k][out - 1] = strides[k][d];
          continue;
        }
      }
      shape[out] = shape[d];
      for (int k = 0; k < nops; ++k) strides[k][out] = strides[k][d];
      ++out;
    }
    ndim = out;
    if (ndim == 0) {  // a scalar
      ndim = 1;
      shape[0] = 1;
      for (int k = 0; k < nops; ++k) strides[k][0] = 0;
    }
  }

  int64_t inner() const { return shape[ndim - 1]; }
  int64_t rows() const {
    int64_t r = 1;
    for (int d = 0; d < ndim - 1; ++d) r *= shape[d];
    return r;
  }
  // Element offsets of each operand at the start of `row`.
  void row_offsets(int64_t row, int64_t* off) const {
    for (int k = 0; k < nops; ++k) off[k] = 0;
    for (int d = ndim - 2; d >= 0; --d) {
      int64_t i = row % shape[d];
      row /= shape[d];
      for (int k = 0; k < nops; ++k) off[k] += i * strides[k][d];
    }
  }
  // f(row, off, j0, j1) over columns [j0, j1) of every row, in parallel (sized by the total element count), with
  // `off` holding each operand's element offset at the start of the row. Rows too few to share among the threads
  // (a contiguous tensor is a single row) are cut into spans of columns: each element is computed alone, so the
  // cut changes no value. Whole rows ran a contiguous add of 6400 x 192 floats on one thread.
  template <typename F>
  void for_each_span(F&& f) const {
    const int64_t n = rows(), in = inner();
    int64_t spans = 1;
    if (n < 4 * get_num_threads() && in >= 2 * kParallelGrain)
      spans = std::min<int64_t>(in / kParallelGrain, 4 * get_num_threads());
    const int64_t width = (in + spans - 1) / spans;  // columns per span, but the last
    const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(width, 1));
    parallel_for(n * spans, grain, [&](int64_t p0, int64_t p1) {
      int64_t off[4];
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t r = p / spans, j0 = (p % spans) * width;
        row_offsets(r, off);
        f(r, off, j0, std::min(in, j0 + width));
      }
    });
  }
};

// Row-major strides of a contiguous tensor of `shape`.
inline std::vector<int64_t> contiguous_strides(const int64_t* shape, int ndim) {
  std::vector<int64_t> st(ndim);
  int64_t s = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    st[d] = s;
    s *= shape[d];
  }
  return st;
}
}  // namespace spdlab::cpu
