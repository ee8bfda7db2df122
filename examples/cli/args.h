// A small flag parser for the spdlab subcommands: --name value or --name=value, boolean --flags,
// typed getters whose errors name the flag and say what was expected, and --help text from the same table.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace spdlab::cli {

// The stated maxima of the integer flags.
constexpr int64_t kMaxThreads = 1024, kMaxEpochs = 1000000, kMaxBatch = 1 << 20, kMaxImages = int64_t(1) << 32;

struct Flag {
  std::string name;     // without dashes
  std::string value;    // placeholder shown in help ("F", "N", ...); empty for a boolean switch
  std::string help;
  std::string default_value;  // shown in help; empty = required or off
};

class Args {
 public:
  // Parses argv[first..]; throws spdlab::Error for an unknown flag or a missing value.
  Args(std::string command, std::string summary, std::vector<Flag> flags, int argc, char** argv, int first = 2);

  bool help_requested() const { return help_; }
  std::string usage() const;

  bool has(const std::string& name) const;
  bool flag(const std::string& name) const;  // boolean switch
  std::string str(const std::string& name) const;  // default when absent; error if required and absent
  double num(const std::string& name) const;       // finite number
  double positive(const std::string& name) const;  // > 0
  double nonneg(const std::string& name) const;    // >= 0
  // A whole number in [min_value, max_value]: every integer flag states its maximum, so no later product
  // (epochs x steps, seeds x optimizers) can overflow. Out-of-range text (ERANGE) is an error, never clamped.
  int64_t integer(const std::string& name, int64_t min_value, int64_t max_value) const;
  uint64_t seed(const std::string& name) const;  // any value in [0, 2^64 - 1]
  std::vector<std::string> list(const std::string& name) const;  // comma-separated
  std::vector<double> num_list(const std::string& name) const;

 private:
  const Flag& spec(const std::string& name) const;
  std::string command_, summary_;
  std::vector<Flag> flags_;
  std::map<std::string, std::string> values_;
  bool help_ = false;
};

}  // namespace spdlab::cli
