// The spdlab command-line tool: one executable, one subcommand per job (see examples/cli/).
// This is the only place where an error becomes a message and an exit status.
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "core/check.h"
#include "examples/cli/commands.h"
#include "examples/cli/run_state.h"

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
    try {
      return c.run(argc, argv);
    } catch (const spdlab::cli::Interrupted& e) {
      std::fprintf(stderr, "spdlab %s: %s\n", name.c_str(), e.what());
      return 128 + e.signal();
    } catch (const spdlab::Error& e) {
      std::fprintf(stderr, "spdlab %s: error: %s\n", name.c_str(), e.what());
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "spdlab %s: error: %s\n", name.c_str(), e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "spdlab: unknown command '%s'\n", name.c_str());
  print_usage();
  return 2;
}
