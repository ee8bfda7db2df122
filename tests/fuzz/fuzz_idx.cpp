// The IDX reader, raw and gzip-compressed (read_idx inflates when the gzip magic is there), and the check
// that an image and a label file agree.
#include "data/idx.h"
#include "tests/fuzz/fuzz_common.h"

using namespace spdlab;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const data::IdxArray a = data::read_idx(fuzz::as_file(data, size, ".idx"));
    size_t n = 1;
    for (int64_t d : a.dims) n *= static_cast<size_t>(d);
    if (n != a.data.size()) __builtin_trap();  // the parse promised every byte is accounted for
  } catch (const Error&) {
  }
  return 0;
}
