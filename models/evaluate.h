// Accuracy of a ViT classifier on a labelled dataset: the loop every study, lab and command needs.
#pragma once
#include <functional>

#include "data/loader.h"
#include "models/vit.h"

namespace spdlab::models {

// Logits [B, classes] of x [B, C, H, W] (preprocessed, on the model's device) without grad, for a model in eval
// mode: inference's entry point (accuracy and `spdlab predict` call it). On a device that runs batches in chunks
// (Kernels::inference_chunk_rows: the CPU), a batch of more token rows than a chunk's is cut into chunks of about
// that many rows, their number rounded up to a multiple of 4 and fixed by B and the model. The chunks' features
// are computed side by side (Kernels::run_apart: each chunk on one thread, its ops with no barrier between
// threads), then the head runs on the whole batch; with fewer chunks than threads, the batch runs whole, every op
// on all of them. Each op of the features works row by row, image by image or head by head, and spdlab's SGEMM
// sums each element's terms in one order at any number of rows, so on AVX2 CPUs the logits are
// model.forward(x)'s to the bit either way (tested on the study's ViT), unless a product drops below the SGEMM's
// size threshold (kernels/cpu/variant.h) at a chunk's size and goes to OpenBLAS; on the baseline instruction set
// OpenBLAS takes every product, and the two agree to rounding.
Tensor logits(VisionTransformer& model, const Tensor& x);

// The share of images whose argmax logit is their label. Each image goes through `transform` (empty: as stored;
// its random choices come from `seed`), then model.preprocess and logits (eval mode, without grad), in batches of
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
