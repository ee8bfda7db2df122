// kernels::get, the one place where a device picks its kernels, and the CUDA switches that exist in every
// build (a CPU-only build answers that it has no CUDA).
#include <cstdlib>
#include <cstring>

#include "kernels/kernels.h"
#if SPDLAB_WITH_CUDA
#include "kernels/cuda/dispatch.h"
#endif

namespace spdlab::kernels {

Kernels& cpu_kernels();  // kernels/cpu/cpu_kernels.cpp

Kernels& get(Device device) {
  if (device.is_cpu()) return cpu_kernels();
#if SPDLAB_WITH_CUDA
  return cuda::backend(device.index);
#else
  SPDLAB_FAIL(device, " was asked for, but spdlab was built without CUDA (configure with -DSPDLAB_CUDA=ON on a "
              "machine with the CUDA toolkit); use --device cpu");
#endif
}

int cuda_device_count() {
#if SPDLAB_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

std::string cuda_unavailable_reason() {
#if SPDLAB_WITH_CUDA
  return cuda::unavailable_reason();
#else
  return "spdlab was built without CUDA";
#endif
}

bool cuda_is_emulated() {
#if SPDLAB_CUDA_EMULATE
  return true;
#else
  return false;
#endif
}

namespace {
bool& tf32_flag() {
  static bool on = [] {
    const char* env = std::getenv("SPDLAB_TF32");
    return env && std::strcmp(env, "1") == 0;
  }();
  return on;
}
}  // namespace
void set_allow_tf32(bool on) { tf32_flag() = on; }
bool allow_tf32() { return tf32_flag(); }

}  // namespace spdlab::kernels
