// Thread control for the CPU kernels: how many threads spdlab's OpenMP loops and OpenBLAS use. One count for
// both, so that a product and the loop around it never run two pools on the same cores.
//
// The count starts at SPDLAB_NUM_THREADS when it is set (a positive integer), else at the number of cores,
// and is applied before the first CPU kernel runs. Results do not depend on it: every CPU reduction sums in
// fixed chunks, in a fixed order (see kernels/cpu/parallel.h).
#pragma once

namespace spdlab {

void set_num_threads(int n);  // n >= 1; sets OpenMP's and OpenBLAS's thread counts
int get_num_threads();

}  // namespace spdlab
