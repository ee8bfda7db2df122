// Mini-batches over an in-memory Dataset: a seeded shuffle per epoch, an optional per-sample transform,
// and one background thread that builds the next batch while the caller trains on the current one.
// The batches of a (seed, epoch) depend on nothing else: not on timing, threads or earlier epochs.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "data/domains.h"
#include "data/idx.h"

namespace spdlab::data {

// Writes one transformed sample: in and out are distinct [C, H, W] buffers. `seed` is unique to
// (loader seed, epoch, dataset index), so any random choice made from it is reproducible.
using SampleTransform =
    std::function<void(const float* in, float* out, int64_t C, int64_t H, int64_t W, uint64_t seed)>;

// Every sample in domain d (each channel plane on its own; plane 0 gets `seed` itself).
SampleTransform domain_transform(Domain d);
// One domain per sample, drawn uniformly from `domains` with the sample's seed (pre-training).
SampleTransform random_domain_transform(std::vector<Domain> domains);
SampleTransform augment_transform(AugmentOptions opt);
SampleTransform random_resized_crop_transform(ResizedCropOptions opt);
// The steps in order; step i gets its own seed derived from (seed, i).
SampleTransform compose(std::vector<SampleTransform> steps);

struct LoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;
  bool drop_last = false;     // drop a final batch smaller than batch_size
  uint64_t seed = 0;
  SampleTransform transform{};  // empty: samples as stored
  // Data parallel: each batch is the rows [B*i/n, B*(i+1)/n) of the global batch of `batch_size` (i =
  // shard_index, n = shard_count), so the n loaders of one seed together build exactly the batches one loader
  // builds, each sample with the same transform seed. num_batches() counts global batches.
  int64_t shard_index = 0, shard_count = 1;
};

struct Batch {
  Tensor x;  // f32 [B, C, H, W]
  Tensor y;  // i64 [B]
};

class BatchLoader {
 public:
  BatchLoader(Dataset data, LoaderOptions opt);
  ~BatchLoader();  // stops the worker after the batch it is building, if any
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // Begins epoch `epoch` (any epoch, in any order; what was left of the previous one is dropped), at batch
  // `first_batch` of it (a resumed run skips the batches it already trained on without building them), ending
  // before `end_batch` (-1: the epoch's end; a rank of a distributed evaluation takes its range of batches).
  // Order: 0..N-1, or with shuffle a Fisher-Yates shuffle drawn from Generator(hash(seed, epoch)).
  void start_epoch(int64_t epoch, int64_t first_batch = 0, int64_t end_batch = -1);
  // The next batch of the epoch, or false when the epoch is done. An exception thrown while building
  // the batch (by the transform, say) is rethrown here, and ends the epoch.
  bool next(Batch& batch);

  int64_t num_batches() const { return num_batches_; }
  // The rows of global batch `k` this shard builds: [first, first + count).
  std::pair<int64_t, int64_t> shard_rows(int64_t k) const;
  int64_t epoch() const { return epoch_; }
  const Dataset& dataset() const { return data_; }

 private:
  Batch build(int64_t k) const;  // batch k of the current epoch; runs on the worker
  void worker_loop();

  Dataset data_;
  LoaderOptions opt_;
  int64_t num_batches_ = 0;
  // Written only by start_epoch while the worker is idle, read by the worker while building.
  std::vector<int64_t> order_;
  int64_t epoch_ = -1;
  uint64_t epoch_key_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool building_ = false;
  int64_t next_build_ = 0, next_take_ = 0, end_ = 0;  // batch indices within the epoch
  std::optional<Batch> ready_;                        // the double buffer: one batch ahead
  std::exception_ptr error_;
  std::thread worker_;  // started at the end of the constructor, once the dataset is checked
};

}  // namespace spdlab::data
