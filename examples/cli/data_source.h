// Parsing of the --data flag shared by the commands: fmnist[:ROOT], idx:IMAGES,LABELS, folder:DIR.
#pragma once
#include <string>

#include "data/idx.h"

namespace spdlab::cli {

// Loads the train or test split named by `spec`; images are resized to `size` x `size` with `channels`
// channels when they differ from the model's input. Labels must be below `num_classes`.
data::Dataset load_data(const std::string& spec, bool train, int64_t channels, int64_t size, int64_t num_classes);

}  // namespace spdlab::cli
