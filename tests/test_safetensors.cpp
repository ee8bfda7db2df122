// Tests for core/io: the strict JSON parser and safetensors reading, writing and validation.
// Malformed files are built byte by byte in a temporary directory, one per validation rule,
// and each error message is checked; F16/BF16 decoding is checked bit for bit.
#include <doctest/doctest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>

#include "core/io/json.h"
#include "core/io/safetensors.h"
#include "core/tensor.h"
#include "tests/support.h"

using namespace spdlab;
namespace fs = std::filesystem;

namespace {

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("safetensors") {}
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string u64le(uint64_t v) {
  std::string s(8, '\0');
  std::memcpy(s.data(), &v, 8);
  return s;
}

template <typename T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// The bytes of a safetensors file from its header text and data area.
std::string st_bytes(const std::string& header, const std::string& data) { return u64le(header.size()) + header + data; }

// A safetensors file from its header text and data area, written to dir/name.
std::string st_file(const TempDir& dir, const std::string& name, const std::string& header, const std::string& data) {
  const std::string path = dir.file(name);
  write_bytes(path, st_bytes(header, data));
  return path;
}

// The message every validation error of `path` starts with.
std::string msg(const std::string& path, const std::string& rest) { return "safetensors: '" + path + "'" + rest; }

// Opens and validates; a named function because `SafetensorsFile(path);` alone would declare a variable.
void open_file(const std::string& path) { io::SafetensorsFile file(path); }

uint32_t bits(float f) { return std::bit_cast<uint32_t>(f); }

}  // namespace

TEST_SUITE("safetensors") {

// ---- JSON ----

TEST_CASE("json: values, key order and number kinds") {
  const json::Value v = json::parse(R"( {"z": [1, -0, 3.0, 1e2, -2.5e-3, 9223372036854775807, 9223372036854775808],
                                        "a": {"t": true, "f": false, "n": null}, "m": "x"} )", "test");
  const auto& obj = v.as_object();
  REQUIRE(obj.size() == 3);
  CHECK(obj[0].first == "z");
  CHECK(obj[1].first == "a");
  CHECK(obj[2].first == "m");
  const auto& z = v.find("z")->as_array();
  REQUIRE(z.size() == 7);
  CHECK(z[0].is_integer());
  CHECK(z[0].as_int() == 1);
  CHECK_FALSE(z[1].is_integer());  // "-0": the double -0.0, whose sign an integer would lose
  CHECK(std::signbit(z[1].as_double()));
  CHECK_FALSE(z[2].is_integer());
  CHECK(z[2].as_double() == 3.0);
  CHECK_FALSE(z[3].is_integer());
  CHECK(z[3].as_double() == 100.0);
  CHECK(z[4].as_double() == -2.5e-3);
  CHECK(z[5].as_int() == std::numeric_limits<int64_t>::max());
  CHECK_FALSE(z[6].is_integer());  // past int64: kept only as a double
  CHECK(z[6].as_double() == 9223372036854775808.0);
  CHECK(v.find("a")->find("t")->as_bool() == true);
  CHECK(v.find("a")->find("f")->as_bool() == false);
  CHECK(v.find("a")->find("n")->is_null());
  CHECK(v.find("missing") == nullptr);
  CHECK_THROWS_WITH_AS(z[2].as_int(), doctest::Contains("expected an integer that fits int64, got 3"), Error);
  CHECK_THROWS_WITH_AS(v.find("m")->as_array(), doctest::Contains("expected an array, got a string"), Error);
}

TEST_CASE("json: string escapes, surrogate pairs and raw UTF-8") {
  const json::Value v = json::parse(R"("q\" b\\ s\/ \b\f\n\r\t \u00e9\u20AC \ud83d\ude00 é")", "test");
  CHECK(v.as_string() == "q\" b\\ s/ \b\f\n\r\t \xC3\xA9\xE2\x82\xAC \xF0\x9F\x98\x80 \xC3\xA9");
  CHECK(json::parse(R"("\u0000")", "test").as_string() == std::string(1, '\0'));
}

TEST_CASE("json: dump is compact, escapes and reads back") {
  const std::string text = R"({"k":[1,-2,0.1,1e+300,true,null,"a\"\\\n\u0001é"],"e":{}})";
  const json::Value v = json::parse(text, "test");
  CHECK(json::dump(v) == text);
  CHECK(json::dump(json::Value::number(-0.0)) == "-0");
  // ... and "-0" reads back as -0.0, not as the integer 0 (found by tests/fuzz: the round trip lost the sign).
  const json::Value minus_zero = json::parse("-0", "test");
  CHECK_FALSE(minus_zero.is_integer());
  CHECK(std::signbit(minus_zero.as_double()));
  CHECK(json::dump(json::parse("-0.0", "test")) == "-0");
  CHECK(json::dump(json::Value::integer(std::numeric_limits<int64_t>::min())) == "-9223372036854775808");
  CHECK_THROWS_WITH_AS(json::dump(json::Value::number(std::nan(""))), doctest::Contains("no representation"), Error);
  CHECK_THROWS_WITH_AS(json::dump(json::Value::string("\xFF")), doctest::Contains("not valid UTF-8"), Error);
}

TEST_CASE("json: strictness errors name the byte offset") {
  struct Row {
    const char* text;
    const char* message;
  };
  const Row rows[] = {
      {"", "at byte 0: unexpected end of input"},
      {"[1,2,]", "at byte 5: trailing comma before ']'"},
      {R"({"a":1,})", "at byte 7: trailing comma before '}'"},
      {"[1] x", "at byte 4: unexpected character 'x' after the value"},
      {"{} {}", "at byte 3: unexpected character '{' after the value"},
      {R"({"a":1,"b":2,"a":3})", "at byte 13: duplicate key \"a\""},
      {"[01]", "at byte 2: leading zeros are not allowed"},
      {"[1.]", "at byte 3: expected a digit after '.'"},
      {"[.5]", "at byte 1: unexpected character '.'; expected a value"},
      {"[+1]", "at byte 1: unexpected character '+'"},
      {"1e400", "at byte 0: number 1e400 is out of the range of a double"},
      {"[NaN]", "at byte 1: unexpected character 'N'"},
      {"tru", "at byte 0: invalid literal; expected 'true'"},
      {R"("abc)", "at byte 0: unterminated string"},
      {"\"a\nb\"", "at byte 2: unescaped control character (byte 0x0a) in string"},
      {R"("\x")", "at byte 1: invalid escape character 'x' after '\\'"},
      {R"("\u12G4")", "at byte 5: expected a hex digit in \\u escape"},
      {R"("\ud83d")", "at byte 1: high surrogate not followed by a \\u low surrogate"},
      {R"("\ud83d\u0041")", "at byte 1: high surrogate not followed by a low surrogate"},
      {R"("\ude00")", "at byte 1: unpaired low surrogate"},
      {"\"\xC0\xAF\"", "at byte 1: invalid UTF-8"},         // overlong '/'
      {"\"\xED\xA0\x80\"", "at byte 1: invalid UTF-8"},     // an encoded surrogate
      {"\"\xE2\x82\"", "at byte 1: invalid UTF-8"},         // truncated sequence
      {"{\"a\" 1}", "at byte 5: expected ':', got character '1'"},
      {"{1:2}", "at byte 1: expected a string key, got character '1'"},
      {"[1 2]", "at byte 3: expected ',' or ']', got character '2'"},
      {"// c\n1", "at byte 0: unexpected character '/'"},
  };
  for (const Row& r : rows) {
    CAPTURE(r.text);
    CHECK_THROWS_WITH_AS(json::parse(r.text, "ctx"), doctest::Contains((std::string("ctx: invalid JSON ") + r.message).c_str()),
                         Error);
  }
}

TEST_CASE("json: depth limit") {
  const std::string ok = std::string(json::max_depth, '[') + std::string(json::max_depth, ']');
  CHECK(json::parse(ok, "test").is_array());
  const std::string deep = std::string(json::max_depth + 1, '[') + std::string(json::max_depth + 1, ']');
  CHECK_THROWS_WITH_AS(json::parse(deep, "test"), doctest::Contains("at byte 128: nesting deeper than 128 levels"), Error);
  // A hostile header of a million brackets must fail cleanly, not overflow the stack.
  CHECK_THROWS_WITH_AS(json::parse(std::string(1'000'000, '['), "test"), doctest::Contains("nesting deeper"), Error);
}

// ---- round trips ----

TEST_CASE("save and load give bit-identical f32, f64 and i64 tensors with metadata") {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  const std::vector<float> fv = {1.5f, -0.0f, std::numeric_limits<float>::denorm_min(),
                                 std::numeric_limits<float>::infinity(), 3.14159274f, -1e-30f};
  const std::vector<double> dv = {0.1, -1e300, 5e-324, 2.0 / 3.0};
  const std::vector<int64_t> iv = {std::numeric_limits<int64_t>::min(), -1, 0, std::numeric_limits<int64_t>::max(), 42, 7};
  const Tensor f = Tensor::from_vector(fv, {2, 3});
  const Tensor d = Tensor::from_vector(dv, {4});
  const Tensor i = Tensor::from_vector(iv, {3, 1, 2});
  const Tensor s = Tensor::from_vector(std::vector<float>{2.5f}, {});
  const Tensor e = Tensor::empty({0, 5});
  io::save_safetensors(path, {{"w.f", f}, {"b.d", d}, {"a.i", i}, {"scalar", s}, {"empty", e}},
                       {{"format", "pt"}, {"note", "é \"quoted\"\n"}});

  io::SafetensorsFile file(path);
  CHECK(file.names() == std::vector<std::string>{"a.i", "b.d", "empty", "scalar", "w.f"});
  CHECK(file.has("w.f"));
  CHECK_FALSE(file.has("w"));
  CHECK(file.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"note", "é \"quoted\"\n"}});
  // Laid out in the given order.
  CHECK(file.info("w.f").dtype == "F32");
  CHECK(file.info("w.f").shape == Shape{2, 3});
  CHECK(file.info("w.f").begin == 0);
  CHECK(file.info("w.f").end == 24);
  CHECK(file.info("b.d").dtype == "F64");
  CHECK(file.info("b.d").begin == 24);
  CHECK(file.info("a.i").dtype == "I64");
  CHECK(file.info("a.i").begin == 56);
  CHECK(file.info("a.i").end == 104);
  CHECK(file.info("scalar").shape == Shape{});
  CHECK(file.info("empty").begin == file.info("empty").end);

  const Tensor lf = file.load("w.f");
  REQUIRE(lf.dtype() == DType::f32);
  CHECK(lf.shape() == Shape{2, 3});
  CHECK(std::memcmp(lf.data<float>(), fv.data(), fv.size() * 4) == 0);
  const Tensor ld = file.load("b.d", DType::f64);
  REQUIRE(ld.dtype() == DType::f64);
  CHECK(std::memcmp(ld.data<double>(), dv.data(), dv.size() * 8) == 0);
  CHECK(file.load("b.d").dtype() == DType::f32);  // the default for floats
  CHECK(file.load("b.d").to_vector_f32() == std::vector<float>{0.1f, -std::numeric_limits<float>::infinity(),
                                                                0.0f, static_cast<float>(2.0 / 3.0)});
  const Tensor li = file.load("a.i");
  REQUIRE(li.dtype() == DType::i64);
  CHECK(li.shape() == Shape{3, 1, 2});
  CHECK(li.to_vector_i64() == iv);
  CHECK(file.load("scalar").item() == 2.5);
  CHECK(file.load("empty").shape() == Shape{0, 5});
  CHECK_THROWS_WITH_AS(file.load("nope"), doctest::Contains(msg(path, ": no tensor named 'nope' (the file has 5 tensors)").c_str()),
                       Error);

  std::map<std::string, std::string> meta;
  const auto all = io::load_safetensors(path, &meta);
  CHECK(all.size() == 5);
  CHECK(meta.at("format") == "pt");
  CHECK(all.at("a.i").to_vector_i64() == iv);

  // Header length is a multiple of 8, so the data area starts 8-aligned.
  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  CHECK(bytes.size() == 8 + n + 104 + 4);
  CHECK(bytes[8] == '{');
}

TEST_CASE("non-contiguous tensors are written in logical order") {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  const Tensor f = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5}, {2, 3});
  const Tensor d = Tensor::from_vector(std::vector<double>{0, 1, 2, 3, 4, 5}, {2, 3});
  const Tensor i = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}, {2, 4});
  io::save_safetensors(path, {{"ft", f.transpose(0, 1)}, {"dn", d.narrow(1, 1, 2)}, {"is", i.select(1, 3)}});
  io::SafetensorsFile file(path);
  CHECK(file.load("ft").shape() == Shape{3, 2});
  CHECK(file.load("ft").to_vector_f32() == std::vector<float>{0, 3, 1, 4, 2, 5});
  CHECK(file.load("dn", DType::f64).to_vector_f64() == std::vector<double>{1, 2, 4, 5});
  CHECK(file.load("is").to_vector_i64() == std::vector<int64_t>{3, 7});
}

TEST_CASE("aligned F32 loads without a copy and outlives the file object and overwrites") {
  TempDir dir;
  const std::string path = dir.file("z.safetensors");
  io::save_safetensors(path, {{"a", Tensor::from_vector(std::vector<float>{1, 2, 3}, {3})},
                              {"b", Tensor::from_vector(std::vector<float>{4, 5}, {2})}});
  Tensor a1, a2;
  {
    io::SafetensorsFile file(path);
    a1 = file.load("a");
    a2 = file.load("a");
  }
  // Both point at the same mapped bytes: no copy was made.
  CHECK(a1.raw_data() == a2.raw_data());
  // The mapping is private: writing the tensor neither faults nor changes the file.
  a1.fill_(9.0);
  CHECK(a2.to_vector_f32() == std::vector<float>{9, 9, 9});
  CHECK(io::SafetensorsFile(path).load("a").to_vector_f32() == std::vector<float>{1, 2, 3});
  // Atomic replacement leaves the old mapping intact.
  const Tensor b_old = io::SafetensorsFile(path).load("b");
  io::save_safetensors(path, {{"b", Tensor::from_vector(std::vector<float>{7, 8}, {2})}});
  CHECK(b_old.to_vector_f32() == std::vector<float>{4, 5});
  CHECK(io::SafetensorsFile(path).load("b").to_vector_f32() == std::vector<float>{7, 8});
}

TEST_CASE("misaligned F32 data is copied and loads exactly") {
  TempDir dir;
  std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  while ((8 + header.size()) % 4 != 1) header += ' ';
  const std::string path = st_file(dir, "m.safetensors", header, raw(std::vector<float>{-1.25f, 1e-45f}));
  const Tensor x = io::SafetensorsFile(path).load("x");
  CHECK(reinterpret_cast<uintptr_t>(x.raw_data()) % 4 == 0);
  CHECK(x.to_vector_f32() == std::vector<float>{-1.25f, 1e-45f});
}

TEST_CASE("integer dtypes load as i64; floats refuse i64; U64 past int64 is an error") {
  TempDir dir;
  const std::string header =
      R"({"u8":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
      R"("b":{"dtype":"BOOL","shape":[3],"data_offsets":[3,6]},)"
      R"("i16":{"dtype":"I16","shape":[1],"data_offsets":[6,8]},)"
      R"("i32":{"dtype":"I32","shape":[3],"data_offsets":[8,20]},)"
      R"("u64":{"dtype":"U64","shape":[1],"data_offsets":[20,28]},)"
      R"("f":{"dtype":"F32","shape":[1],"data_offsets":[28,32]}})";
  const std::string data = raw(std::vector<uint8_t>{0, 255, 7}) + raw(std::vector<uint8_t>{0, 1, 2}) +
                           raw(std::vector<int16_t>{-2}) +
                           raw(std::vector<int32_t>{-1, std::numeric_limits<int32_t>::max(), std::numeric_limits<int32_t>::min()}) +
                           raw(std::vector<uint64_t>{uint64_t(1) << 63}) + raw(std::vector<float>{0.5f});
  const std::string path = st_file(dir, "i.safetensors", header, data);
  io::SafetensorsFile file(path);
  CHECK(file.load("u8").dtype() == DType::i64);
  CHECK(file.load("u8").to_vector_i64() == std::vector<int64_t>{0, 255, 7});
  CHECK(file.load("b").to_vector_i64() == std::vector<int64_t>{0, 1, 1});
  CHECK(file.load("i16").to_vector_i64() == std::vector<int64_t>{-2});
  CHECK(file.load("i32").to_vector_i64() == std::vector<int64_t>{-1, 2147483647, -2147483648LL});
  CHECK(file.load("i32", DType::f64).to_vector_f64() == std::vector<double>{-1, 2147483647, -2147483648.0});
  CHECK(file.load("u64", DType::f64).item() == 9223372036854775808.0);
  CHECK_THROWS_WITH_AS(file.load("u64"), doctest::Contains("tensor 'u64': U64 element 0 is 9223372036854775808, which does not fit i64"),
                       Error);
  CHECK_THROWS_WITH_AS(file.load("f", DType::i64), doctest::Contains("tensor 'f' is F32; floating-point data does not load as i64"),
                       Error);
}

// ---- half precision ----

TEST_CASE("F16 decodes exactly: normals, subnormals, infinities, NaN, negative zero") {
  TempDir dir;
  const std::vector<uint16_t> h = {0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00,
                                   0xC000, 0x7BFF, 0x3555, 0x7C00, 0xFC00, 0x7E00};
  const std::string header = R"({"h":{"dtype":"F16","shape":[13],"data_offsets":[0,26]}})";
  const Tensor t = io::SafetensorsFile(st_file(dir, "h.safetensors", header, raw(h))).load("h");
  REQUIRE(t.dtype() == DType::f32);
  const std::vector<float> v = t.to_vector_f32();
  CHECK(bits(v[0]) == 0x00000000u);
  CHECK(bits(v[1]) == 0x80000000u);  // -0 keeps its sign
  CHECK(v[2] == 0x1p-24f);           // smallest subnormal
  CHECK(v[3] == -0x1p-24f);
  CHECK(v[4] == 1023 * 0x1p-24f);    // largest subnormal
  CHECK(v[5] == 0x1p-14f);           // smallest normal
  CHECK(v[6] == 1.0f);
  CHECK(v[7] == -2.0f);
  CHECK(v[8] == 65504.0f);
  CHECK(v[9] == 0.333251953125f);
  CHECK(bits(v[10]) == 0x7F800000u);
  CHECK(bits(v[11]) == 0xFF800000u);
  CHECK(bits(v[12]) == 0x7FC00000u);  // quiet NaN, payload kept
}

TEST_CASE("BF16 decodes exactly: normals, subnormals, infinities, NaN, negative zero") {
  TempDir dir;
  const std::vector<uint16_t> b = {0x3F80, 0xC040, 0x0001, 0x8000, 0x7F7F, 0x7F80, 0xFF80, 0x7FC1};
  const std::string header = R"({"b":{"dtype":"BF16","shape":[2,4],"data_offsets":[0,16]}})";
  const Tensor t = io::SafetensorsFile(st_file(dir, "b.safetensors", header, raw(b))).load("b");
  REQUIRE(t.dtype() == DType::f32);
  CHECK(t.shape() == Shape{2, 4});
  const std::vector<float> v = t.to_vector_f32();
  for (size_t i = 0; i < b.size(); ++i) {
    CAPTURE(i);
    CHECK(bits(v[i]) == static_cast<uint32_t>(b[i]) << 16);
  }
  CHECK(v[0] == 1.0f);
  CHECK(v[1] == -3.0f);
  CHECK(v[2] == 0x1p-133f);  // smallest BF16 subnormal
  CHECK(std::isnan(v[7]));
}

TEST_CASE("BF16 writing rounds to nearest even and reads back") {
  TempDir dir;
  const std::string path = dir.file("bf.safetensors");
  const std::vector<float> in = {1.0f,
                                 1.0f + 0x1p-8f,              // halfway, 1.0 is even: down
                                 1.0f + 3 * 0x1p-8f,          // halfway, 1+2^-6 is even: up
                                 1.0f + 0x1p-8f + 0x1p-20f,   // above halfway: up
                                 -0.0f,
                                 std::numeric_limits<float>::max(),  // past the largest BF16: inf
                                 std::numeric_limits<float>::quiet_NaN(),
                                 -3.0f};
  io::save_safetensors(path,
                       {{"w", Tensor::from_vector(in, {8})}, {"i", Tensor::from_vector(std::vector<int64_t>{5}, {1})}},
                       {}, /*bf16=*/true);
  io::SafetensorsFile file(path);
  CHECK(file.info("w").dtype == "BF16");
  CHECK(file.info("w").end == 16);
  CHECK(file.info("i").dtype == "I64");  // only f32 tensors become BF16
  const std::vector<float> v = file.load("w").to_vector_f32();
  CHECK(bits(v[0]) == 0x3F800000u);
  CHECK(bits(v[1]) == 0x3F800000u);
  CHECK(v[2] == 1.0f + 0x1p-6f);
  CHECK(v[3] == 1.0f + 0x1p-7f);
  CHECK(bits(v[4]) == 0x80000000u);
  CHECK(bits(v[5]) == 0x7F800000u);
  CHECK(std::isnan(v[6]));
  CHECK(v[7] == -3.0f);
  CHECK(file.load("i").to_vector_i64() == std::vector<int64_t>{5});
}

// ---- atomic writing ----

TEST_CASE("save into a missing directory fails cleanly") {
  TempDir dir;
  const std::string path = dir.file("no/such/dir/x.safetensors");
  CHECK_THROWS_WITH_AS(io::save_safetensors(path, {{"a", Tensor::zeros({2})}}),
                       doctest::Contains(("cannot write '" + path + "': cannot create").c_str()), Error);
  CHECK_FALSE(fs::exists(dir.file("no")));
  CHECK(fs::is_empty(dir.path));
}

TEST_CASE("a failed save leaves the existing file untouched") {
  TempDir dir;
  const std::string path = dir.file("keep.safetensors");
  write_bytes(path, "original bytes");
  // A directory squatting on the temporary name makes the write fail after validation.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  fs::create_directory(tmp);
  CHECK_THROWS_WITH_AS(io::save_safetensors(path, {{"a", Tensor::zeros({2})}}),
                       doctest::Contains(("cannot write '" + path + "'").c_str()), Error);
  CHECK(read_bytes(path) == "original bytes");
  fs::remove(tmp);
  // Errors found before writing do not touch it either.
  CHECK_THROWS_WITH_AS(io::save_safetensors(path, {{"a", Tensor::zeros({2})}, {"a", Tensor::ones({2})}}),
                       doctest::Contains("duplicate tensor name 'a'"), Error);
  CHECK_THROWS_WITH_AS(io::save_safetensors(path, {{"__metadata__", Tensor::zeros({2})}}),
                       doctest::Contains("\"__metadata__\" is reserved"), Error);
  CHECK_THROWS_WITH_AS(io::save_safetensors(path, {{"u", Tensor()}}), doctest::Contains("tensor 'u' is undefined"), Error);
  CHECK(read_bytes(path) == "original bytes");
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);
}

TEST_CASE("a failed rename removes the temporary file") {
  TempDir dir;
  const std::string path = dir.file("target");
  fs::create_directory(path);
  write_bytes(path + "/inside", "x");  // a non-empty directory cannot be renamed over
  CHECK_THROWS_WITH_AS(io::save_safetensors(path, {{"a", Tensor::zeros({2})}}),
                       doctest::Contains(("cannot move the finished file into place at '" + path + "'").c_str()), Error);
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);
  CHECK(read_bytes(path + "/inside") == "x");
}

// ---- validation: one malformed file per rule ----

TEST_CASE("validation: one malformed file per rule, each with its message") {
  // One row per rule: the rule broken, the whole file, and the message open_file must fail with.
  // `expected` follows the prefix every validation error starts with, "safetensors: '<path>'" (see msg),
  // unless `after_path` is false: then it is looked for anywhere in the message.
  struct Row {
    std::string rule;
    std::string bytes;
    std::string expected;
    bool after_path = true;
  };

  const std::string dup_header = R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},)"
                                 R"( "a": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}})";
  const std::string dup_at = std::to_string(dup_header.rfind("\"a\""));
  CHECK(dup_at == "61");

  const std::vector<Row> rows = {
      {"file shorter than the length field", "12345", " is 5 bytes long; expected at least 8 (the header length)"},
      {"header length larger than the file", u64le(1000) + "{}",
       ": header length 1000 is larger than the 2 bytes that follow"},
      {"header length over the 100 MB limit", u64le(100'000'001) + "{}",
       ": header length 100000001 exceeds the limit of 100000000 bytes"},
      {"header length over the 100 MB limit: 2^64 - 1, which would overflow a naive 8 + N",
       u64le(~uint64_t(0)) + "{}", "exceeds the limit", false},
      {"header is not valid JSON", st_bytes(R"({"a": {"dtype": "F32",)", ""),
       ": header: invalid JSON at byte 22: expected a string key, got end of input"},
      {"header is not a JSON object", st_bytes("[1, 2]  ", ""), ": header is an array; expected a JSON object"},
      {"entry is not an object", st_bytes(R"({"w": 3})", ""),
       ": tensor 'w' is a number; expected an object with \"dtype\""},
      {"entry without dtype", st_bytes(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", "abcd"),
       ": tensor 'w' has no \"dtype\""},
      {"entry without shape", st_bytes(R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", "abcd"),
       ": tensor 'w' has no \"shape\""},
      {"entry without data_offsets", st_bytes(R"({"w": {"dtype": "F32", "shape": [1]}})", "abcd"),
       ": tensor 'w' has no \"data_offsets\""},
      {"unknown dtype", st_bytes(R"({"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}})", "abcd"),
       ": tensor 'w' has unsupported dtype \"F8_E4M3\"; expected one of BOOL, U8"},
      {"non-integer shape entry", st_bytes(R"({"w": {"dtype": "U8", "shape": [2, 2.5], "data_offsets": [0, 5]}})", "abcde"),
       ": tensor 'w': shape entry 1 is 2.5; expected a non-negative integer"},
      {"negative shape entry", st_bytes(R"({"w": {"dtype": "U8", "shape": [-4], "data_offsets": [0, 4]}})", "abcd"),
       ": tensor 'w': shape entry 0 is -4; expected a non-negative integer"},
      {"shape product overflowing 64 bits",
       st_bytes(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", ""),
       ": tensor 'w': shape [4294967296, 4294967296] of F32 has more bytes than fit in 64 bits"},
      {"shape product overflowing 64 bits: the element count fits but the bytes do not",
       st_bytes(R"({"w": {"dtype": "F64", "shape": [2305843009213693952], "data_offsets": [0, 0]}})", ""),
       "has more bytes than fit in 64 bits", false},
      {"shape size disagrees with data_offsets",
       st_bytes(R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", std::string(20, 'x')),
       ": tensor 'w': shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 20] span 20"},
      {"data_offsets past the data area",
       st_bytes(R"({"w": {"dtype": "U8", "shape": [400], "data_offsets": [0, 400]}})", std::string(24, 'x')),
       ": tensor 'w': data_offsets [0, 400] run past the end of the data area (24 bytes)"},
      {"data_offsets with begin > end",
       st_bytes(R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [8, 4]}})", std::string(8, 'x')),
       ": tensor 'w': data_offsets [8, 4] have begin > end"},
      {"data_offsets not a pair of non-negative integers: three entries",
       st_bytes(R"({"w": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4, 8]}})", std::string(8, 'x')),
       ": tensor 'w': \"data_offsets\" is [0,4,8]; expected [begin, end] with non-negative integers"},
      {"data_offsets not a pair of non-negative integers: a negative begin",
       st_bytes(R"({"w": {"dtype": "U8", "shape": [4], "data_offsets": [-4, 0]}})", std::string(8, 'x')),
       "\"data_offsets\" is [-4,0]; expected [begin, end]", false},
      {"overlapping tensors",
       st_bytes(R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},)"
                R"( "b": {"dtype": "U8", "shape": [8], "data_offsets": [4, 12]}})",
                std::string(12, 'x')),
       ": tensors 'a' and 'b' overlap in the data area (bytes [4, 8))"},
      {"gap between tensors",
       st_bytes(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},)"
                R"( "b": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]}})",
                std::string(12, 'x')),
       ": bytes [4, 8) of the data area belong to no tensor (a gap before 'b')"},
      {"data area longer than the tensors",
       st_bytes(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}})", std::string(6, 'x')),
       ": the data area is 6 bytes but the tensors end at byte 4; the tensors must cover it exactly"},
      {"duplicate tensor names", st_bytes(dup_header, std::string(8, 'x')),
       ": header: invalid JSON at byte " + dup_at + ": duplicate key \"a\""},
      {"__metadata__ not an object", st_bytes(R"({"__metadata__": ["a"]})", ""),
       ": \"__metadata__\" is an array; expected an object of strings"},
      {"__metadata__ with a non-string value", st_bytes(R"({"__metadata__": {"format": "pt", "epoch": 3}})", ""),
       ": \"__metadata__\" entry 'epoch' is a number; expected a string"},
  };

  TempDir dir;
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string& rule = rows[i].rule;
    CAPTURE(rule);  // a failing row is reported with the rule it breaks
    const std::string path = dir.file("rule" + std::to_string(i));
    write_bytes(path, rows[i].bytes);
    const std::string expected = rows[i].after_path ? msg(path, rows[i].expected) : rows[i].expected;
    CHECK_THROWS_WITH_AS(open_file(path), doctest::Contains(expected.c_str()), Error);
  }
}

TEST_CASE("validation: a zero dimension makes an otherwise overflowing shape product valid") {
  TempDir dir;
  const std::string path =
      st_file(dir, "e3", R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 0], "data_offsets": [0, 0]}})", "");
  CHECK(io::SafetensorsFile(path).info("w").end == 0);
}

TEST_CASE("validation: a file that cannot be opened") {
  TempDir dir;
  const std::string path = dir.file("absent.safetensors");
  CHECK_THROWS_WITH_AS(open_file(path), doctest::Contains(msg(path, ": cannot open: No such file").c_str()), Error);
  CHECK_THROWS_WITH_AS(open_file(dir.path.string()),
                       doctest::Contains(msg(dir.path.string(), " is not a regular file").c_str()), Error);
}

TEST_CASE("a valid file with metadata only, and zero-sized tensors sharing an offset") {
  TempDir dir;
  const std::string path = st_file(dir, "ok",
                                   R"({"__metadata__": {"k": "v"}, "z1": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},)"
                                   R"( "a": {"dtype": "I32", "shape": [1], "data_offsets": [0, 4]},)"
                                   R"( "z2": {"dtype": "F16", "shape": [3, 0], "data_offsets": [4, 4]}})",
                                   raw(std::vector<int32_t>{-9}));
  io::SafetensorsFile file(path);
  CHECK(file.names() == std::vector<std::string>{"a", "z1", "z2"});
  CHECK(file.metadata().at("k") == "v");
  CHECK(file.load("a").to_vector_i64() == std::vector<int64_t>{-9});
  CHECK(file.load("z2").shape() == Shape{3, 0});
  const std::string empty = st_file(dir, "empty", "{}", "");
  CHECK(io::load_safetensors(empty).empty());
}

}  // TEST_SUITE
