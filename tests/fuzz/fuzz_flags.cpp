// The command-line flag parser: the input split at NUL bytes into arguments, then every typed getter of a
// table like the training commands' (integers with stated ranges, seeds, floats in float32's range, lists).
#include <string>
#include <vector>

#include "core/check.h"
#include "examples/cli/args.h"

using namespace spdlab;
using namespace spdlab::cli;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> parts{"spdlab", "finetune"};
  std::string cur;
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0) {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(static_cast<char>(data[i]));
    }
  }
  parts.push_back(cur);
  std::vector<char*> argv;
  for (auto& p : parts) argv.push_back(p.data());
  const std::vector<Flag> flags = {{"epochs", "E", "epochs", "2"},       {"seed", "S", "seed", "0"},
                                   {"lr", "LR", "learning rate", "0.001"}, {"optims", "LIST", "optimizers", "spd"},
                                   {"lambdas", "LIST", "values", "1"},     {"quick", "", "switch", ""},
                                   {"out", "FILE", "output", ""}};
  try {
    Args a("finetune", "fuzz", flags, static_cast<int>(argv.size()), argv.data());
    auto attempt = [](auto&& f) {
      try {
        f();
      } catch (const Error&) {
      }
    };
    attempt([&] { (void)a.integer("epochs", 1, kMaxEpochs); });
    attempt([&] { (void)a.seed("seed"); });
    attempt([&] { (void)a.positive("lr"); });
    attempt([&] { (void)a.list("optims"); });
    attempt([&] { (void)a.num_list("lambdas"); });
    attempt([&] { (void)a.flag("quick"); });
    attempt([&] { (void)a.str("out"); });
    (void)a.usage();
  } catch (const Error&) {
  }
  return 0;
}
