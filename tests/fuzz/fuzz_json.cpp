// The JSON parser: anything it accepts must dump and parse back to the same text (a round trip).
#include <string_view>

#include "core/io/json.h"

using namespace spdlab;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const json::Value v = json::parse(text, "fuzz");
    const std::string once = json::dump(v);
    const std::string twice = json::dump(json::parse(once, "fuzz (dumped)"));
    if (once != twice) __builtin_trap();  // dump is not a fixed point of parse: a bug
  } catch (const Error&) {
  }
  return 0;
}
