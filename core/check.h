// Errors: spdlab::Error and the SPDLAB_CHECK macro.
// Every failed check says which op, what was expected and what it got; the library never exits.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace spdlab {

struct Error : std::runtime_error {
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
template <typename... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}
}  // namespace detail

}  // namespace spdlab

// SPDLAB_CHECK(cond, "op: expected ...; got ", x) throws spdlab::Error with the joined message.
#define SPDLAB_CHECK(cond, ...)                                   \
  do {                                                            \
    if (!(cond)) throw ::spdlab::Error(::spdlab::detail::cat(__VA_ARGS__)); \
  } while (0)

#define SPDLAB_FAIL(...) throw ::spdlab::Error(::spdlab::detail::cat(__VA_ARGS__))
