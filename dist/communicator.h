// Data parallelism: several processes, each with a replica of the model, each training on its shard of every
// global batch, their gradients summed before the optimizer step so every replica takes the same step.
//
// A Communicator is the group of processes (ranks). Three backends, one interface:
//   - SingleProcess: one rank; every collective is the identity (the default: nothing changes for a plain run);
//   - MPI (dist/mpi.cpp, when spdlab is built with Open MPI): processes started by `mpirun -np N`, on one machine
//     or several; CPU tensors are reduced with MPI, GPU tensors through a host copy;
//   - NCCL (dist/nccl.cpp, in a CUDA build with MPI): GPU tensors reduced by NCCL on the GPUs, its communicator
//     bootstrapped through MPI (rank 0 makes the unique id and broadcasts it), host values through MPI.
// The models and optimizers know nothing of this: the training loop calls all_reduce_grads once per step.
// Every collective is deterministic: the same inputs give the same bits on every run, and every rank receives
// the same bits (so replicas never drift apart).
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace spdlab::dist {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The ranks on this machine, and this rank's index among them (GPU index, thread share).
  virtual int local_rank() const { return rank(); }
  virtual int local_size() const { return size(); }
  virtual std::string backend() const = 0;  // "single", "mpi" or "nccl"
  bool is_root() const { return rank() == 0; }

  // Elementwise sum across ranks of a contiguous f32 tensor, in place, on its device. The sum is taken in rank
  // order (rank 0 + rank 1 + ...), whatever the backend's transport; every rank receives the same bits.
  // (NCCL's own reduction order is fixed for a fixed group but is NCCL's, not rank order.)
  virtual void all_reduce_sum(Tensor& t) = 0;
  // The same for host doubles (losses, counts, flags): exact for integers below 2^53.
  virtual void all_reduce_sum(double* values, int64_t n) = 0;
  // Every rank's `bytes` bytes, concatenated in rank order (all ranks pass the same count).
  virtual std::vector<uint8_t> all_gather(const void* data, size_t bytes) = 0;
  virtual void barrier() = 0;
  // Ends every rank's process at once (MPI_Abort); a single process just exits.
  [[noreturn]] virtual void abort(int code) = 0;
};

// One rank, no communication.
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "single"; }
  void all_reduce_sum(Tensor&) override {}
  void all_reduce_sum(double*, int64_t) override {}
  std::vector<uint8_t> all_gather(const void* data, size_t bytes) override;
  void barrier() override {}
  [[noreturn]] void abort(int code) override;
};

// The group this process belongs to: SingleProcess until set_world is called (the spdlab tool calls it with
// init_from_environment() at startup).
Communicator& world();
void set_world(std::unique_ptr<Communicator> c);
// Puts `c` in place of the world and hands back the one it replaces (to put back later): a rank that works
// alone for a while (compare --split runs) swaps in a SingleProcess.
std::unique_ptr<Communicator> swap_world(std::unique_ptr<Communicator> c);

// What a collective does while it waits for the other ranks (MPI and NCCL backends):
//   - after `timeout_s` seconds without completing (0: never), it prints which collective on which rank timed out
//     and aborts every rank: a rank that died or hangs cannot leave the others waiting forever;
//   - `interrupted()` (optional) is polled; when it returns a signal number the wait says so on this rank's
//     diagnostics stream and goes on for at most `grace_s` more seconds (a stop requested of every rank lets
//     the step finish; a stop because another rank died ends here).
struct WaitPolicy {
  double timeout_s = 300;
  double grace_s = 30;
  std::function<int()> interrupted;
  std::string context;  // where the caller is ("finetune spd, step 12"), for the messages; may be empty
};
WaitPolicy& wait_policy();
// Where a rank's own messages go (a timeout, a signal while waiting); stderr unless set. The spdlab tool
// silences the other output of ranks other than 0 and points this at their real stderr.
std::FILE* diagnostics();
void set_diagnostics(std::FILE* f);

// Whether this process was started by an MPI launcher (mpirun, mpiexec, srun: OMPI_COMM_WORLD_SIZE, PMI_SIZE or
// PMIX_RANK in the environment), and what this build supports.
bool launched_by_mpi();
bool built_with_mpi();
bool built_with_nccl();
// The MPI group of this process (MPI_Init on first use) and the NCCL group on top of it (one GPU per rank:
// cuda:<local rank>). Each fails with the reason where the build lacks it.
std::unique_ptr<Communicator> make_mpi();
std::unique_ptr<Communicator> make_nccl();
// Ends MPI (MPI_Finalize) if it was started; a no-op otherwise. Every rank calls it once, at exit.
void finalize();

// The gradients of `params` (those that have one, in list order) summed across ranks after each is scaled by
// `weight` (a rank with n of the global batch's B samples passes n / B: the sum is then the gradient of the
// global batch's mean loss). They are packed into buckets of `bucket_bytes` on their device, reduced one
// bucket after another in a fixed order, and unpacked. With one rank, only the scaling happens (and none at
// weight 1).
constexpr size_t kBucketBytes = size_t(4) << 20;
void all_reduce_grads(const NamedTensors& params, Communicator& comm, double weight,
                      size_t bucket_bytes = kBucketBytes);

// A 64-bit digest of the tensors' names, shapes and bits (FNV-1a over the bytes; GPU tensors are copied to
// the host).
uint64_t digest(const NamedTensors& tensors);
// Fails on every rank, naming the first rank whose `value` differs from rank 0's and `what` it is, unless all
// ranks passed the same value. Used to prove that replicas hold the same parameters and made the same
// decisions (SPD's per-tensor counts), not to assume it.
void check_same_on_all_ranks(Communicator& comm, uint64_t value, const std::string& what);

}  // namespace spdlab::dist
