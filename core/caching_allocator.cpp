// The caching allocator shared by the CPU (core/storage.cpp) and the GPU (kernels/cuda/backend.cu).
#include "core/caching_allocator.h"

#include <algorithm>

namespace spdlab {

size_t CachingAllocator::size_class(size_t n) const {
  n = std::max<size_t>(n, 1);
  if (n <= sys_.min_block) return sys_.min_block;
  size_t p = 1;
  while ((p << 1) <= n) p <<= 1;
  size_t step = std::max<size_t>(p / 8, sys_.granularity);
  return (n + step - 1) / step * step;
}

void CachingAllocator::note_alloc(size_t size) {
  stats_.current += size;
  stats_.peak = std::max(stats_.peak, stats_.current);
}

void* CachingAllocator::try_allocate(size_t nbytes) {
  size_t size = size_class(nbytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(size);
    if (it != free_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      stats_.cached -= size;
      note_alloc(size);
      return p;
    }
  }
  void* p = sys_.alloc(size);
  if (!p) {
    release_cached();
    p = sys_.alloc(size);
  }
  if (!p) return nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.device_mallocs;
  note_alloc(size);
  return p;
}

void CachingAllocator::deallocate(void* p, size_t nbytes) noexcept {
  size_t size = size_class(nbytes);
  std::lock_guard<std::mutex> lock(mu_);
  stats_.current -= size;
  if (stats_.cached + size > sys_.max_cached) {
    sys_.free(p);
    return;
  }
  try {
    free_[size].push_back(p);
    stats_.cached += size;
  } catch (...) {
    sys_.free(p);  // no memory to remember the block: return it rather than throw from a destructor
  }
}

void CachingAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [size, blocks] : free_)
    for (void* p : blocks) sys_.free(p);
  free_.clear();
  stats_.cached = 0;
}

kernels::MemoryStats CachingAllocator::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak = stats_.current;
}

}  // namespace spdlab
