// The safetensors loader: header parse, every tensor loaded in every dtype, and the ViT metadata reader.
#include "core/io/safetensors.h"
#include "models/vit.h"
#include "tests/fuzz/fuzz_common.h"

using namespace spdlab;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::as_file(data, size, ".safetensors");
  try {
    io::SafetensorsFile f(path);
    for (const std::string& name : f.names()) {
      try {
        Tensor t = f.load_exact(name);
        if (t.numel() > 0 && t.dtype() != DType::i64) (void)f.load(name).data<float>()[0];
      } catch (const Error&) {
      }
    }
    try {
      models::ViTConfig::from_metadata(f.metadata(), path).validate();
    } catch (const Error&) {
    }
  } catch (const Error&) {
  }
  return 0;
}
