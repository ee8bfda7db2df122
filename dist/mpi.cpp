// The MPI backend: see mpi_communicator.h.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>

#include "core/check.h"
#include "dist/mpi_communicator.h"

namespace spdlab::dist {

namespace {
bool g_we_started_mpi = false;

std::string mpi_error(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, static_cast<size_t>(len));
}

#define SPDLAB_MPI_CALL(call, what)                                                      \
  do {                                                                                   \
    const int rc_ = (call);                                                              \
    SPDLAB_CHECK(rc_ == MPI_SUCCESS, "MPI: ", what, " failed: ", mpi_error(rc_));        \
  } while (0)

double seconds_now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}
}  // namespace

bool built_with_mpi() { return true; }

std::unique_ptr<Communicator> make_mpi() { return std::make_unique<MpiCommunicator>(); }

void finalize() {
  set_world(std::make_unique<SingleProcess>());  // frees the communicators first
  int inited = 0, finalized = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&finalized);
  if (g_we_started_mpi && inited && !finalized) MPI_Finalize();
}

MpiCommunicator::MpiCommunicator() {
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    int provided = 0;
    SPDLAB_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) == MPI_SUCCESS,
                 "MPI: MPI_Init_thread failed");
    g_we_started_mpi = true;
  }
  SPDLAB_MPI_CALL(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);  // errors become spdlab errors with MPI's text
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  SPDLAB_MPI_CALL(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local_),
                  "MPI_Comm_split_type");
  MPI_Comm_rank(local_, &local_rank_);
  MPI_Comm_size(local_, &local_size_);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (local_ != MPI_COMM_NULL) MPI_Comm_free(&local_);
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::wait(MPI_Request* request, const char* what) {
  const WaitPolicy& policy = wait_policy();
  const double t0 = seconds_now();
  double signalled_at = -1;
  int done = 0;
  for (int64_t polls = 0;; ++polls) {
    SPDLAB_MPI_CALL(MPI_Test(request, &done, MPI_STATUS_IGNORE), what);
    if (done) return;
    // A few thousand quick polls (a step's all-reduce on one machine completes within them), then short sleeps:
    // a rank that waits must not take the core from the rank it waits for (2 ranks on 2 cores, oversubscribed).
    if (polls > 2000) {
      timespec ts{0, 50000};
      nanosleep(&ts, nullptr);
    }
    if (polls % 256 != 0) continue;
    const double now = seconds_now();
    if (signalled_at < 0 && policy.interrupted) {
      if (const int sig = policy.interrupted()) {
        signalled_at = now;
        std::fprintf(diagnostics(), "spdlab rank %d/%d: signal %d while waiting for the other ranks (%s%s%s): "
                     "waiting at most %.0f s more for them; if a rank died, the job ends here\n",
                     rank_, size_, sig, what, policy.context.empty() ? "" : ", ", policy.context.c_str(),
                     policy.grace_s);
        std::fflush(diagnostics());
      }
    }
    const bool timed_out = policy.timeout_s > 0 && now - t0 > policy.timeout_s;
    const bool grace_over = signalled_at >= 0 && now - signalled_at > policy.grace_s;
    if (timed_out || grace_over) {
      std::fprintf(diagnostics(),
                   "spdlab rank %d/%d: error: %s%s%s did not complete in %.0f s%s: another rank died or hangs; "
                   "ending every rank (the last checkpoint, if any, is kept: continue with --resume)\n",
                   rank_, size_, what, policy.context.empty() ? "" : " in ", policy.context.c_str(), now - t0,
                   grace_over ? " after a stop signal" : " (SPDLAB_DIST_TIMEOUT sets the limit)");
      std::fflush(nullptr);
      MPI_Abort(comm_, 1);
      std::_Exit(1);
    }
  }
}

void MpiCommunicator::reduce_host(float* x, int64_t n) {
  const int N = size_;
  // Slices of at most 2^26 elements keep every count an int.
  constexpr int64_t kPiece = int64_t(1) << 26;
  if (n > kPiece) {
    for (int64_t s = 0; s < n; s += kPiece) reduce_host(x + s, std::min(kPiece, n - s));
    return;
  }
  std::vector<int> counts(N), displs(N);
  for (int c = 0; c < N; ++c) {
    displs[c] = static_cast<int>(n * c / N);
    counts[c] = static_cast<int>(n * (c + 1) / N) - displs[c];
  }
  const int mine = counts[rank_];
  recv_.resize(static_cast<size_t>(mine) * N);
  std::vector<int> rcounts(N, mine), rdispls(N);
  for (int r = 0; r < N; ++r) rdispls[r] = r * mine;
  MPI_Request req;
  SPDLAB_MPI_CALL(MPI_Ialltoallv(x, counts.data(), displs.data(), MPI_FLOAT, recv_.data(), rcounts.data(),
                                 rdispls.data(), MPI_FLOAT, comm_, &req),
                  "MPI_Ialltoallv");
  wait(&req, "the all-reduce of gradients (all-to-all)");
  float* out = x + displs[rank_];
  for (int i = 0; i < mine; ++i) {
    float s = recv_[i];
    for (int r = 1; r < N; ++r) s += recv_[static_cast<size_t>(r) * mine + i];
    out[i] = s;
  }
  SPDLAB_MPI_CALL(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, counts.data(), displs.data(), MPI_FLOAT,
                                  comm_, &req),
                  "MPI_Iallgatherv");
  wait(&req, "the all-reduce of gradients (all-gather)");
}

void MpiCommunicator::all_reduce_sum(Tensor& t) {
  SPDLAB_CHECK(t.dtype() == DType::f32 && t.is_contiguous(), "all_reduce_sum: expected a contiguous f32 tensor, got ",
               dtype_name(t.dtype()), t.is_contiguous() ? "" : " (not contiguous)");
  if (size_ == 1 || t.numel() == 0) return;
  if (t.device().is_cpu()) {
    reduce_host(t.data<float>(), t.numel());
    return;
  }
  // A GPU tensor without NCCL: through host memory.
  Tensor h = t.cpu().contiguous();
  reduce_host(h.data<float>(), h.numel());
  t.copy_(h);
}

void MpiCommunicator::all_reduce_sum(double* values, int64_t n) {
  if (size_ == 1 || n == 0) return;
  const std::vector<uint8_t> all = all_gather(values, static_cast<size_t>(n) * sizeof(double));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int r = 0; r < size_; ++r) {
      double v;
      std::memcpy(&v, all.data() + (static_cast<size_t>(r) * n + i) * sizeof v, sizeof v);
      s += v;
    }
    values[i] = s;
  }
}

std::vector<uint8_t> MpiCommunicator::all_gather(const void* data, size_t bytes) {
  SPDLAB_CHECK(bytes <= static_cast<size_t>(INT_MAX) / static_cast<size_t>(size_), "all_gather: ", bytes,
               " bytes per rank is too many for one MPI call");
  std::vector<uint8_t> out(bytes * static_cast<size_t>(size_));
  MPI_Request req;
  SPDLAB_MPI_CALL(MPI_Iallgather(data, static_cast<int>(bytes), MPI_BYTE, out.data(), static_cast<int>(bytes),
                                 MPI_BYTE, comm_, &req),
                  "MPI_Iallgather");
  wait(&req, "an all-gather");
  return out;
}

void MpiCommunicator::barrier() {
  MPI_Request req;
  SPDLAB_MPI_CALL(MPI_Ibarrier(comm_, &req), "MPI_Ibarrier");
  wait(&req, "a barrier");
}

void MpiCommunicator::abort(int code) {
  std::fflush(nullptr);
  MPI_Abort(comm_, code);
  std::_Exit(code);
}

}  // namespace spdlab::dist
