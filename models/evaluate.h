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

// The images scored and those right, over this part's share of the batches: part i of n takes the batches
// [nb i / n, nb (i + 1) / n) of the nb batches. n ranks passing their own index together score every image
// once, each batch exactly as one process would, so the summed counts equal one process's.
struct Counts {
  int64_t correct = 0, seen = 0;
};
Counts accuracy_counts(VisionTransformer& model, const data::Dataset& d, data::SampleTransform transform,
                       uint64_t seed, int64_t batch, const std::function<void(int64_t)>& after_batch,
                       int64_t part = 0, int64_t parts = 1);

}  // namespace spdlab::models
