// The MPI backend (see communicator.h), shared by mpi.cpp and the NCCL backend built on it. Only built, and
// only included, where spdlab is built with MPI.
#pragma once
// MPI's C interface only: without these, mpi.h in a C++ file pulls in the removed C++ bindings.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include "dist/communicator.h"

namespace spdlab::dist {

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator();  // MPI_Init_thread (FUNNELED) unless MPI is running; a duplicate of MPI_COMM_WORLD
  ~MpiCommunicator() override;
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  std::string backend() const override { return "mpi"; }
  void all_reduce_sum(Tensor& t) override;
  void all_reduce_sum(double* values, int64_t n) override;
  std::vector<uint8_t> all_gather(const void* data, size_t bytes) override;
  void barrier() override;
  [[noreturn]] void abort(int code) override;

  // The sum in rank order of n host floats, in place: an all-to-all gives each rank one slice of every rank's
  // values, it adds them in rank order, and an all-gather hands the sums back (the traffic of a ring all-reduce,
  // 2 (N-1)/N of the data per rank, but a fixed order of additions).
  void reduce_host(float* x, int64_t n);
  // Waits for a non-blocking MPI call as WaitPolicy says (communicator.h); `what` names it in messages.
  void wait(MPI_Request* request, const char* what);
  MPI_Comm comm() const { return comm_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL, local_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::vector<float> recv_;  // the all-to-all's receive buffer, reused
};

}  // namespace spdlab::dist
