// The NCCL backend: GPU tensors are summed by NCCL on the GPUs; everything else (host values, barriers, the
// bootstrap) goes through MPI. One GPU per rank: cuda:<local rank>. Built only in a CUDA build with MPI.
#include <cuda_runtime.h>
#include <nccl.h>
#include <time.h>

#include <chrono>
#include <cstring>

#include "core/check.h"
#include "dist/mpi_communicator.h"
#include "kernels/kernels.h"

namespace spdlab::dist {

namespace {

#define SPDLAB_NCCL_CALL(call, what)                                                            \
  do {                                                                                          \
    const ncclResult_t rc_ = (call);                                                            \
    SPDLAB_CHECK(rc_ == ncclSuccess || rc_ == ncclInProgress, "NCCL: ", what, " failed: ",      \
                 ncclGetErrorString(rc_));                                                      \
  } while (0)

double seconds_now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

class NcclCommunicator final : public MpiCommunicator {
 public:
  NcclCommunicator() {
    int devices = 0;
    SPDLAB_CHECK(cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0,
                 "NCCL: this machine has no CUDA GPU; run the CPU build of data parallel (--device cpu)");
    SPDLAB_CHECK(local_size() <= devices, "NCCL: ", local_size(), " ranks run on this machine but it has ", devices,
                 " GPUs; NCCL needs one GPU per rank: start at most ", devices, " ranks per machine");
    device_ = local_rank();
    SPDLAB_CHECK(cudaSetDevice(device_) == cudaSuccess, "NCCL: cannot select GPU ", device_);
    ncclUniqueId id;
    if (rank() == 0) SPDLAB_NCCL_CALL(ncclGetUniqueId(&id), "ncclGetUniqueId");
    // The bootstrap: rank 0's id to every rank, through MPI (as llm.c does).
    std::vector<uint8_t> all = all_gather(&id, sizeof id);
    std::memcpy(&id, all.data(), sizeof id);
    SPDLAB_NCCL_CALL(ncclCommInitRank(&nccl_, size(), id, rank()), "ncclCommInitRank");
    SPDLAB_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking) == cudaSuccess,
                 "NCCL: cannot create a stream on GPU ", device_);
  }
  ~NcclCommunicator() override {
    if (nccl_) ncclCommDestroy(nccl_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  std::string backend() const override { return "nccl"; }

  void all_reduce_sum(Tensor& t) override {
    if (t.device().is_cpu()) return MpiCommunicator::all_reduce_sum(t);
    SPDLAB_CHECK(t.dtype() == DType::f32 && t.is_contiguous(), "all_reduce_sum: expected a contiguous f32 tensor");
    SPDLAB_CHECK(t.device().index == device_, "NCCL: rank ", rank(), " owns cuda:", device_, " but the tensor is on ",
                 t.device().str(), "; with several ranks per machine, --device cuda picks each rank's own GPU");
    kernels::get(t.device()).synchronize();  // the gradients are written
    SPDLAB_NCCL_CALL(ncclAllReduce(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), ncclFloat, ncclSum,
                                   nccl_, stream_),
                     "ncclAllReduce");
    wait_stream("the NCCL all-reduce of gradients");
  }

 private:
  // Polls the stream rather than blocking in it, so a dead peer becomes an error after the timeout (NCCL itself
  // would wait forever), and NCCL's asynchronous errors are reported.
  void wait_stream(const char* what) {
    const WaitPolicy& policy = wait_policy();
    const double t0 = seconds_now();
    for (;;) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return;
      SPDLAB_CHECK(q == cudaErrorNotReady, "NCCL: ", what, ": ", cudaGetErrorString(q));
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(nccl_, &async);
      SPDLAB_CHECK(async == ncclSuccess || async == ncclInProgress, "NCCL: ", what, ": ", ncclGetErrorString(async));
      if (policy.timeout_s > 0 && seconds_now() - t0 > policy.timeout_s) {
        std::fprintf(diagnostics(), "spdlab rank %d/%d: error: %s did not complete in %.0f s: another rank died or "
                     "hangs; ending every rank\n", rank(), size(), what, policy.timeout_s);
        std::fflush(nullptr);
        ncclCommAbort(nccl_);
        nccl_ = nullptr;
        abort(1);
      }
      timespec ts{0, 20000};
      nanosleep(&ts, nullptr);
    }
  }

  ncclComm_t nccl_ = nullptr;
  cudaStream_t stream_ = nullptr;
  int device_ = 0;
};

}  // namespace

bool built_with_nccl() { return true; }
std::unique_ptr<Communicator> make_nccl() { return std::make_unique<NcclCommunicator>(); }

}  // namespace spdlab::dist
