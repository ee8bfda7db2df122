// set_num_threads / get_num_threads (kernels/threads.h).
#include "kernels/threads.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>

#include "core/check.h"

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

}  // namespace spdlab
