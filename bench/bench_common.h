// What the C++ benchmarks share: a millisecond clock, the median/min of a run of timings, and a ViT config
// with its batch size.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "models/vit.h"

namespace spdlab::bench {

inline double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Timing {
  double median, min;  // the median is sorted[n / 2], the element torch's scripts pick with median_high
};

inline Timing summarize(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  return {t[t.size() / 2], t.front()};
}

// Median and min ms of `iters` timed runs of f, after 3 untimed ones (scratch buffers, page faults).
template <class F>
Timing time_runs(F&& f, int iters) {
  for (int i = 0; i < 3; ++i) f();
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    const double t0 = now_ms();
    f();
    ms.push_back(now_ms() - t0);
  }
  return summarize(ms);
}

// The kernel benchmarks' one flag, --iters N: N (`fallback` without the flag), or 0 after saying on stderr what
// was expected (an unknown argument, or N below 1).
inline int iters_flag(int argc, char** argv, const char* program, int fallback) {
  int iters = fallback;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--iters") == 0 && i + 1 < argc) {
      iters = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--iters N]\n", program);
      return 0;
    }
  }
  if (iters < 1) std::fprintf(stderr, "%s: --iters must be at least 1\n", program);
  return std::max(iters, 0);
}

struct BenchConfig {
  models::ViTConfig vit;
  int64_t batch;
};

}  // namespace spdlab::bench
