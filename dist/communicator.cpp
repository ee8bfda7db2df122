// See communicator.h. The backends live in mpi.cpp and nccl.cpp; this file holds what all of them share.
#include "dist/communicator.h"

#include <cstdlib>
#include <cstring>

#include "core/autograd.h"
#include "core/check.h"
#include "core/ops.h"

namespace spdlab::dist {

std::vector<uint8_t> SingleProcess::all_gather(const void* data, size_t bytes) {
  const auto* p = static_cast<const uint8_t*>(data);
  return std::vector<uint8_t>(p, p + bytes);
}

void SingleProcess::abort(int code) {
  std::fflush(nullptr);
  std::_Exit(code);
}

namespace {
std::unique_ptr<Communicator>& world_slot() {
  static std::unique_ptr<Communicator> w = std::make_unique<SingleProcess>();
  return w;
}
std::FILE* g_diagnostics = nullptr;
}  // namespace

Communicator& world() { return *world_slot(); }

void set_world(std::unique_ptr<Communicator> c) {
  SPDLAB_CHECK(c != nullptr, "dist::set_world: no communicator");
  world_slot() = std::move(c);
}

std::unique_ptr<Communicator> swap_world(std::unique_ptr<Communicator> c) {
  SPDLAB_CHECK(c != nullptr, "dist::swap_world: no communicator");
  std::swap(world_slot(), c);
  return c;
}

WaitPolicy& wait_policy() {
  static WaitPolicy p;
  return p;
}

std::FILE* diagnostics() { return g_diagnostics ? g_diagnostics : stderr; }
void set_diagnostics(std::FILE* f) { g_diagnostics = f; }

bool launched_by_mpi() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") || std::getenv("PMIX_RANK");
}

#ifndef SPDLAB_WITH_MPI
bool built_with_mpi() { return false; }
std::unique_ptr<Communicator> make_mpi() {
  SPDLAB_FAIL("this spdlab was built without MPI, so it cannot run as one of several processes: install Open MPI "
              "(apt-get install openmpi-bin libopenmpi-dev) and build again (cmake finds it; -DSPDLAB_MPI=ON "
              "insists on it)");
}
void finalize() {}
#endif
#ifndef SPDLAB_WITH_NCCL
bool built_with_nccl() { return false; }
std::unique_ptr<Communicator> make_nccl() {
  SPDLAB_FAIL("this spdlab was built without NCCL: data parallel on GPUs needs a CUDA build (-DSPDLAB_CUDA=ON) with "
              "MPI and NCCL (/usr/local/cuda ships NCCL)");
}
#endif

void all_reduce_grads(const NamedTensors& params, Communicator& comm, double weight, size_t bucket_bytes) {
  autograd::NoGradGuard ng;
  std::vector<Tensor> grads;  // each flattened: a view of the parameter's gradient
  int64_t total = 0;
  for (const auto& [name, p] : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    SPDLAB_CHECK(g.dtype() == DType::f32 && g.is_contiguous(), "all_reduce_grads: the gradient of '", name,
                 "' is ", dtype_name(g.dtype()), g.is_contiguous() ? "" : ", not contiguous",
                 "; expected a contiguous f32 tensor");
    SPDLAB_CHECK(grads.empty() || g.device() == grads.front().device(), "all_reduce_grads: the gradient of '", name,
                 "' is on ", g.device().str(), " but the first one is on ", grads.front().device().str());
    grads.push_back(g.view({g.numel()}));
    total += g.numel();
  }
  if (grads.empty()) return;
  if (comm.size() == 1) {
    if (weight != 1)
      for (Tensor& g : grads) g.copy_(g * weight);
    return;
  }
  const int64_t cap = std::max<int64_t>(1, static_cast<int64_t>(bucket_bytes / sizeof(float)));
  Tensor bucket = Tensor::empty({std::min(cap, total)}, DType::f32, grads.front().device());
  // The gradients form one virtual array, cut into buckets of `cap` elements: a tensor may straddle two.
  size_t gi = 0;
  int64_t goff = 0;  // position in grads[gi]
  for (int64_t start = 0; start < total; start += cap) {
    const int64_t len = std::min(cap, total - start);
    struct Piece {
      size_t g;
      int64_t goff, boff, n;
    };
    std::vector<Piece> pieces;
    for (int64_t boff = 0; boff < len;) {
      const int64_t n = std::min(len - boff, grads[gi].numel() - goff);
      pieces.push_back({gi, goff, boff, n});
      Tensor src = grads[gi].narrow(0, goff, n);
      bucket.narrow(0, boff, n).copy_(weight == 1 ? src : src * weight);
      boff += n;
      goff += n;
      if (goff == grads[gi].numel()) {
        ++gi;
        goff = 0;
      }
    }
    Tensor b = bucket.narrow(0, 0, len);
    comm.all_reduce_sum(b);
    for (const Piece& p : pieces) grads[p.g].narrow(0, p.goff, p.n).copy_(bucket.narrow(0, p.boff, p.n));
  }
}

uint64_t digest(const NamedTensors& tensors) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a offset basis
  auto mix = [&h](const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 1099511628211ull;
    }
  };
  for (const auto& [name, t] : tensors) {
    mix(name.data(), name.size());
    if (!t.defined()) continue;
    for (int64_t d : t.shape()) mix(&d, sizeof d);
    if (t.numel() == 0) continue;
    const Tensor c = t.detach().cpu().contiguous();
    // Whole 8-byte words per step (bytes would take 8x longer on a ViT's weights), then the tail.
    const auto* p = static_cast<const uint8_t*>(c.raw_data());
    const size_t n = static_cast<size_t>(c.numel()) * dtype_size(c.dtype());
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      h = (h ^ w) * 1099511628211ull;
    }
    mix(p + i, n - i);
  }
  return h;
}

void check_same_on_all_ranks(Communicator& comm, uint64_t value, const std::string& what) {
  if (comm.size() == 1) return;
  const std::vector<uint8_t> all = comm.all_gather(&value, sizeof value);
  uint64_t first;
  std::memcpy(&first, all.data(), sizeof first);
  for (int r = 1; r < comm.size(); ++r) {
    uint64_t v;
    std::memcpy(&v, all.data() + r * sizeof v, sizeof v);
    SPDLAB_CHECK(v == first, what, " differ between ranks: rank ", r, " holds digest ", v, ", rank 0 holds ", first,
                 "; the replicas are no longer the same model (a nondeterministic kernel, or ranks given different "
                 "inputs or flags)");
  }
}

}  // namespace spdlab::dist
