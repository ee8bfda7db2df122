// Parsing of the data flags shared by the commands: --data (fmnist[:ROOT], idx:IMAGES,LABELS, folder:DIR) for the
// Fashion-MNIST study, and the image sources of --train / --eval (folder:DIR, cache:FILE) for a user's own data.
#pragma once
#include <string>
#include <vector>

#include "data/idx.h"

namespace spdlab::cli {

// Loads the train or test split named by `spec`; images are resized to `size` x `size` with `channels`
// channels when they differ from the model's input. Labels must be below `num_classes`.
data::Dataset load_data(const std::string& spec, bool train, int64_t channels, int64_t size, int64_t num_classes);

// folder:DIR (decoded now, with a progress line) or cache:FILE (from `spdlab cache`, memory-mapped; its images
// must already be channels x size x size). `what` names the flag in errors ("--train", "--eval sketch").
bool is_image_source(const std::string& spec);
data::Dataset load_image_source(const std::string& spec, int64_t channels, int64_t size, const std::string& what);

// --eval NAME=SRC,NAME2=SRC2,...: names are unique, of letters, digits, '_' and '-'; the first is the
// in-distribution set.
struct NamedSource {
  std::string name, spec;
};
std::vector<NamedSource> parse_eval_sets(const std::vector<std::string>& items);

}  // namespace spdlab::cli
