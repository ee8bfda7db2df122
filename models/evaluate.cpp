// See evaluate.h.
#include "models/evaluate.h"

#include <algorithm>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "kernels/kernels.h"

namespace spdlab::models {

namespace {
// One chunk for a batch of at most chunk_rows rows; else enough of about chunk_rows each, rounded up to a multiple
// of 4 so that 2 and 4 threads get the same number of chunks each.
int64_t chunks_of(int64_t rows, int64_t chunk_rows) {
  const int64_t n = (rows + chunk_rows - 1) / chunk_rows;
  return n <= 1 ? 1 : (n + 3) / 4 * 4;
}
}  // namespace

Tensor logits(VisionTransformer& model, const Tensor& x) {
  SPDLAB_CHECK(!model.is_training(), "logits: the model is in training mode (dropout would draw from one "
               "generator on several threads); call model.eval() first");
  SPDLAB_CHECK(x.dim() == 4, "logits: expected images [B, C, H, W], got ", shape_str(x.shape()));
  autograd::NoGradGuard ng;
  const ViTConfig& c = model.config();
  const int64_t B = x.size(0), grid = c.img_size / c.patch_size, tokens = grid * grid + 1;
  kernels::Kernels& k = kernels::get(x.device());
  const int64_t chunk_rows = k.inference_chunk_rows();
  const int64_t n = chunk_rows > 0 ? std::min(B, chunks_of(B * tokens, chunk_rows)) : 1;
  if (n <= 1 || n < k.apart_width()) return model.forward(x);  // too few chunks to keep every thread busy
  std::vector<Tensor> features(static_cast<size_t>(n));
  k.run_apart(n, [&](int64_t i) {
    autograd::NoGradGuard worker;  // grad mode is per thread
    const int64_t b0 = B * i / n, b1 = B * (i + 1) / n;
    features[static_cast<size_t>(i)] = model.forward_features(x.narrow(0, b0, b1 - b0));
  });
  return model.head->forward(concat(features, 0));
}

double accuracy(VisionTransformer& model, const data::Dataset& d, data::SampleTransform transform, uint64_t seed,
                int64_t batch, const std::function<void(int64_t)>& after_batch) {
  const Counts c = accuracy_counts(model, d, std::move(transform), seed, batch, after_batch);
  return c.seen ? static_cast<double>(c.correct) / c.seen : 0.0;
}

Counts accuracy_counts(VisionTransformer& model, const data::Dataset& d, data::SampleTransform transform,
                       uint64_t seed, int64_t batch, const std::function<void(int64_t)>& after_batch, int64_t part,
                       int64_t parts) {
  SPDLAB_CHECK(parts >= 1 && part >= 0 && part < parts, "accuracy: part ", part, " of ", parts, " does not exist");
  SPDLAB_CHECK(d.num_classes <= model.config().num_classes, "accuracy: the data has ", d.num_classes,
               " classes but the model's head has ", model.config().num_classes,
               "; a model cannot be scored on classes it cannot predict");
  autograd::NoGradGuard ng;
  model.eval();
  data::BatchLoader loader(d, {batch, false, false, seed, std::move(transform)});
  const int64_t nb = loader.num_batches();
  loader.start_epoch(0, nb * part / parts, nb * (part + 1) / parts);
  data::Batch b;
  int64_t correct = 0, seen = 0;
  const Device dev = model.named_parameters().front().second.device();
  while (loader.next(b)) {
    const Tensor pred = argmax(logits(model, model.preprocess(b.x.to(dev))), 1).cpu();
    const int64_t* p = pred.data<int64_t>();
    const int64_t* y = b.y.data<int64_t>();
    for (int64_t i = 0; i < pred.numel(); ++i) correct += p[i] == y[i];
    seen += pred.numel();
    if (after_batch) after_batch(seen);
  }
  return {correct, seen};
}

}  // namespace spdlab::models
