// The CPU's caching allocator (core/storage.cpp), reached by the CPU kernels' memory methods. Internal.
#pragma once
#include <cstddef>

#include "kernels/kernels.h"

namespace spdlab {
void* host_allocate(size_t nbytes);
void host_deallocate(void* p, size_t nbytes) noexcept;
kernels::MemoryStats host_memory_stats();
void host_reset_peak_memory();
}  // namespace spdlab
