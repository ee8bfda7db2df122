// What kernels::get needs from the CUDA backend, without any CUDA header (dispatch.cpp is plain C++).
#pragma once
#include <string>

#include "kernels/kernels.h"

namespace spdlab::cuda {
int device_count();
std::string unavailable_reason();
// The backend of GPU `index`, made current for the calling thread; errors say why a GPU is not there.
kernels::Kernels& backend(int index);
}  // namespace spdlab::cuda
