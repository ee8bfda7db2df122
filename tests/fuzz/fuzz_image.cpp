// The image entry point (stb_image behind spdlab's header checks), in gray and RGB, then a resize.
#include "core/io/image.h"
#include "tests/fuzz/fuzz_common.h"

using namespace spdlab;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int channels = data[0] & 1 ? 3 : 1;
  try {
    Tensor img = io::load_image(fuzz::as_file(data + 1, size - 1, ".img"), channels);
    if (img.size(0) != channels) __builtin_trap();
    if (img.numel() <= (int64_t{1} << 20)) (void)io::resize(img, 8, 8);
  } catch (const Error&) {
  }
  return 0;
}
