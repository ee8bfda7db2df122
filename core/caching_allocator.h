// One caching allocator for every device: sizes round up to one of 8 steps per power of two (a block serves a
// slightly smaller request, wasting at most 12.5%), and freed blocks are kept per size for reuse, so the
// activations of one training step reuse the blocks of the last one instead of asking the system again (a
// page fault on the CPU, a cudaMalloc on a GPU). What the system allocator is comes from the device.
#pragma once
#include <cstddef>
#include <map>
#include <mutex>
#include <vector>

#include "kernels/kernels.h"

namespace spdlab {

class CachingAllocator {
 public:
  struct System {
    void* (*alloc)(size_t bytes);  // null when out of memory
    void (*free)(void* p);
    size_t min_block;    // the smallest size class
    size_t granularity;  // sizes are multiples of this
    size_t max_cached;   // beyond this much idle memory, freed blocks go back to the system
  };
  explicit CachingAllocator(System sys) : sys_(sys) {}
  ~CachingAllocator() { release_cached(); }
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // A block of at least `nbytes`, or null when the system has none even after the cache is released.
  void* try_allocate(size_t nbytes);
  // Never throws: a block that cannot be remembered goes back to the system.
  void deallocate(void* p, size_t nbytes) noexcept;
  void release_cached();
  kernels::MemoryStats stats();
  void reset_peak();

 private:
  size_t size_class(size_t n) const;
  void note_alloc(size_t size);  // with mu_ held

  System sys_;
  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;
  kernels::MemoryStats stats_;
};

}  // namespace spdlab
