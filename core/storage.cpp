// Storage, and CPU memory for tensors: a caching allocator, so the activations of one training step reuse the
// blocks of the last one instead of page-faulting fresh memory. Blocks are 64-byte aligned. A Storage gets its
// memory from its device's kernels (kernels/kernels.h), which for the CPU is this allocator.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "core/allocator.h"
#include "core/tensor.h"
#include "kernels/kernels.h"

namespace spdlab {
namespace {

// Sizes round up to one of 8 steps per power of two, so a block can serve a slightly smaller request
// while wasting at most 12.5%.
size_t bucket_size(size_t n) {
  if (n <= 256) return 256;
  size_t p = 1;
  while ((p << 1) <= n) p <<= 1;
  size_t step = std::max<size_t>(p / 8, 64);  // aligned_alloc needs a multiple of the alignment
  return (n + step - 1) / step * step;
}

class CachingAllocator {
 public:
  void* allocate(size_t nbytes) {
    size_t size = bucket_size(nbytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= size;
        note_alloc(size);
        return p;
      }
    }
    void* p = std::aligned_alloc(64, size);
    if (!p) {
      release_all();
      p = std::aligned_alloc(64, size);
    }
    SPDLAB_CHECK(p != nullptr, "Storage: out of memory allocating ", nbytes, " bytes");
    std::lock_guard<std::mutex> lock(mu_);
    ++mallocs_;
    note_alloc(size);
    return p;
  }

  kernels::MemoryStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {current_, peak_, cached_, mallocs_};
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    peak_ = current_;
  }

  void deallocate(void* p, size_t nbytes) noexcept {
    size_t size = bucket_size(nbytes);
    std::lock_guard<std::mutex> lock(mu_);
    current_ -= size;
    // Beyond this much idle memory, give blocks back to the system.
    if (cached_ + size > (size_t(2) << 30)) {
      std::free(p);
      return;
    }
    try {
      free_[size].push_back(p);
      cached_ += size;
    } catch (...) {
      std::free(p);  // no memory to remember the block: return it rather than throw from a destructor
    }
  }

  void release_all() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, blocks] : free_)
      for (void* p : blocks) std::free(p);
    free_.clear();
    cached_ = 0;
  }

  ~CachingAllocator() { release_all(); }

 private:
  void note_alloc(size_t size) {  // with mu_ held
    current_ += size;
    peak_ = std::max(peak_, current_);
  }

  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0, current_ = 0, peak_ = 0;
  int64_t mallocs_ = 0;
};

CachingAllocator& cpu_allocator() {
  static CachingAllocator* a = new CachingAllocator();  // never destroyed: tensors may outlive static teardown
  return *a;
}

}  // namespace

void* host_allocate(size_t nbytes) { return cpu_allocator().allocate(nbytes == 0 ? 1 : nbytes); }
void host_deallocate(void* p, size_t nbytes) noexcept { cpu_allocator().deallocate(p, nbytes == 0 ? 1 : nbytes); }
kernels::MemoryStats host_memory_stats() { return cpu_allocator().stats(); }
void host_reset_peak_memory() { cpu_allocator().reset_peak(); }

Storage::Storage(size_t n, Device dev) : nbytes(n), device(dev) {
  owner_ = &kernels::get(dev);
  data = owner_->allocate(n);
}

Storage::Storage(void* d, size_t n, Device dev, std::shared_ptr<void> keep)
    : data(d), nbytes(n), device(dev), keep_(std::move(keep)), owned_(false) {}

Storage::~Storage() {
  if (owned_ && data) owner_->deallocate(data, nbytes);
}

}  // namespace spdlab
