// Strict JSON (RFC 8259) for file headers such as safetensors': a Value tree, parse() and dump().
// Not a general-purpose library: no comments, NaN/Infinity, trailing commas or streaming. Objects keep
// their key order and a duplicate key is an error, so a header means exactly one thing.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/check.h"

namespace spdlab::json {

// Nesting deeper than this is refused, so hostile input cannot exhaust the stack.
inline constexpr int max_depth = 128;

class Value {
 public:
  enum class Kind : uint8_t { null, boolean, number, string, array, object };
  using Array = std::vector<Value>;
  using Object = std::vector<std::pair<std::string, Value>>;

  Value() = default;  // null
  static Value boolean(bool b);
  static Value number(double d);
  static Value integer(int64_t i);
  static Value string(std::string s);
  static Value array(Array items);
  static Value object(Object members);

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::null; }
  bool is_bool() const { return kind_ == Kind::boolean; }
  bool is_number() const { return kind_ == Kind::number; }
  // True when the number was written without fraction or exponent and fits int64 ("3", not "3.0").
  bool is_integer() const { return kind_ == Kind::number && is_int_; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_array() const { return kind_ == Kind::array; }
  bool is_object() const { return kind_ == Kind::object; }

  // Typed reads; each throws spdlab::Error naming the expected and the actual kind.
  bool as_bool() const;
  double as_double() const;
  int64_t as_int() const;
  const std::string& as_string() const;
  const Array& as_array() const;
  const Object& as_object() const;

  // The member named `key` of an object, or nullptr when absent (or this is not an object).
  const Value* find(std::string_view key) const;

 private:
  Kind kind_ = Kind::null;
  bool is_int_ = false;
  bool bool_ = false;
  double num_ = 0.0;
  int64_t int_ = 0;
  std::string str_;
  Array arr_;
  Object obj_;
};

// "a string", "an object", ...: for error messages.
const char* kind_name(Value::Kind k);

// Parses exactly one JSON value (surrounding whitespace allowed). Errors read
// "<what_for_errors>: invalid JSON at byte N: <reason>".
Value parse(std::string_view text, const std::string& what_for_errors);

// Compact JSON, members in stored order. Throws on non-finite numbers and strings that are not UTF-8.
std::string dump(const Value& v);

}  // namespace spdlab::json
