// BatchLoader: one worker thread and a one-batch slot (double buffering), guarded by one mutex.
// Batch k always holds positions [k B, k B + B) of the epoch's order, and every random number comes
// from seeds fixed by start_epoch, which is why timing cannot change the batches.
#include "data/loader.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace spdlab::data {

SampleTransform domain_transform(Domain d) {
  return [d](const float* in, float* out, int64_t C, int64_t H, int64_t W, uint64_t seed) {
    for (int64_t c = 0; c < C; ++c)
      apply_domain(d, in + c * H * W, out + c * H * W, H, W, c == 0 ? seed : seed ^ seed_hash(c));
  };
}

SampleTransform random_domain_transform(std::vector<Domain> domains) {
  SPDLAB_CHECK(!domains.empty(), "random_domain_transform: needs at least one domain");
  return [domains = std::move(domains)](const float* in, float* out, int64_t C, int64_t H, int64_t W,
                                        uint64_t seed) {
    Generator gen(seed_hash(seed));
    const Domain d = domains[gen.next_u64() % domains.size()];
    // A seed of its own for the domain, so the choice and the noise are not the same random number.
    domain_transform(d)(in, out, C, H, W, seed_hash(seed));
  };
}

SampleTransform augment_transform(AugmentOptions opt) {
  return [opt](const float* in, float* out, int64_t C, int64_t H, int64_t W, uint64_t seed) {
    augment(in, out, C, H, W, opt, seed);
  };
}

SampleTransform random_resized_crop_transform(ResizedCropOptions opt) {
  return [opt](const float* in, float* out, int64_t C, int64_t H, int64_t W, uint64_t seed) {
    random_resized_crop(in, out, C, H, W, opt, seed);
  };
}

SampleTransform compose(std::vector<SampleTransform> steps) {
  SPDLAB_CHECK(!steps.empty(), "compose: needs at least one step");
  return [steps = std::move(steps)](const float* in, float* out, int64_t C, int64_t H, int64_t W,
                                    uint64_t seed) {
    // Ping-pong between two scratch planes; the last step writes to out.
    const size_t n = static_cast<size_t>(C * H * W);
    std::vector<float> a(n), b(n);
    const float* src = in;
    for (size_t i = 0; i < steps.size(); ++i) {
      float* dst = i + 1 == steps.size() ? out : (i % 2 == 0 ? a.data() : b.data());
      steps[i](src, dst, C, H, W, seed_hash(seed ^ seed_hash(i)));
      src = dst;
    }
  };
}

BatchLoader::BatchLoader(Dataset data, LoaderOptions opt) : data_(std::move(data)), opt_(std::move(opt)) {
  SPDLAB_CHECK(data_.labels.defined() && (data_.images.defined() || data_.pixels.data != nullptr),
               "BatchLoader: the dataset has no images/labels");
  const int64_t count = data_.images.defined() ? data_.images.size(0) : data_.pixels.n;
  if (data_.images.defined())
    SPDLAB_CHECK(data_.images.dtype() == DType::f32 && data_.images.device() == Device::cpu &&
                     data_.images.dim() == 4,
                 "BatchLoader: images must be f32 [N, C, H, W] on cpu; got ", data_.images.dtype(), " ",
                 shape_str(data_.images.shape()), " on ", data_.images.device());
  SPDLAB_CHECK(data_.labels.dtype() == DType::i64 && data_.labels.dim() == 1 && data_.labels.size(0) == count,
               "BatchLoader: labels must be i64 [", count, "]; got ", data_.labels.dtype(), " ",
               shape_str(data_.labels.shape()));
  const int64_t n = data_.size();
  SPDLAB_CHECK(opt_.batch_size > 0, "BatchLoader: batch_size must be positive; got ", opt_.batch_size);
  SPDLAB_CHECK(n > 0, "BatchLoader: the dataset is empty");
  SPDLAB_CHECK(!opt_.drop_last || n >= opt_.batch_size, "BatchLoader: drop_last with batch_size ",
               opt_.batch_size, " leaves no batch of a dataset of ", n, " samples");
  // The worker reads raw rows; a contiguous copy (usually a no-op) makes row i start at i * C * H * W.
  if (data_.images.defined()) data_.images = data_.images.contiguous();
  data_.labels = data_.labels.contiguous();
  SPDLAB_CHECK(opt_.shard_count >= 1 && opt_.shard_index >= 0 && opt_.shard_index < opt_.shard_count,
               "BatchLoader: shard ", opt_.shard_index, " of ", opt_.shard_count, " does not exist");
  SPDLAB_CHECK(opt_.batch_size >= opt_.shard_count, "BatchLoader: a batch of ", opt_.batch_size,
               " cannot be split over ", opt_.shard_count, " shards (ranks); each needs at least one sample");
  num_batches_ = opt_.drop_last ? n / opt_.batch_size : (n + opt_.batch_size - 1) / opt_.batch_size;
  worker_ = std::thread([this] { worker_loop(); });
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void BatchLoader::start_epoch(int64_t epoch, int64_t first_batch, int64_t end_batch) {
  if (end_batch < 0) end_batch = num_batches_;
  SPDLAB_CHECK(first_batch >= 0 && first_batch <= end_batch && end_batch <= num_batches_,
               "BatchLoader::start_epoch: batches [", first_batch, ", ", end_batch, ") are outside the epoch's ",
               num_batches_, " batches");
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return !building_; });
  const int64_t n = data_.size();
  epoch_ = epoch;
  epoch_key_ = seed_hash(opt_.seed ^ seed_hash(static_cast<uint64_t>(epoch)));
  order_.resize(n);
  for (int64_t i = 0; i < n; ++i) order_[i] = i;
  if (opt_.shuffle) {
    Generator gen(epoch_key_);
    for (int64_t i = n - 1; i > 0; --i)
      std::swap(order_[i], order_[static_cast<int64_t>(gen.next_u64() % static_cast<uint64_t>(i + 1))]);
  }
  ready_.reset();
  error_ = nullptr;
  next_build_ = next_take_ = first_batch;
  end_ = end_batch;
  cv_.notify_all();
}

bool BatchLoader::next(Batch& batch) {
  std::unique_lock<std::mutex> lk(mu_);
  SPDLAB_CHECK(epoch_ >= 0, "BatchLoader::next: call start_epoch(epoch) before asking for batches");
  if (next_take_ >= end_) return false;
  cv_.wait(lk, [&] { return ready_.has_value() || error_ != nullptr; });
  if (error_) {
    std::exception_ptr e = std::exchange(error_, nullptr);
    next_take_ = next_build_ = end_;
    std::rethrow_exception(e);
  }
  batch = std::move(*ready_);
  ready_.reset();
  ++next_take_;
  cv_.notify_all();
  return true;
}

void BatchLoader::worker_loop() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || (!ready_ && !error_ && next_build_ < end_); });
    if (stop_) return;
    const int64_t k = next_build_++;
    building_ = true;
    lk.unlock();
    std::optional<Batch> built;
    std::exception_ptr err;
    try {
      built = build(k);
    } catch (...) {
      err = std::current_exception();
    }
    lk.lock();
    building_ = false;
    if (err)
      error_ = err;
    else
      ready_ = std::move(built);
    cv_.notify_all();
  }
}

std::pair<int64_t, int64_t> BatchLoader::shard_rows(int64_t k) const {
  const int64_t n = data_.size(), bs = opt_.batch_size;
  const int64_t global = std::min(bs, n - k * bs);  // the last batch may be short
  const int64_t i = opt_.shard_index, m = opt_.shard_count;
  const int64_t lo = global * i / m, hi = global * (i + 1) / m;
  return {k * bs + lo, hi - lo};
}

Batch BatchLoader::build(int64_t k) const {
  const auto [begin, count] = shard_rows(k);
  const Shape s = data_.image_shape();
  const int64_t C = s[0], H = s[1], W = s[2], per = C * H * W;
  Batch b{Tensor::empty({count, C, H, W}), Tensor::empty({count}, DType::i64)};
  const bool f32 = data_.images.defined();  // else 8-bit pixels, converted here
  const float* src = f32 ? data_.images.data<float>() : nullptr;
  std::vector<float> scratch(opt_.transform && !f32 ? per : 0);
  const int64_t* labels = data_.labels.data<int64_t>();
  float* x = b.x.data<float>();
  int64_t* y = b.y.data<int64_t>();
  for (int64_t j = 0; j < count; ++j) {
    const int64_t idx = order_[begin + j];
    if (opt_.transform) {
      const float* in = src ? src + idx * per : scratch.data();
      if (!src) data_.read_image(idx, scratch.data());
      opt_.transform(in, x + j * per, C, H, W, seed_hash(epoch_key_ ^ seed_hash(static_cast<uint64_t>(idx))));
    } else if (src) {
      std::memcpy(x + j * per, src + idx * per, per * sizeof(float));
    } else {
      data_.read_image(idx, x + j * per);
    }
    y[j] = labels[idx];
  }
  return b;
}

}  // namespace spdlab::data
