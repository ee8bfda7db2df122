// Storage, and CPU memory for tensors. A Storage gets its memory from its device's kernels (kernels/kernels.h);
// the CPU's come from the caching allocator here (core/caching_allocator.h), 64-byte aligned.
#include <cstdlib>

#include "core/allocator.h"
#include "core/caching_allocator.h"
#include "core/tensor.h"
#include "kernels/kernels.h"

namespace spdlab {
namespace {

// 64-byte aligned blocks; at most 2 GiB of idle memory is kept.
CachingAllocator& cpu_allocator() {
  static CachingAllocator* a = new CachingAllocator({[](size_t n) { return std::aligned_alloc(64, n); },
                                                      [](void* p) { std::free(p); }, 256, 64, size_t(2) << 30});
  return *a;  // never destroyed: tensors may outlive static teardown
}

}  // namespace

void* host_allocate(size_t nbytes) {
  void* p = cpu_allocator().try_allocate(nbytes);
  SPDLAB_CHECK(p != nullptr, "Storage: out of memory allocating ", nbytes, " bytes");
  return p;
}
void host_deallocate(void* p, size_t nbytes) noexcept { cpu_allocator().deallocate(p, nbytes); }
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
