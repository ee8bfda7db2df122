// See evaluate.h.
#include "models/evaluate.h"

#include "core/autograd.h"

namespace spdlab::models {

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
    const Tensor pred = argmax(model.forward(model.preprocess(b.x.to(dev))), 1).cpu();
    const int64_t* p = pred.data<int64_t>();
    const int64_t* y = b.y.data<int64_t>();
    for (int64_t i = 0; i < pred.numel(); ++i) correct += p[i] == y[i];
    seen += pred.numel();
    if (after_batch) after_batch(seen);
  }
  return {correct, seen};
}

}  // namespace spdlab::models
