// The emulation's runtime: a launch runs its blocks one after another (even launches in grid order, odd ones
// in reverse, since CUDA promises no order), and the threads of a block as fibers on the calling thread. A
// fiber runs until it reaches __syncthreads or a warp shuffle, then the next one runs; a barrier opens when
// every thread of the block (or of the warp) waits at it. The fibers of a block are resumed in thread order
// on even blocks and in reverse on odd ones, so a read of shared memory that lacks its barrier sees the
// wrong data in one of the two orders. Device memory is host memory from the C allocator, filled with NaN
// bytes when allocated and freed, and tracked, so copies and cuBLAS calls are checked against live blocks.
#include "kernels/cuda/emu/cuda_emu.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "core/check.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace spdlab::emu {

thread_local ThreadState* current = nullptr;

namespace {

constexpr size_t kStackBytes = 256 * 1024;  // per fiber; Debug builds of the kernels need room
constexpr size_t kGuardBytes = 64;           // after the dynamic shared memory, checked after each block
constexpr unsigned char kFresh = 0xFF;       // fresh shared and device memory: every float and double is NaN
constexpr unsigned char kFreed = 0xFE;       // freed device memory: NaN too, and told apart in a debugger

// ---- fibers: a minimal context switch (x86-64: callee-saved registers and the stack pointer) ----

#if defined(__x86_64__)
extern "C" void spdlab_emu_switch(void** save_sp, void* load_sp);
asm(R"(
.text
.globl spdlab_emu_switch
.type spdlab_emu_switch,@function
spdlab_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size spdlab_emu_switch, .-spdlab_emu_switch
.section .note.GNU-stack,"",@progbits
.text
)");
#endif

enum class Wait { ready, block_barrier, warp_barrier, done };

struct Fiber {
  ThreadState ts;
  Wait wait = Wait::ready;
  const char* sync_file = nullptr;
  int sync_line = 0;
  void* stack = nullptr;  // mmap'd, with a PROT_NONE guard page at the low end
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
};

struct Block;
thread_local Block* running_block = nullptr;
thread_local Fiber* running_fiber = nullptr;

struct Block {
  const char* kernel = nullptr;
  const std::function<void()>* body = nullptr;
  std::vector<Fiber>* fibers = nullptr;
  int nthreads = 0;
  unsigned char* shared = nullptr;
  std::vector<uint64_t> warp_words;  // one exchange word per thread
  std::string error;  // set by a fiber that hit a misuse; the scheduler throws it on the host stack
#if defined(__x86_64__)
  void* scheduler_sp = nullptr;
#else
  ucontext_t scheduler;
#endif
};

void yield_to_scheduler() {
  Block* b = running_block;
  Fiber* f = running_fiber;
#if defined(__x86_64__)
  spdlab_emu_switch(&f->sp, b->scheduler_sp);
#else
  swapcontext(&f->ctx, &b->scheduler);
#endif
}

// Exceptions never cross a fiber's stack: a failing fiber records its message and stops for good.
[[noreturn]] void fiber_fail(const std::string& msg) {
  if (running_block->error.empty()) running_block->error = msg;
  running_fiber->wait = Wait::done;
  yield_to_scheduler();
  std::abort();
}

[[noreturn]] void fiber_main() {
  running_fiber->wait = Wait::ready;
  std::string err;
  try {
    (*running_block->body)();
  } catch (const std::exception& e) {
    err = e.what();  // leave the handler before switching stacks
  }
  if (!err.empty()) fiber_fail(err);
  running_fiber->wait = Wait::done;
  yield_to_scheduler();
  std::abort();  // a finished fiber is never resumed
}

#if defined(__x86_64__)
extern "C" [[noreturn]] void spdlab_emu_fiber_entry() { fiber_main(); }
#endif

void* new_stack() {
  void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  SPDLAB_CHECK(p != MAP_FAILED, "CUDA emulation: cannot map a ", kStackBytes, "-byte fiber stack");
  mprotect(p, 4096, PROT_NONE);  // an overflow faults instead of corrupting the neighbour
  return p;
}

void start_fiber(Fiber& f) {
  if (!f.stack) f.stack = new_stack();
  f.wait = Wait::ready;
#if defined(__x86_64__)
  // Stack as spdlab_emu_switch expects it: six saved registers, then the address `ret` jumps to. The
  // entry then sees rsp = 8 (mod 16), as after a call.
  auto top = reinterpret_cast<uintptr_t>(static_cast<char*>(f.stack) + kStackBytes) & ~uintptr_t(15);
  auto* sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;  // the entry's return address, never used
  *--sp = reinterpret_cast<void*>(&spdlab_emu_fiber_entry);
  for (int i = 0; i < 6; ++i) *--sp = nullptr;
  f.sp = sp;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = static_cast<char*>(f.stack) + 4096;
  f.ctx.uc_stack.ss_size = kStackBytes - 4096;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, reinterpret_cast<void (*)()>(&fiber_main), 0);
#endif
}

void resume(Block& b, Fiber& f) {
  running_fiber = &f;
  current = &f.ts;
#if defined(__x86_64__)
  spdlab_emu_switch(&b.scheduler_sp, f.sp);
#else
  swapcontext(&b.scheduler, &f.ctx);
#endif
}

std::string block_str(const dim3& b) {
  return "(" + std::to_string(b.x) + "," + std::to_string(b.y) + "," + std::to_string(b.z) + ")";
}

// A pool of fibers per host thread, grown to the largest block launched.
thread_local std::vector<Fiber> fiber_pool;
thread_local std::vector<unsigned char> shared_buffer;
std::atomic<uint64_t> launch_counter{0};

void run_block(Block& b, bool reverse) {
  std::vector<Fiber>& fs = *b.fibers;
  int n = b.nthreads;
  for (int i = 0; i < n; ++i) start_fiber(fs[i]);
  std::string dim_info;
  for (;;) {
    for (int k = 0; k < n; ++k) {
      Fiber& f = fs[reverse ? n - 1 - k : k];
      if (f.wait == Wait::ready) resume(b, f);
    }
    if (!b.error.empty()) SPDLAB_FAIL(b.error);
    // Every fiber now waits at a barrier or has finished. Open the warps whose live lanes all wait at a
    // shuffle, else the block barrier if every thread waits there.
    bool opened = false;
    int at_block = 0, done = 0;
    for (int w = 0; w * 32 < n; ++w) {
      int lo = w * 32, hi = std::min(n, lo + 32), waiting = 0, finished = 0;
      for (int i = lo; i < hi; ++i) {
        waiting += fs[i].wait == Wait::warp_barrier;
        finished += fs[i].wait == Wait::done;
      }
      if (waiting == 0) continue;
      if (waiting + finished == hi - lo && finished > 0)
        SPDLAB_FAIL("CUDA emulation: ", b.kernel, " block ", block_str(fs[0].ts.block_idx), ": warp ", w,
                    " shuffles while ", finished, " of its lanes have exited (a warp collective needs every lane)");
      if (waiting == hi - lo) {
        for (int i = lo; i < hi; ++i) fs[i].wait = Wait::ready;
        opened = true;
      }
    }
    if (opened) continue;
    const Fiber* first_at_block = nullptr;
    for (int i = 0; i < n; ++i) {
      if (fs[i].wait == Wait::block_barrier) {
        ++at_block;
        if (!first_at_block) first_at_block = &fs[i];
      }
      done += fs[i].wait == Wait::done;
    }
    if (done == n) break;
    if (at_block == n) {
      for (int i = 0; i < n; ++i) {
        const Fiber& f = fs[i];
        if (f.sync_line != first_at_block->sync_line || std::strcmp(f.sync_file, first_at_block->sync_file) != 0)
          SPDLAB_FAIL("CUDA emulation: barrier divergence in ", b.kernel, " block ", block_str(f.ts.block_idx),
                      ": thread ", block_str(f.ts.thread_idx), " waits at __syncthreads() at ", f.sync_file, ":",
                      f.sync_line, " while thread ", block_str(first_at_block->ts.thread_idx), " waits at ",
                      first_at_block->sync_file, ":", first_at_block->sync_line);
        fs[i].wait = Wait::ready;
      }
      continue;
    }
    // Some threads wait at a barrier that the others will never reach.
    const Fiber* gone = nullptr;
    for (int i = 0; i < n && !gone; ++i)
      if (fs[i].wait != Wait::block_barrier) gone = &fs[i];
    SPDLAB_FAIL("CUDA emulation: barrier divergence in ", b.kernel, " block ", block_str(fs[0].ts.block_idx), ": ",
                at_block, " of ", n, " threads wait at __syncthreads() (", first_at_block->sync_file, ":",
                first_at_block->sync_line, ") but thread ", block_str(gone->ts.thread_idx),
                gone->wait == Wait::done ? " has exited" : " waits at a warp shuffle");
  }
}

}  // namespace

void syncthreads(const char* file, int line) {
  Fiber* f = running_fiber;
  f->wait = Wait::block_barrier;
  f->sync_file = file;
  f->sync_line = line;
  yield_to_scheduler();
}

void syncwarp() {
  running_fiber->wait = Wait::warp_barrier;
  yield_to_scheduler();
}

void check_full_mask(unsigned mask, const char* what) {
  if (mask != 0xffffffffu)
    fiber_fail(detail::cat("CUDA emulation: ", running_block->kernel, " calls ", what, " with mask ", mask,
                           "; spdlab's kernels shuffle whole warps (0xffffffff)"));
}

uint64_t warp_exchange(uint64_t value, int src_lane, bool src_valid) {
  Block* b = running_block;
  int me = current->warp * 32 + current->lane;
  b->warp_words[me] = value;
  syncwarp();  // every lane has written
  int src = current->warp * 32 + src_lane;
  uint64_t got = value;
  if (src_valid) {
    if (src_lane < 0 || src_lane >= 32 || src >= b->nthreads)
      fiber_fail(detail::cat("CUDA emulation: ", b->kernel, " shuffles from lane ", src_lane, " of warp ",
                             current->warp, ", which does not exist in a block of ", b->nthreads, " threads"));
    got = b->warp_words[src];
  }
  syncwarp();  // every lane has read before anyone writes again
  return got;
}

unsigned warp_ballot(bool pred) {
  Block* b = running_block;
  int me = current->warp * 32 + current->lane;
  b->warp_words[me] = pred;
  syncwarp();
  unsigned bits = 0;
  for (int l = 0; l < 32 && current->warp * 32 + l < b->nthreads; ++l)
    if (b->warp_words[current->warp * 32 + l]) bits |= 1u << l;
  syncwarp();
  return bits;
}

unsigned char* dynamic_shared() { return running_block->shared; }

void run_grid(const char* kernel, dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body) {
  uint64_t nthreads = uint64_t(block.x) * block.y * block.z;
  SPDLAB_CHECK(nthreads >= 1 && nthreads <= 1024 && block.z <= 64, "CUDA emulation: ", kernel, " launched with block ",
               block_str(block), "; CUDA allows 1 to 1024 threads per block (z at most 64)");
  SPDLAB_CHECK(grid.x >= 1 && grid.y >= 1 && grid.y <= 65535 && grid.z >= 1 && grid.z <= 65535,
               "CUDA emulation: ", kernel, " launched with grid ", block_str(grid),
               "; CUDA needs every dim >= 1, and y and z at most 65535");
  SPDLAB_CHECK(shared_bytes <= 227 * 1024, "CUDA emulation: ", kernel, " asks for ", shared_bytes,
               " bytes of shared memory; a block can have at most 227 KiB (Hopper)");
  SPDLAB_CHECK(running_block == nullptr, "CUDA emulation: ", kernel, " launched from inside a kernel");
  int n = static_cast<int>(nthreads);
  if (static_cast<int>(fiber_pool.size()) < n) fiber_pool.resize(n);
  shared_buffer.resize(shared_bytes + kGuardBytes);
  Block b;
  b.kernel = kernel;
  b.body = &body;
  b.fibers = &fiber_pool;
  b.nthreads = n;
  b.shared = shared_buffer.data();
  b.warp_words.assign(((n + 31) / 32) * 32, 0);
  for (int t = 0; t < n; ++t) {
    ThreadState& ts = fiber_pool[t].ts;
    ts.thread_idx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
    ts.block_dim = block;
    ts.grid_dim = grid;
    ts.lane = t % 32;
    ts.warp = t / 32;
  }
  bool reverse_grid = launch_counter.fetch_add(1) % 2 == 1;
  uint64_t nblocks = uint64_t(grid.x) * grid.y * grid.z;
  struct Reset {  // a failed block leaves no dangling state for the next launch
    ~Reset() {
      running_block = nullptr;
      running_fiber = nullptr;
      current = nullptr;
    }
  } reset;
  running_block = &b;
  for (uint64_t k = 0; k < nblocks; ++k) {
    uint64_t i = reverse_grid ? nblocks - 1 - k : k;
    dim3 bid(i % grid.x, (i / grid.x) % grid.y, i / (uint64_t(grid.x) * grid.y));
    for (int t = 0; t < n; ++t) fiber_pool[t].ts.block_idx = bid;
    std::memset(b.shared, kFresh, shared_bytes + kGuardBytes);
    run_block(b, (k % 2 == 1) != reverse_grid);
    for (size_t g = 0; g < kGuardBytes; ++g)
      SPDLAB_CHECK(b.shared[shared_bytes + g] == kFresh, "CUDA emulation: ", kernel, " block ", block_str(bid),
                   " wrote shared memory at byte ", shared_bytes + g, ", past the ", shared_bytes,
                   " bytes it was launched with");
  }
}

// ---- device memory ----

namespace {
std::mutex mem_mu;
std::map<uintptr_t, size_t>& live_blocks() {
  static auto* m = new std::map<uintptr_t, size_t>();
  return *m;
}
thread_local cudaError_t last_error = cudaSuccess;
thread_local int current_device = 0;

int emulated_devices() {
  const char* env = std::getenv("SPDLAB_EMULATED_GPUS");
  if (!env || !*env) return 1;
  int n = std::atoi(env);
  return n < 0 ? 0 : std::min(n, 16);
}

cudaError_t fail(cudaError_t e) {
  last_error = e;
  return e;
}
}  // namespace

bool is_device_range(const void* p, size_t n) {
  auto a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(mem_mu);
  auto& m = live_blocks();
  auto it = m.upper_bound(a);
  if (it == m.begin()) return false;
  --it;
  return a >= it->first && a + n <= it->first + it->second;
}

}  // namespace spdlab::emu

using namespace spdlab::emu;

cudaError_t cudaGetDeviceCount(int* n) {
  *n = emulated_devices();
  return *n == 0 ? fail(cudaErrorNoDevice) : cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
  if (d < 0 || d >= emulated_devices()) return fail(cudaErrorInvalidDevice);
  current_device = d;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = current_device;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (d < 0 || d >= emulated_devices()) return fail(cudaErrorInvalidDevice);
  std::memset(p, 0, sizeof(*p));
  std::snprintf(p->name, sizeof(p->name), "emulated GPU %d (CPU)", d);
  p->totalGlobalMem = size_t(8) << 30;
  p->sharedMemPerBlock = 48 * 1024;
  p->sharedMemPerBlockOptin = 227 * 1024;
  p->maxThreadsPerBlock = 1024;
  p->multiProcessorCount = 4;
  p->major = 9;
  p->minor = 0;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t n) {
  size_t size = (std::max<size_t>(n, 1) + 255) / 256 * 256;
  void* q = std::aligned_alloc(256, size);
  if (!q) {
    *p = nullptr;
    return fail(cudaErrorMemoryAllocation);
  }
  std::memset(q, kFresh, size);
  std::lock_guard<std::mutex> lock(mem_mu);
  live_blocks()[reinterpret_cast<uintptr_t>(q)] = n;
  *p = q;
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  size_t n;
  {
    std::lock_guard<std::mutex> lock(mem_mu);
    auto it = live_blocks().find(reinterpret_cast<uintptr_t>(p));
    if (it == live_blocks().end()) return fail(cudaErrorInvalidDevicePointer);
    n = it->second;
    live_blocks().erase(it);
  }
  std::memset(p, kFreed, n);
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  if (n == 0) return cudaSuccess;
  bool dst_dev = is_device_range(dst, n), src_dev = is_device_range(src, n);
  bool ok = kind == cudaMemcpyHostToDevice   ? dst_dev && !src_dev
            : kind == cudaMemcpyDeviceToHost ? src_dev && !dst_dev
            : kind == cudaMemcpyDeviceToDevice ? src_dev && dst_dev
            : kind == cudaMemcpyHostToHost ? !src_dev && !dst_dev
                                           : true;
  if (!ok) return fail(cudaErrorInvalidValue);
  std::memmove(dst, src, n);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, n, kind);
}
cudaError_t cudaMemset(void* p, int value, size_t n) {
  if (n == 0) return cudaSuccess;
  if (!is_device_range(p, n)) return fail(cudaErrorInvalidValue);
  std::memset(p, value, n);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t) { return cudaMemset(p, value, n); }
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *total_bytes = size_t(8) << 30;
  size_t used = 0;
  std::lock_guard<std::mutex> lock(mem_mu);
  for (auto& [a, n] : live_blocks()) used += n;
  *free_bytes = used > *total_bytes ? 0 : *total_bytes - used;
  return cudaSuccess;
}

// Streams and events: work runs when it is issued, so they only keep order and time.
struct CUstream_st {};
struct CUevent_st {
  std::chrono::steady_clock::time_point t;
};
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = new CUstream_st();
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  e->t = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
  return cudaSuccess;
}
cudaError_t cudaGetLastError() {
  cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return last_error; }
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}
