// The CPU kernels' arithmetic for the compiler's default target (kernels/cpu/variant.h).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/common.h"
#include "kernels/cpu/iter.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/sgemm.h"

namespace spdlab::cpu::base {
#define SPDLAB_CPU_AVX2 0
#include "kernels/cpu/variant.h"
#undef SPDLAB_CPU_AVX2
}  // namespace spdlab::cpu::base
