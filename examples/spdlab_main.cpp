// The spdlab command-line tool: one executable, one subcommand per job.
#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  std::fprintf(stderr, "usage: spdlab <command> [options]\n");
  return argc > 1 && std::string(argv[1]) == "--help" ? 0 : 2;
}
