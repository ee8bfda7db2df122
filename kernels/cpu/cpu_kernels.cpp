// The CPU backend: OpenBLAS for products, OpenMP loops for everything else. The loops live in
// kernels_impl.h and are compiled twice here: for the baseline target, and (on x86-64) for AVX2 with FMA,
// picked at run time by what the CPU supports, as PyTorch does with its CPU capability levels. The AVX2
// copy is compiled under `#pragma GCC target`, not with -mavx2 on the file, so that no inline function
// from a shared header (std::vector's, say) is ever emitted with AVX2 instructions and then chosen by the
// linker for the baseline copy.
#include <cblas.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/allocator.h"
#include "kernels/cpu/parallel.h"
#include "kernels/kernels.h"
#include "kernels/philox.h"

extern "C" void openblas_set_num_threads(int);

namespace spdlab {

namespace {
int g_threads = 0;
int initial_threads() {
  if (const char* env = std::getenv("SPDLAB_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1, omp_get_num_procs());
}
}  // namespace

void set_num_threads(int n) {
  SPDLAB_CHECK(n >= 1, "set_num_threads: expected at least 1 thread, got ", n);
  g_threads = n;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int get_num_threads() {
  if (g_threads == 0) set_num_threads(initial_threads());
  return g_threads;
}

#define SPDLAB_CPU_AVX2 0
namespace cpu::base {
#include "kernels/cpu/kernels_impl.h"
}  // namespace cpu::base
#undef SPDLAB_CPU_AVX2

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SPDLAB_HAVE_AVX2_KERNELS 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define SPDLAB_CPU_AVX2 1
namespace cpu::avx2 {
#include "kernels/cpu/kernels_impl.h"
}  // namespace cpu::avx2
#undef SPDLAB_CPU_AVX2
#pragma GCC pop_options
#endif

namespace kernels {
namespace {
bool cpu_has_avx2() {
#ifdef SPDLAB_HAVE_AVX2_KERNELS
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

struct CpuChoice {
  const char* isa;
  Kernels* kernels;
};

CpuChoice choose_cpu() {
  const char* env = std::getenv("SPDLAB_CPU_ISA");
  std::string want = env && *env ? env : "auto";
  SPDLAB_CHECK(want == "auto" || want == "base" || want == "avx2", "SPDLAB_CPU_ISA: expected auto, base or avx2, got '",
               want, "'");
  bool avx2 = want == "avx2" || (want == "auto" && cpu_has_avx2());
  if (avx2) {
    SPDLAB_CHECK(cpu_has_avx2(), "SPDLAB_CPU_ISA=avx2: this CPU (or this build) has no AVX2+FMA kernels; "
                                 "use SPDLAB_CPU_ISA=base or leave it unset");
#ifdef SPDLAB_HAVE_AVX2_KERNELS
    return {"avx2", &cpu::avx2::instance()};
#endif
  }
  return {"base", &cpu::base::instance()};
}

CpuChoice& cpu_choice() {
  static CpuChoice c = choose_cpu();
  return c;
}
}  // namespace

const char* cpu_isa() { return cpu_choice().isa; }

Kernels& cpu_kernels() {
  static Kernels* k = [] {
    get_num_threads();  // applies SPDLAB_NUM_THREADS before the first kernel runs
    return cpu_choice().kernels;
  }();
  return *k;
}
}  // namespace kernels

}  // namespace spdlab
