// Helpers of the libFuzzer targets (tests/fuzz/run.sh builds and runs them): the input as a temporary file for
// the entry points that take a path. Every target accepts spdlab::Error as the answer to bad input; anything
// else (a crash, a sanitizer report, a leak, another exception) is a finding.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace spdlab::fuzz {

// Writes the input to one file per process (reused by every input) and returns its path.
inline std::string as_file(const uint8_t* data, size_t size, const char* suffix) {
  const std::string path = "/tmp/spdlab_fuzz_" + std::to_string(::getpid()) + suffix;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) __builtin_trap();
  if (size && std::fwrite(data, 1, size, f) != size) __builtin_trap();
  std::fclose(f);
  return path;
}

}  // namespace spdlab::fuzz
