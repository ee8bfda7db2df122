// The spdlab command-line tool: one executable, one subcommand per job (see examples/cli/).
// This is the only place where an error becomes a message and an exit status.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>

#include "core/check.h"
#include "examples/cli/commands.h"
#include "dist/communicator.h"
#include "examples/cli/run_state.h"
#include "kernels/threads.h"

// Started by mpirun (data parallel): joins the MPI group. Ranks other than 0 keep their stderr for their own
// messages (errors, and what a collective says when it waits too long) and silence the rest, which rank 0
// prints once. Each rank gets an equal share of the machine's cores unless SPDLAB_NUM_THREADS or --threads says.
static void join_ranks(const spdlab::cli::Command& c) {
  namespace dist = spdlab::dist;
  dist::set_world(dist::make_mpi());
  dist::Communicator& w = dist::world();
  if (w.size() == 1) return;
  SPDLAB_CHECK(c.data_parallel, "'", c.name, "' runs in one process; start it without mpirun (pretrain, finetune, "
               "eval and compare run data parallel)");
  if (const char* t = std::getenv("SPDLAB_DIST_TIMEOUT")) {
    char* end = nullptr;
    const double s = std::strtod(t, &end);
    SPDLAB_CHECK(end != t && *end == '\0' && s >= 0, "SPDLAB_DIST_TIMEOUT: expected seconds (0: wait forever), got '",
                 t, "'");
    dist::wait_policy().timeout_s = s;
  }
  dist::wait_policy().interrupted = [] { return spdlab::cli::stop_requested(); };
  if (std::getenv("SPDLAB_NUM_THREADS") == nullptr) {
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    spdlab::set_num_threads(std::max(1, cores / std::max(1, w.local_size())));
  }
  if (!w.is_root()) {
    const int own = dup(2);
    if (std::FILE* f = own >= 0 ? fdopen(own, "w") : nullptr) dist::set_diagnostics(f);
    const int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null >= 0) {
      dup2(null, 1);
      dup2(null, 2);
      close(null);
    }
  }
}

// An error's one line: rank 0's on stderr as always; another rank's on its own stream, saying which rank.
static void report(const char* command, const char* kind, const char* what) {
  namespace dist = spdlab::dist;
  dist::Communicator& w = dist::world();
  if (w.size() > 1 && !w.is_root())
    std::fprintf(dist::diagnostics(), "spdlab %s (rank %d/%d): %s%s\n", command, w.rank(), w.size(), kind, what);
  else
    std::fprintf(stderr, "spdlab %s: %s%s\n", command, kind, what);
  std::fflush(nullptr);
}

static void print_usage() {
  std::fprintf(stderr, "usage: spdlab <command> [flags]   (spdlab <command> --help for its flags)\n\ncommands:\n");
  for (const auto& c : spdlab::cli::kCommands) std::fprintf(stderr, "  %-10s %s\n", c.name, c.summary);
}

int main(int argc, char** argv) {
  // OpenMP threads that spin at barriers stall a run whenever another process holds a core (a 3.7x slowdown was
  // measured with one compiler job beside a training run); passive waiting cost nothing measurable on an idle
  // machine. libgomp reads the policy only at load time, so the tool restarts itself once with it set.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);  // returns only on failure; then carry on with the default policy
  }
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  // A write past the file-size limit (ulimit -f) then fails with EFBIG and is reported, instead of killing the
  // tool without a word; every output goes through a temporary file, so nothing partial is left.
  std::signal(SIGXFSZ, SIG_IGN);
  std::string name = argv[1];
  for (const auto& c : spdlab::cli::kCommands) {
    if (c.name != name) continue;
    // A failing or interrupted rank exits without MPI_Finalize (which would wait for the others); mpirun sees
    // its status and ends the job.
    try {
      if (spdlab::dist::launched_by_mpi()) join_ranks(c);
      const int status = c.run(argc, argv);
      spdlab::dist::finalize();
      return status;
    } catch (const spdlab::cli::Interrupted& e) {
      report(name.c_str(), "", e.what());
      return 128 + e.signal();
    } catch (const spdlab::Error& e) {
      report(name.c_str(), "error: ", e.what());
      return 1;
    } catch (const std::exception& e) {
      report(name.c_str(), "error: ", e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "spdlab: unknown command '%s'\n", name.c_str());
  print_usage();
  return 2;
}
