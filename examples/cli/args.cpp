// Flag parsing for the command-line tool; see args.h.
#include "examples/cli/args.h"

#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "core/check.h"

namespace spdlab::cli {

Args::Args(std::string command, std::string summary, std::vector<Flag> flags, int argc, char** argv, int first)
    : command_(std::move(command)), summary_(std::move(summary)), flags_(std::move(flags)) {
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      help_ = true;
      continue;
    }
    SPDLAB_CHECK(a.rfind("--", 0) == 0, command_, ": unexpected argument '", a, "'; flags start with --, see ",
                 "spdlab ", command_, " --help");
    std::string name = a.substr(2), value;
    size_t eq = name.find('=');
    bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const Flag& f = spec(name);
    if (f.value.empty()) {
      SPDLAB_CHECK(!inline_value, command_, ": --", name, " is a switch and takes no value");
      value = "1";
    } else if (!inline_value) {
      SPDLAB_CHECK(i + 1 < argc, command_, ": --", name, " expects a value (", f.value, ")");
      value = argv[++i];
    }
    SPDLAB_CHECK(f.value.empty() || !value.empty(), command_, ": --", name, " expects a value (", f.value,
                 "), got an empty string");
    values_[name] = value;
  }
}

const Flag& Args::spec(const std::string& name) const {
  for (const Flag& f : flags_)
    if (f.name == name) return f;
  SPDLAB_FAIL(command_, ": unknown flag --", name, "; see spdlab ", command_, " --help");
}

std::string Args::usage() const {
  std::ostringstream os;
  os << "usage: spdlab " << command_ << " [flags]\n" << summary_ << "\n\nflags:\n";
  for (const Flag& f : flags_) {
    std::string left = "  --" + f.name + (f.value.empty() ? "" : " " + f.value);
    os << left << std::string(left.size() < 28 ? 28 - left.size() : 1, ' ') << f.help;
    if (!f.default_value.empty()) os << " (default " << f.default_value << ")";
    os << "\n";
  }
  return os.str();
}

bool Args::has(const std::string& name) const {
  spec(name);
  return values_.count(name) > 0;
}

bool Args::flag(const std::string& name) const { return has(name); }

std::string Args::str(const std::string& name) const {
  const Flag& f = spec(name);
  auto it = values_.find(name);
  if (it != values_.end()) return it->second;
  SPDLAB_CHECK(!f.default_value.empty(), command_, ": --", name, " is required (", f.help, ")");
  return f.default_value;
}

double Args::num(const std::string& name) const {
  std::string s = str(name);
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  SPDLAB_CHECK(!s.empty() && end && *end == '\0' && std::isfinite(v), command_, ": --", name,
               " expects a number, got '", s, "'");
  // Hyperparameters are used in float32 (the weights' type): a larger magnitude would be inf there.
  SPDLAB_CHECK(std::fabs(v) <= FLT_MAX, command_, ": --", name, " = ", s, " is outside float32's range (at most ",
               FLT_MAX, ")");
  return v;
}

double Args::positive(const std::string& name) const {
  double v = num(name);
  SPDLAB_CHECK(v > 0, command_, ": --", name, " must be positive, got ", str(name));
  return v;
}

double Args::nonneg(const std::string& name) const {
  double v = num(name);
  SPDLAB_CHECK(v >= 0, command_, ": --", name, " must be >= 0, got ", str(name));
  return v;
}

int64_t Args::integer(const std::string& name, int64_t min_value, int64_t max_value) const {
  std::string s = str(name);
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  SPDLAB_CHECK(!s.empty() && end && *end == '\0', command_, ": --", name, " expects an integer, got '", s, "'");
  SPDLAB_CHECK(errno != ERANGE && v >= min_value && v <= max_value, command_, ": --", name, " must be an integer from ",
               min_value, " to ", max_value, ", got ", s);
  return v;
}

uint64_t Args::seed(const std::string& name) const {
  std::string s = str(name);
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  SPDLAB_CHECK(!s.empty() && s[0] >= '0' && s[0] <= '9' && end && *end == '\0' && errno != ERANGE, command_, ": --",
               name, " must be an integer from 0 to 18446744073709551615, got '", s, "'");
  return v;
}

std::vector<std::string> Args::list(const std::string& name) const {
  std::vector<std::string> out;
  std::stringstream ss(str(name));
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  SPDLAB_CHECK(!out.empty(), command_, ": --", name, " expects a comma-separated list, got '", str(name), "'");
  return out;
}

std::vector<double> Args::num_list(const std::string& name) const {
  std::vector<double> out;
  for (const std::string& s : list(name)) {
    char* end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    SPDLAB_CHECK(end && *end == '\0' && std::isfinite(v), command_, ": --", name, " expects numbers, got '", s, "'");
    out.push_back(v);
  }
  return out;
}

}  // namespace spdlab::cli
