// The CPU kernels' arithmetic for x86-64 CPUs with AVX2 and FMA (kernels/cpu/variant.h), compiled with GCC's
// `#pragma GCC target`, not with -mavx2 on the file: every header is included before the pragma, so no inline
// function from a shared header (std::vector's, say) is ever emitted with AVX2 instructions and then chosen by
// the linker for the baseline copy. Other compilers and targets build an empty file, and cpu_kernels.cpp then
// always picks the baseline kernels.
#include "kernels/cpu/common.h"

#if SPDLAB_HAVE_AVX2_KERNELS
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/iter.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/sgemm.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace spdlab::cpu::avx2 {
#define SPDLAB_CPU_AVX2 1
#include "kernels/cpu/variant.h"
#undef SPDLAB_CPU_AVX2
}  // namespace spdlab::cpu::avx2
#pragma GCC pop_options
#endif
