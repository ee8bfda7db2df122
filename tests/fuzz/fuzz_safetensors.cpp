// The safetensors loader: header parse, every tensor loaded in every dtype, the ViT metadata reader, the
// architecture read from tensor names and shapes (every layout), and the image-cache reader.
#include "core/io/safetensors.h"
#include "data/image_folder.h"
#include "models/vit.h"
#include "tests/fuzz/fuzz_common.h"

#include <vector>

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
    try {
      models::ModelSpec spec;
      spec.num_classes = 3;  // so a head-less file still describes a model
      models::inspect_model(path, spec);
    } catch (const Error&) {
    }
    try {
      const data::Dataset d = data::load_image_cache(path);
      std::vector<float> img(static_cast<size_t>(d.pixels.per_image()));
      if (d.size() > 0) d.read_image(d.size() - 1, img.data());  // the last image's bytes are inside the file
    } catch (const Error&) {
    }
  } catch (const Error&) {
  }
  return 0;
}
