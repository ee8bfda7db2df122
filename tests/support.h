// Helpers shared by the test suites.
#pragma once
#include <stdlib.h>  // mkdtemp, getenv

#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace spdlab::test {

// A committed fixture under tests/reference/. The source tree is the one the tests were built from, unless
// SPDLAB_SOURCE_DIR names another (tests/cuda/device_check.sh runs a carried build in a copy of the tree).
inline std::string reference_path(const std::string& name) {
  const char* dir = std::getenv("SPDLAB_SOURCE_DIR");
  return std::string(dir && *dir ? dir : SPDLAB_SOURCE_DIR) + "/tests/reference/" + name;
}

// A new, empty directory under the system's temporary directory, removed with everything in it when the
// TempDir goes out of scope. `tag` appears in its name (spdlab_<tag>_XXXXXX), to tell whose it was.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    std::string tmpl = (std::filesystem::temp_directory_path() / ("spdlab_" + tag + "_XXXXXX")).string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("TempDir: cannot create " + tmpl);
    path = buf.data();
  }
  ~TempDir() {
    std::error_code ec;  // never throw from a destructor; a leftover directory is harmless
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // The path of `name` inside the directory.
  std::string file(const std::string& name) const { return (path / name).string(); }

  std::filesystem::path path;
};

}  // namespace spdlab::test
