// What the C++ benchmarks share: a millisecond clock, the median/min of a run of timings, and a ViT config
// with its batch size.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
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

struct BenchConfig {
  models::ViTConfig vit;
  int64_t batch;
};

}  // namespace spdlab::bench
