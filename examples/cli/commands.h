// The subcommands of the spdlab tool. Each file under examples/cli/ registers its commands with a static
// Registrar; main looks them up by name. A command takes the full argv (argv[1] is its name) and returns the
// exit status; errors are thrown as spdlab::Error and main turns them into one message and status 1.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace spdlab::cli {

struct Command {
  std::string name, summary;
  std::function<int(int, char**)> run;
};

std::vector<Command>& commands();

struct Registrar {
  Registrar(std::string name, std::string summary, std::function<int(int, char**)> run) {
    commands().push_back({std::move(name), std::move(summary), std::move(run)});
  }
};

}  // namespace spdlab::cli
