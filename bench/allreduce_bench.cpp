// The cost of summing a model's gradients across ranks, run under mpirun:
//   mpirun -np N ./build/allreduce_bench [--arch vit_tiny_patch16_224] [--rounds 20] [--bucket-mb 4]
// Times, per round, spdlab's dist::all_reduce_grads on the model's gradient set (4 MB buckets, rank-order sums:
// an all-to-all and an all-gather per bucket, plus packing and unpacking), then MPI_Allreduce on the same bytes
// as one flat buffer (Open MPI's own algorithm, no packing, no fixed order), alternating the two. Rank 0 prints
// one JSON line per method: the median and min ms, and the bus bandwidth 2 (N-1)/N * bytes / time (the traffic
// per rank of a bandwidth-optimal all-reduce, as NCCL's tests report it).
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "dist/communicator.h"
#include "models/vit.h"

using namespace spdlab;

static double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char** argv) {
  std::string arch = "vit_tiny_patch16_224";
  int rounds = 20;
  double bucket_mb = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i];
    if (f == "--arch") arch = argv[i + 1];
    else if (f == "--rounds") rounds = std::max(1, std::atoi(argv[i + 1]));
    else if (f == "--bucket-mb") bucket_mb = std::atof(argv[i + 1]);
    else {
      std::fprintf(stderr, "allreduce_bench: unknown flag %s (--arch NAME, --rounds N, --bucket-mb MB)\n", f.c_str());
      return 2;
    }
  }
  dist::set_world(dist::make_mpi());
  dist::Communicator& comm = dist::world();
  models::VisionTransformer model(models::vit_preset(arch), 0);
  auto params = model.named_parameters();
  int64_t n = 0;
  {
    autograd::NoGradGuard ng;
    Generator g(1 + comm.rank());
    for (auto& [name, p] : params) {
      p.impl()->grad = Tensor::randn(p.shape(), g).impl_ptr();
      n += p.numel();
    }
  }
  std::vector<float> flat(static_cast<size_t>(n)), out(static_cast<size_t>(n));
  for (size_t i = 0; i < flat.size(); ++i) flat[i] = static_cast<float>(i % 97) * 1e-3f;
  std::vector<double> ours, theirs;
  const size_t bucket = static_cast<size_t>(bucket_mb * (1 << 20));
  for (int r = -2; r < rounds; ++r) {  // two warm-up rounds
    comm.barrier();
    double t0 = now_s();
    dist::all_reduce_grads(params, comm, 1.0 / comm.size(), bucket);
    double t1 = now_s();
    comm.barrier();
    double t2 = now_s();
    MPI_Allreduce(flat.data(), out.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    double t3 = now_s();
    // A rank's time is its own; the slowest rank's is the step's.
    double mine[2] = {t1 - t0, t3 - t2}, worst[2];
    MPI_Allreduce(mine, worst, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (r >= 0) {
      ours.push_back(worst[0]);
      theirs.push_back(worst[1]);
    }
  }
  if (comm.is_root()) {
    const double bytes = 4.0 * n, N = comm.size();
    auto report = [&](const char* method, std::vector<double> t) {
      std::sort(t.begin(), t.end());
      const double med = t[t.size() / 2];
      std::printf("{\"bench\":\"allreduce\",\"method\":\"%s\",\"arch\":\"%s\",\"ranks\":%d,\"threads_per_rank\":%s,"
                  "\"params\":%lld,\"mbytes\":%.2f,\"bucket_mb\":%.1f,\"rounds\":%d,\"median_ms\":%.3f,\"min_ms\":%.3f,"
                  "\"busbw_gbs\":%.3f}\n",
                  method, arch.c_str(), comm.size(), std::getenv("SPDLAB_NUM_THREADS") ? std::getenv("SPDLAB_NUM_THREADS") : "null",
                  static_cast<long long>(n), bytes / 1e6, bucket_mb, rounds, 1e3 * med, 1e3 * t.front(),
                  2 * (N - 1) / N * bytes / med / 1e9);
    };
    report("spdlab_all_reduce_grads", ours);
    report("mpi_allreduce", theirs);
  }
  dist::finalize();
  return 0;
}
