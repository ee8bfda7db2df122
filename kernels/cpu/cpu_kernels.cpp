// The CPU backend: OpenBLAS for products, OpenMP loops for everything else. The loops are compiled twice, for
// the baseline target (kernels/cpu/isa_base.cpp) and, on x86-64, for AVX2 with FMA (isa_avx2.cpp); this file
// picks one at run time by what the CPU supports (avx512: the AVX2 set with spdlab's SGEMM on its AVX-512
// tile). What does not depend on the instruction set (memory, copies, products, gathers) is compiled once, in
// shared.cpp. Thread control is kernels/threads.h.
#include <cstdlib>
#include <string>

#include "kernels/cpu/common.h"
#include "kernels/kernels.h"
#include "kernels/threads.h"

namespace spdlab::kernels {

namespace {
bool cpu_has_avx2() {
#if SPDLAB_HAVE_AVX2_KERNELS
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}
bool cpu_has_avx512() {
#if SPDLAB_HAVE_AVX2_KERNELS
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f");
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
  SPDLAB_CHECK(want == "auto" || want == "base" || want == "avx2" || want == "avx512",
               "SPDLAB_CPU_ISA: expected auto, base, avx2 or avx512, got '", want, "'");
  // avx512 is the AVX2 kernels with spdlab's SGEMM on its AVX-512 tile (kernels/cpu/gemm.h), the same bits.
  if (want == "avx512" || (want == "auto" && cpu_has_avx512())) {
    SPDLAB_CHECK(cpu_has_avx512(), "SPDLAB_CPU_ISA=avx512: this CPU (or this build) has no AVX-512F; "
                                   "use SPDLAB_CPU_ISA=avx2 or base, or leave it unset");
#if SPDLAB_HAVE_AVX2_KERNELS
    return {"avx512", &cpu::avx2::instance()};
#endif
  }
  bool avx2 = want == "avx2" || (want == "auto" && cpu_has_avx2());
  if (avx2) {
    SPDLAB_CHECK(cpu_has_avx2(), "SPDLAB_CPU_ISA=avx2: this CPU (or this build) has no AVX2+FMA kernels; "
                                 "use SPDLAB_CPU_ISA=base or leave it unset");
#if SPDLAB_HAVE_AVX2_KERNELS
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

}  // namespace spdlab::kernels
