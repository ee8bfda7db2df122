// Accuracy of a ViT classifier on a labelled dataset: the loop every study, lab and command needs.
#pragma once
#include <functional>

#include "data/loader.h"
#include "models/vit.h"

namespace spdlab::models {

// The share of images whose argmax logit is their label. Each image goes through `transform` (empty: as stored;
// its random choices come from `seed`), then model.preprocess and forward, in eval mode without grad, in batches of
// `batch` on the model's device. `after_batch` (optional) is called after each batch with the images done so far.
double accuracy(VisionTransformer& model, const data::Dataset& d, data::SampleTransform transform = {},
                uint64_t seed = 0, int64_t batch = 500, const std::function<void(int64_t)>& after_batch = {});

}  // namespace spdlab::models
