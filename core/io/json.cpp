// Strict JSON parser and compact writer (see json.h). A recursive-descent parser with a depth limit;
// every error names the byte offset. Not tuned for speed: headers are kilobytes, not gigabytes.
#include "core/io/json.h"

#include <charconv>
#include <cmath>
#include <unordered_set>

namespace spdlab::json {

Value Value::boolean(bool b) {
  Value v;
  v.kind_ = Kind::boolean;
  v.bool_ = b;
  return v;
}

Value Value::number(double d) {
  Value v;
  v.kind_ = Kind::number;
  v.num_ = d;
  return v;
}

Value Value::integer(int64_t i) {
  Value v;
  v.kind_ = Kind::number;
  v.is_int_ = true;
  v.int_ = i;
  v.num_ = static_cast<double>(i);
  return v;
}

Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::string;
  v.str_ = std::move(s);
  return v;
}

Value Value::array(Array items) {
  Value v;
  v.kind_ = Kind::array;
  v.arr_ = std::move(items);
  return v;
}

Value Value::object(Object members) {
  Value v;
  v.kind_ = Kind::object;
  v.obj_ = std::move(members);
  return v;
}

const char* kind_name(Value::Kind k) {
  switch (k) {
    case Value::Kind::null: return "null";
    case Value::Kind::boolean: return "a boolean";
    case Value::Kind::number: return "a number";
    case Value::Kind::string: return "a string";
    case Value::Kind::array: return "an array";
    case Value::Kind::object: return "an object";
  }
  return "?";
}

bool Value::as_bool() const {
  SPDLAB_CHECK(is_bool(), "json: expected a boolean, got ", kind_name(kind_));
  return bool_;
}

double Value::as_double() const {
  SPDLAB_CHECK(is_number(), "json: expected a number, got ", kind_name(kind_));
  return num_;
}

int64_t Value::as_int() const {
  SPDLAB_CHECK(is_number(), "json: expected an integer, got ", kind_name(kind_));
  SPDLAB_CHECK(is_int_, "json: expected an integer that fits int64, got ", num_);
  return int_;
}

const std::string& Value::as_string() const {
  SPDLAB_CHECK(is_string(), "json: expected a string, got ", kind_name(kind_));
  return str_;
}

const Value::Array& Value::as_array() const {
  SPDLAB_CHECK(is_array(), "json: expected an array, got ", kind_name(kind_));
  return arr_;
}

const Value::Object& Value::as_object() const {
  SPDLAB_CHECK(is_object(), "json: expected an object, got ", kind_name(kind_));
  return obj_;
}

const Value* Value::find(std::string_view key) const {
  if (!is_object()) return nullptr;
  for (const auto& [k, v] : obj_)
    if (k == key) return &v;
  return nullptr;
}

namespace {

// Length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlong forms, no surrogates,
// nothing past U+10FFFF), or 0 when there is none.
size_t utf8_sequence_length(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return 1;
  size_t n;
  uint32_t cp;
  if ((c & 0xE0) == 0xC0) {
    n = 2, cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, cp = c & 0x07;
  } else {
    return 0;
  }
  if (s.size() - i < n) return 0;
  for (size_t k = 1; k < n; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  static constexpr uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

void append_escaped(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const size_t n = utf8_sequence_length(s, i);
      SPDLAB_CHECK(n != 0, "json::dump: string is not valid UTF-8 at byte ", i);
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 0xF];
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += '"';
}

class Parser {
 public:
  Parser(std::string_view text, const std::string& what) : text_(text), what_(what) {}

  Value document() {
    skip_ws();
    Value v = value(0);
    skip_ws();
    if (pos_ != text_.size()) fail("unexpected " + describe(pos_) + " after the value");
    return v;
  }

 private:
  std::string_view text_;
  const std::string& what_;
  size_t pos_ = 0;

  [[noreturn]] void fail(const std::string& reason) const { fail_at(pos_, reason); }
  [[noreturn]] void fail_at(size_t at, const std::string& reason) const {
    SPDLAB_FAIL(what_, ": invalid JSON at byte ", at, ": ", reason);
  }

  std::string describe(size_t at) const {
    if (at >= text_.size()) return "end of input";
    const auto c = static_cast<unsigned char>(text_[at]);
    if (c > 0x20 && c < 0x7F) return std::string("character '") + static_cast<char>(c) + "'";
    static constexpr char hex[] = "0123456789abcdef";
    return std::string("byte 0x") + hex[c >> 4] + hex[c & 0xF];
  }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }
  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  void skip_ws() {
    while (!at_end() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }

  void expect(char c) {
    if (at_end() || text_[pos_] != c) fail(std::string("expected '") + c + "', got " + describe(pos_));
    ++pos_;
  }

  Value value(int depth) {
    if (at_end()) fail("unexpected end of input; expected a value");
    switch (text_[pos_]) {
      case '{': return object(depth + 1);
      case '[': return array(depth + 1);
      case '"': return Value::string(string());
      case 't': literal("true"); return Value::boolean(true);
      case 'f': literal("false"); return Value::boolean(false);
      case 'n': literal("null"); return Value();
      default:
        if (text_[pos_] == '-' || is_digit(text_[pos_])) return number();
        fail("unexpected " + describe(pos_) + "; expected a value");
    }
  }

  void literal(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) fail("invalid literal; expected '" + std::string(word) + "'");
    pos_ += word.size();
  }

  void check_depth(int depth) const {
    if (depth > max_depth) fail("nesting deeper than " + std::to_string(max_depth) + " levels");
  }

  Value object(int depth) {
    check_depth(depth);
    ++pos_;
    Value::Object members;
    // Keys are copied into the set because moving SSO strings into `members` would dangle views.
    std::unordered_set<std::string> seen;
    skip_ws();
    if (peek() == '}') {
      ++pos_;
      return Value::object(std::move(members));
    }
    while (true) {
      if (peek() != '"') fail("expected a string key, got " + describe(pos_));
      const size_t key_at = pos_;
      std::string key = string();
      if (!seen.insert(key).second) {
        std::string quoted;
        append_escaped(quoted, key);
        fail_at(key_at, "duplicate key " + quoted);
      }
      skip_ws();
      expect(':');
      skip_ws();
      Value v = value(depth);
      members.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (peek() == '}') {
        ++pos_;
        return Value::object(std::move(members));
      }
      if (peek() != ',') fail("expected ',' or '}', got " + describe(pos_));
      ++pos_;
      skip_ws();
      if (peek() == '}') fail("trailing comma before '}'");
    }
  }

  Value array(int depth) {
    check_depth(depth);
    ++pos_;
    Value::Array items;
    skip_ws();
    if (peek() == ']') {
      ++pos_;
      return Value::array(std::move(items));
    }
    while (true) {
      items.push_back(value(depth));
      skip_ws();
      if (peek() == ']') {
        ++pos_;
        return Value::array(std::move(items));
      }
      if (peek() != ',') fail("expected ',' or ']', got " + describe(pos_));
      ++pos_;
      skip_ws();
      if (peek() == ']') fail("trailing comma before ']'");
    }
  }

  Value number() {
    const size_t start = pos_;
    if (peek() == '-') ++pos_;
    if (!is_digit(peek())) fail("expected a digit, got " + describe(pos_));
    if (peek() == '0') {
      ++pos_;
      if (is_digit(peek())) fail("leading zeros are not allowed");
    } else {
      while (is_digit(peek())) ++pos_;
    }
    bool integral = true;
    if (peek() == '.') {
      integral = false;
      ++pos_;
      if (!is_digit(peek())) fail("expected a digit after '.', got " + describe(pos_));
      while (is_digit(peek())) ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      integral = false;
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!is_digit(peek())) fail("expected a digit in the exponent, got " + describe(pos_));
      while (is_digit(peek())) ++pos_;
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    if (integral) {
      int64_t i = 0;
      const auto r = std::from_chars(first, last, i);
      // "-0" stays the double -0.0 (dump writes -0.0 so): as the integer 0 it would lose its sign.
      if (r.ec == std::errc() && r.ptr == last && !(i == 0 && *first == '-')) return Value::integer(i);
    }
    // Both overflow and underflow to zero are refused (RFC 8259 section 9 lets a parser set limits):
    // a header value that silently became 0 or inf would be worse than an error.
    double d = 0.0;
    const auto r = std::from_chars(first, last, d);
    if (r.ec != std::errc() || r.ptr != last)
      fail_at(start, "number " + std::string(first, last) + " is out of the range of a double");
    return Value::number(d);
  }

  uint32_t hex4() {
    if (text_.size() - pos_ < 4) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text_[pos_];
      uint32_t d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        d = c - 'A' + 10;
      } else {
        fail("expected a hex digit in \\u escape, got " + describe(pos_));
      }
      v = (v << 4) | d;
      ++pos_;
    }
    return v;
  }

  std::string string() {
    const size_t start = pos_;
    ++pos_;
    std::string out;
    while (true) {
      if (at_end()) fail_at(start, "unterminated string");
      const auto c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) fail("unescaped control character (" + describe(pos_) + ") in string");
      if (c >= 0x80) {
        const size_t n = utf8_sequence_length(text_, pos_);
        if (n == 0) fail("invalid UTF-8 in string");
        out.append(text_.substr(pos_, n));
        pos_ += n;
        continue;
      }
      if (c != '\\') {
        out += static_cast<char>(c);
        ++pos_;
        continue;
      }
      const size_t esc_at = pos_;
      ++pos_;
      if (at_end()) fail_at(start, "unterminated string");
      const char e = text_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail_at(esc_at, "unpaired low surrogate in \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (text_.substr(pos_, 2) != "\\u") fail_at(esc_at, "high surrogate not followed by a \\u low surrogate");
            pos_ += 2;
            const uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail_at(esc_at, "high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: fail_at(esc_at, "invalid escape " + describe(esc_at + 1) + " after '\\'");
      }
    }
  }
};

void dump_to(const Value& v, std::string& out) {
  switch (v.kind()) {
    case Value::Kind::null: out += "null"; return;
    case Value::Kind::boolean: out += v.as_bool() ? "true" : "false"; return;
    case Value::Kind::number: {
      if (v.is_integer()) {
        out += std::to_string(v.as_int());
        return;
      }
      const double d = v.as_double();
      SPDLAB_CHECK(std::isfinite(d), "json::dump: JSON has no representation for ", d);
      char buf[64];
      const auto r = std::to_chars(buf, buf + sizeof buf, d);  // shortest form that reads back exactly
      out.append(buf, r.ptr);
      return;
    }
    case Value::Kind::string: append_escaped(out, v.as_string()); return;
    case Value::Kind::array: {
      out += '[';
      bool first = true;
      for (const Value& item : v.as_array()) {
        if (!first) out += ',';
        first = false;
        dump_to(item, out);
      }
      out += ']';
      return;
    }
    case Value::Kind::object: {
      out += '{';
      bool first = true;
      for (const auto& [k, item] : v.as_object()) {
        if (!first) out += ',';
        first = false;
        append_escaped(out, k);
        out += ':';
        dump_to(item, out);
      }
      out += '}';
      return;
    }
  }
}

}  // namespace

Value parse(std::string_view text, const std::string& what_for_errors) {
  return Parser(text, what_for_errors).document();
}

std::string dump(const Value& v) {
  std::string out;
  dump_to(v, out);
  return out;
}

}  // namespace spdlab::json
