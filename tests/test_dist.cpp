// Data parallel (dist/): what holds without several processes. The batch shards of n loaders make up one
// loader's batch; the gradients of shards, weighted by their share and summed, are the gradient of the whole
// batch; all_reduce_grads packs, reduces and unpacks every element in its place, whatever the bucket size;
// evaluation parts add up to the whole; replicas that differ are caught. The MPI runs themselves (2 ranks
// against 1 process, kill and resume, a hung rank) are in tests/dist/run.sh.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>

#include "core/autograd.h"
#include "core/ops.h"
#include "data/loader.h"
#include "dist/communicator.h"
#include "models/evaluate.h"
#include "models/vit.h"

using namespace spdlab;

namespace {

data::Dataset toy_data(int64_t n, int64_t side = 8) {
  data::Dataset d;
  Generator g(7);
  d.images = Tensor::rand({n, 1, side, side}, g);
  std::vector<int64_t> y(n);
  for (int64_t i = 0; i < n; ++i) y[i] = (i * 7) % 10;
  d.labels = Tensor::from_vector(y, {n});
  d.num_classes = 10;
  return d;
}

// A group of `n` ranks seen from rank 0, whose partners all hold `partner` per element: all_reduce_sum adds
// (n - 1) * partner(position), where position counts elements across calls (so it sees the packing order).
class FakeGroup final : public dist::Communicator {
 public:
  FakeGroup(int n, std::function<float(int64_t)> partner) : n_(n), partner_(std::move(partner)) {}
  int rank() const override { return 0; }
  int size() const override { return n_; }
  std::string backend() const override { return "fake"; }
  void all_reduce_sum(Tensor& t) override {
    float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] += static_cast<float>(n_ - 1) * partner_(position_++);
    ++calls;
  }
  void all_reduce_sum(double* v, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) v[i] *= n_;
  }
  std::vector<uint8_t> all_gather(const void* data, size_t bytes) override {
    std::vector<uint8_t> out(bytes * n_);
    for (int r = 0; r < n_; ++r) std::memcpy(out.data() + r * bytes, data, bytes);
    if (differ_at >= 0) out[differ_at * bytes] ^= 1;  // one partner disagrees
    return out;
  }
  void barrier() override {}
  [[noreturn]] void abort(int) override { throw Error("abort"); }
  int calls = 0;
  int differ_at = -1;

 private:
  int n_;
  std::function<float(int64_t)> partner_;
  int64_t position_ = 0;
};

models::ViTConfig micro() {
  models::ViTConfig c = models::vit_preset("vit_fmnist_tiny");
  c.img_size = 8;
  c.patch_size = 4;
  c.embed_dim = 16;
  c.depth = 2;
  c.num_heads = 2;
  return c;
}

}  // namespace

TEST_SUITE("dist") {

TEST_CASE("loader shards: n loaders build exactly one loader's batches, each sample transformed alike") {
  const data::Dataset d = toy_data(50);
  auto transform = data::domain_transform(data::Domain::noise);  // random per sample: its seed must not move
  for (int64_t shards : {1, 2, 3, 7}) {
    data::BatchLoader whole(d, {12, true, true, 5, transform});
    std::vector<std::unique_ptr<data::BatchLoader>> parts;
    for (int64_t i = 0; i < shards; ++i) {
      data::LoaderOptions o{12, true, true, 5, transform};
      o.shard_index = i;
      o.shard_count = shards;
      parts.push_back(std::make_unique<data::BatchLoader>(d, o));
      CHECK(parts.back()->num_batches() == whole.num_batches());
    }
    for (int64_t epoch : {0, 3}) {
      whole.start_epoch(epoch, 1);
      for (auto& p : parts) p->start_epoch(epoch, 1);
      data::Batch w;
      while (whole.next(w)) {
        std::vector<float> x;
        std::vector<int64_t> y;
        for (auto& p : parts) {
          data::Batch b;
          REQUIRE(p->next(b));
          CHECK(b.y.size(0) >= 12 / shards);
          auto bx = b.x.to_vector_f32();
          auto by = b.y.to_vector_i64();
          x.insert(x.end(), bx.begin(), bx.end());
          y.insert(y.end(), by.begin(), by.end());
        }
        CHECK(x == w.x.to_vector_f32());  // bit for bit
        CHECK(y == w.y.to_vector_i64());
      }
    }
  }
  data::LoaderOptions bad{4, true, true, 0, {}};
  bad.shard_count = 5;
  CHECK_THROWS_WITH_AS(data::BatchLoader(d, bad), doctest::Contains("a batch of 4 cannot be split over 5 shards"),
                       Error);
}

TEST_CASE("the shard gradients, weighted by their share and summed, are the whole batch's gradient") {
  models::VisionTransformer model(micro(), 3);
  const data::Dataset d = toy_data(7);
  auto grads_of = [&](int64_t lo, int64_t n) {
    Tensor loss = cross_entropy(model.forward(model.preprocess(d.images.narrow(0, lo, n))), d.labels.narrow(0, lo, n));
    for (auto& [name, p] : model.named_parameters()) p.zero_grad();
    loss.backward();
    std::vector<std::vector<float>> g;
    for (auto& [name, p] : model.named_parameters()) g.push_back(p.grad().to_vector_f32());
    return g;
  };
  const auto whole = grads_of(0, 7);
  const auto a = grads_of(0, 3), b = grads_of(3, 4);  // an uneven split: shares 3/7 and 4/7
  double d2 = 0, w2 = 0;
  for (size_t t = 0; t < whole.size(); ++t)
    for (size_t i = 0; i < whole[t].size(); ++i) {
      const double sum = 3.0 / 7 * a[t][i] + 4.0 / 7 * b[t][i];
      d2 += (sum - whole[t][i]) * (sum - whole[t][i]);
      w2 += double(whole[t][i]) * whole[t][i];
    }
  CHECK(w2 > 0);
  CHECK(std::sqrt(d2 / w2) < 1e-6);
}

TEST_CASE("all_reduce_grads: every element is weighted, reduced and put back in place, for any bucket size") {
  models::VisionTransformer model(micro(), 1);
  const data::Dataset d = toy_data(4);
  cross_entropy(model.forward(model.preprocess(d.images)), d.labels).backward();
  auto params = model.named_parameters();
  params[2].second.zero_grad();  // a tensor without a gradient is skipped, not packed
  std::vector<std::vector<float>> before;
  int64_t total = 0;
  for (auto& [n, p] : params) {
    before.push_back(p.grad().defined() ? p.grad().to_vector_f32() : std::vector<float>{});
    total += p.grad().defined() ? p.numel() : 0;
  }
  for (size_t bucket_bytes : {size_t(4) * 7, size_t(4) * 1000, dist::kBucketBytes}) {
    models::VisionTransformer copy(micro(), 1);
    // The same gradients again, on a fresh model.
    cross_entropy(copy.forward(copy.preprocess(d.images)), d.labels).backward();
    auto cp = copy.named_parameters();
    cp[2].second.zero_grad();
    // Two ranks; the partner's element k (in packing order) is k / 1024: each element must come back as
    // 0.25 * g + k / 1024 at its own position.
    FakeGroup group(2, [](int64_t k) { return static_cast<float>(k) / 1024.0f; });
    dist::all_reduce_grads(cp, group, 0.25, bucket_bytes);
    CHECK(group.calls == (total * 4 + static_cast<int64_t>(bucket_bytes) - 1) / static_cast<int64_t>(bucket_bytes));
    int64_t k = 0;
    for (size_t t = 0; t < cp.size(); ++t) {
      if (before[t].empty()) {
        CHECK_FALSE(cp[t].second.grad().defined());
        continue;
      }
      const auto g = cp[t].second.grad().to_vector_f32();
      for (size_t i = 0; i < g.size(); ++i, ++k)
        REQUIRE(g[i] == 0.25f * before[t][i] + static_cast<float>(k) / 1024.0f);
    }
    CHECK(k == total);
  }
  // One rank: only the weight applies.
  dist::SingleProcess one;
  dist::all_reduce_grads(params, one, 0.5);
  CHECK(params[0].second.grad().to_vector_f32()[0] == 0.5f * before[0][0]);
}

TEST_CASE("distributed evaluation: the parts' counts add up to one process's, batch for batch") {
  models::VisionTransformer model(micro(), 2);
  const data::Dataset d = toy_data(23);
  const auto whole = models::accuracy_counts(model, d, {}, 0, 4, {});
  CHECK(whole.seen == 23);
  for (int64_t parts : {2, 3, 6, 8}) {  // 6 batches: 8 parts leave some empty
    int64_t correct = 0, seen = 0;
    for (int64_t p = 0; p < parts; ++p) {
      const auto c = models::accuracy_counts(model, d, {}, 0, 4, {}, p, parts);
      correct += c.correct;
      seen += c.seen;
    }
    CHECK(seen == whole.seen);
    CHECK(correct == whole.correct);
  }
}

TEST_CASE("replicas: digests see every bit, and a rank that differs is named") {
  models::VisionTransformer a(micro(), 4), b(micro(), 4);
  CHECK(dist::digest(a.named_parameters()) == dist::digest(b.named_parameters()));
  {
    autograd::NoGradGuard ng;
    float* w = b.named_parameters()[5].second.data<float>();
    w[3] = std::nextafter(w[3], 1.0f);  // one ulp
  }
  CHECK(dist::digest(a.named_parameters()) != dist::digest(b.named_parameters()));
  FakeGroup same(3, [](int64_t) { return 0.0f; });
  dist::check_same_on_all_ranks(same, 42, "the parameters");
  FakeGroup odd(3, [](int64_t) { return 0.0f; });
  odd.differ_at = 2;
  CHECK_THROWS_WITH_AS(dist::check_same_on_all_ranks(odd, 42, "the final parameters"),
                       doctest::Contains("the final parameters differ between ranks: rank 2"), Error);
}

TEST_CASE("without mpirun the world is one process, and a build without MPI says how to get it") {
  CHECK(dist::world().size() == 1);
  CHECK(dist::world().rank() == 0);
  CHECK(dist::world().backend() == "single");
  if (!dist::built_with_mpi())
    CHECK_THROWS_WITH_AS(dist::make_mpi(), doctest::Contains("apt-get install openmpi-bin libopenmpi-dev"), Error);
  if (!dist::built_with_nccl())
    CHECK_THROWS_WITH_AS(dist::make_nccl(), doctest::Contains("built without NCCL"), Error);
}

}  // TEST_SUITE
