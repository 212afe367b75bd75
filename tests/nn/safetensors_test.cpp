// safetensors reading and writing (culayers/nn/safetensors.hpp): round trips of every dtype, the exact
// bytes of a small file, every malformed header or buffer the reader rejects, and the file functions
// (missing and truncated files, ".tmp then rename" writes).
#include "culayers/nn/safetensors.hpp"

#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace {

namespace nn = culayers::nn;
namespace fs = std::filesystem;
using culayers::DType;
using culayers::Shape;
using culayers::Status;

using Bytes = std::vector<std::uint8_t>;

constexpr DType kAllDTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16,
                                DType::kInt32,   DType::kUInt8,   DType::kInt64};

/// A file image: the little-endian length of `header`, the header, then `data`.
Bytes image(const std::string& header, const Bytes& data = {}) {
  Bytes out(8);
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) {
    out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(n >> (8 * i));
  }
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

/// An image with a raw length prefix (which may disagree with what follows).
Bytes image_with_length(std::uint64_t n, const std::string& rest) {
  Bytes out(8);
  for (int i = 0; i < 8; ++i) {
    out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(n >> (8 * i));
  }
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

Bytes random_bytes(std::mt19937_64& rng, std::size_t n) {
  Bytes out(n);
  for (auto& b : out) {
    b = static_cast<std::uint8_t>(rng());
  }
  return out;
}

nn::SafetensorsTensor tensor(const std::string& name, DType dtype, const Shape& shape, Bytes data) {
  nn::SafetensorsTensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = shape;
  t.data = std::move(data);
  return t;
}

/// A file holding one sentinel tensor: a failed call must leave it exactly as it was.
nn::SafetensorsFile sentinel() {
  nn::SafetensorsFile f;
  f.metadata["sentinel"] = "yes";
  f.tensors.push_back(tensor("sentinel", DType::kUInt8, Shape{1}, {42}));
  return f;
}

bool is_sentinel(const nn::SafetensorsFile& f) {
  return f.metadata.size() == 1 && f.metadata.count("sentinel") == 1 && f.tensors.size() == 1 &&
         f.tensors[0].name == "sentinel" && f.tensors[0].data == Bytes{42};
}

void expect_same(const nn::SafetensorsFile& got, const nn::SafetensorsFile& want) {
  EXPECT_EQ(got.metadata, want.metadata);
  ASSERT_EQ(got.tensors.size(), want.tensors.size());
  for (const nn::SafetensorsTensor& w : want.tensors) {
    const nn::SafetensorsTensor* g = got.find(w.name);
    ASSERT_NE(g, nullptr) << w.name;
    EXPECT_EQ(g->dtype, w.dtype) << w.name;
    EXPECT_EQ(g->shape, w.shape) << w.name;
    EXPECT_EQ(g->data, w.data) << w.name;
  }
}

/// parse_safetensors must fail with kErrorParse, a message naming the source and containing `problem`,
/// and leave *out alone.
void expect_parse_error(const Bytes& bytes, const std::string& problem) {
  nn::SafetensorsFile out = sentinel();
  const Status s = nn::parse_safetensors(bytes.data(), bytes.size(), &out);
  EXPECT_EQ(s, Status::kErrorParse) << "expected an error about: " << problem;
  const std::string message = culayers::last_error_message();
  EXPECT_EQ(message.rfind("safetensors: buffer: ", 0), 0u) << message;
  EXPECT_NE(message.find(problem), std::string::npos) << "message: " << message << "\nexpected: " << problem;
  EXPECT_TRUE(is_sentinel(out));
}

/// A fresh empty directory for one test, removed afterwards.
class SafetensorsFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) / (std::string("culayers_safetensors_") + info->name() + "_" +
                                             std::to_string(culayers::test::base_seed()));
    fs::remove_all(dir_);
    ASSERT_TRUE(fs::create_directories(dir_));
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  static void write_raw(const std::string& p, const Bytes& bytes) {
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  static Bytes read_raw(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  /// The directory's entries, by name.
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) {
      names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  fs::path dir_;
};

// ---- dtypes ---------------------------------------------------------------------------------------

TEST(Safetensors, DTypeNames) {
  const char* names[] = {"F32", "F16", "BF16", "I32", "U8", "I64"};
  for (int i = 0; i < 6; ++i) {
    EXPECT_STREQ(nn::safetensors_dtype_name(kAllDTypes[i]), names[i]);
    DType d = DType::kInt64;
    ASSERT_EQ(nn::safetensors_dtype_from_name(names[i], &d), Status::kSuccess);
    EXPECT_EQ(d, kAllDTypes[i]);
  }
  EXPECT_STREQ(nn::safetensors_dtype_name(static_cast<DType>(99)), "");
  for (const char* bad : {"F64", "BOOL", "I8", "F8_E4M3", "f32", "float32", ""}) {
    DType d = DType::kInt64;
    EXPECT_EQ(nn::safetensors_dtype_from_name(bad, &d), Status::kErrorParse) << bad;
    EXPECT_NE(std::string(culayers::last_error_message()).find("unsupported dtype"), std::string::npos);
    EXPECT_EQ(d, DType::kInt64);
  }
  EXPECT_EQ(nn::safetensors_dtype_from_name("F32", nullptr), Status::kErrorNullPointer);
}

// ---- round trips ----------------------------------------------------------------------------------

TEST(Safetensors, RoundTripEveryDTypeScalarsEmptyTensorsAndMetadata) {
  auto rng = culayers::test::rng_for_test();
  nn::SafetensorsFile file;
  file.metadata = {{"format", "pt"}, {"note", "caf\xc3\xa9 \"quoted\" \\ \n"}, {"", "empty key"}};
  const Shape shapes[] = {Shape{},  Shape{0},    Shape{3, 0, 5},
                          Shape{7}, Shape{2, 3}, Shape{1, 2, 1, 3, 1, 2, 1, 2}};
  int k = 0;
  for (const DType d : kAllDTypes) {
    for (const Shape& shape : shapes) {
      // Names out of order on purpose, including a non-ASCII one and a layer/weight style one.
      const std::string name =
          std::to_string(97 - k) + "/w_" + culayers::dtype_name(d) + (k == 5 ? "_\xc3\xa9" : "");
      const std::size_t bytes = static_cast<std::size_t>(shape.numel()) * culayers::dtype_size(d);
      file.tensors.push_back(tensor(name, d, shape, random_bytes(rng, bytes)));
      ++k;
    }
  }
  Bytes bytes;
  ASSERT_EQ(nn::serialize_safetensors(file, &bytes), Status::kSuccess) << culayers::last_error_message();
  // The data starts 8-byte aligned.
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);

  nn::SafetensorsFile back;
  ASSERT_EQ(nn::parse_safetensors(bytes.data(), bytes.size(), &back), Status::kSuccess)
      << culayers::last_error_message();
  expect_same(back, file);
  // Tensors come back in name order.
  for (std::size_t i = 1; i < back.tensors.size(); ++i) {
    EXPECT_LT(back.tensors[i - 1].name, back.tensors[i].name);
  }
  // Serializing what was read gives the same bytes.
  Bytes again;
  ASSERT_EQ(nn::serialize_safetensors(back, &again), Status::kSuccess);
  EXPECT_EQ(again, bytes);
  EXPECT_EQ(back.find("no such tensor"), nullptr);
}

TEST(Safetensors, EmptyFile) {
  nn::SafetensorsFile empty;
  Bytes bytes;
  ASSERT_EQ(nn::serialize_safetensors(empty, &bytes), Status::kSuccess);
  // "{}" padded to 8 bytes, no data.
  EXPECT_EQ(bytes, image("{}      "));
  nn::SafetensorsFile back = sentinel();
  ASSERT_EQ(nn::parse_safetensors(bytes.data(), bytes.size(), &back), Status::kSuccess);
  EXPECT_TRUE(back.metadata.empty());
  EXPECT_TRUE(back.tensors.empty());
}

// The exact bytes of a small file: sorted keys ("__metadata__" sorts before lower-case names), compact
// JSON, spaces up to an 8-byte aligned data start, data in name order whatever the input order.
TEST(Safetensors, ByteExactLayout) {
  nn::SafetensorsFile file;
  file.metadata["format"] = "pt";
  file.tensors.push_back(tensor("b", DType::kFloat32, Shape{2}, {1, 2, 3, 4, 5, 6, 7, 8}));
  file.tensors.push_back(tensor("c", DType::kBFloat16, Shape{}, {0x80, 0x3f}));
  file.tensors.push_back(tensor("a", DType::kUInt8, Shape{3}, {9, 10, 11}));

  const std::string json = "{\"__metadata__\":{\"format\":\"pt\"},"
                           "\"a\":{\"data_offsets\":[0,3],\"dtype\":\"U8\",\"shape\":[3]},"
                           "\"b\":{\"data_offsets\":[3,11],\"dtype\":\"F32\",\"shape\":[2]},"
                           "\"c\":{\"data_offsets\":[11,13],\"dtype\":\"BF16\",\"shape\":[]}}";
  ASSERT_EQ(json.size(), 193u);
  Bytes expected = {200, 0, 0, 0, 0, 0, 0, 0}; // 193 bytes of JSON + 7 spaces
  expected.insert(expected.end(), json.begin(), json.end());
  for (int i = 0; i < 7; ++i) {
    expected.push_back(' ');
  }
  for (std::uint8_t b : {9, 10, 11, 1, 2, 3, 4, 5, 6, 7, 8, 0x80, 0x3f}) {
    expected.push_back(b);
  }
  ASSERT_EQ(expected.size(), 221u);

  Bytes bytes;
  ASSERT_EQ(nn::serialize_safetensors(file, &bytes), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(bytes, expected);
}

// Files from other writers: unsorted keys, pretty-printed JSON, tensors stored in any order, an unpadded
// header, a null "__metadata__".
TEST(Safetensors, ReadsAnyValidLayout) {
  const std::string header = "{\n  \"z\": {\"shape\": [2], \"dtype\": \"I32\", \"data_offsets\": [0, 8]},\n"
                             "  \"__metadata__\": null,\n"
                             "  \"a\": {\"data_offsets\": [8, 10], \"shape\": [1, 1], \"dtype\": \"F16\"},\n"
                             "  \"e\": {\"data_offsets\": [8, 8], \"shape\": [0, 4], \"dtype\": \"F32\"}\n}";
  const Bytes data = {1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x00, 0x3c};
  const Bytes bytes = image(header, data);
  nn::SafetensorsFile f;
  ASSERT_EQ(nn::parse_safetensors(bytes.data(), bytes.size(), &f), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_TRUE(f.metadata.empty());
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.tensors[0].name, "a");
  EXPECT_EQ(f.tensors[1].name, "e");
  EXPECT_EQ(f.tensors[2].name, "z");
  EXPECT_EQ(f.tensors[0].shape, (Shape{1, 1}));
  EXPECT_EQ(f.tensors[0].dtype, DType::kFloat16);
  EXPECT_EQ(f.tensors[0].data, (Bytes{0x00, 0x3c}));
  EXPECT_EQ(f.tensors[1].shape, (Shape{0, 4}));
  EXPECT_TRUE(f.tensors[1].data.empty());
  EXPECT_EQ(f.tensors[2].dtype, DType::kInt32);
  EXPECT_EQ(f.tensors[2].data, (Bytes{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}));
}

// ---- malformed input --------------------------------------------------------------------------------

TEST(Safetensors, RejectsBadLengthPrefix) {
  expect_parse_error({}, "is 0 bytes long, shorter than the 8-byte length prefix");
  expect_parse_error({1, 0, 0, 0, 0, 0, 0}, "is 7 bytes long, shorter than the 8-byte length prefix");
  // Over the 100 MB cap: rejected before the file size is even considered.
  expect_parse_error(image_with_length(100000001, "{}"), "header length 100000001 exceeds the limit");
  expect_parse_error(image_with_length(UINT64_MAX, "{}"), "exceeds the limit");
  // Longer than the file (a truncated file).
  expect_parse_error(image_with_length(3, "{}"),
                     "header length 3 exceeds the 2 bytes after the length prefix");
  expect_parse_error(image_with_length(100000000, "{}"), "exceeds the 2 bytes after the length prefix");
}

TEST(Safetensors, RejectsBadJson) {
  expect_parse_error(image(""), "header is not valid JSON");
  expect_parse_error(image("{\"a\":"), "header is not valid JSON");
  expect_parse_error(image("{} x"), "header is not valid JSON"); // trailing bytes in the header
  expect_parse_error(image(std::string("{}\0\0", 4)), "header is not valid JSON"); // NUL padding
  expect_parse_error(image(std::string("{}\0 garbage", 10)), "NUL byte at offset 2");
  expect_parse_error(image("{\"a\xff\":1}"), "header is not valid JSON"); // invalid UTF-8
  expect_parse_error(image("{/* c */}"), "header is not valid JSON");     // no comments
  expect_parse_error(image("[1, 2]"), "header is not a JSON object");
  expect_parse_error(image("\"{}\""), "header is not a JSON object");
  expect_parse_error(image("null"), "header is not a JSON object");
  expect_parse_error(image(" {}"), "header does not start with '{'");
  // A byte order mark (which the JSON parser would skip) is refused too.
  expect_parse_error(image("\xEF\xBB\xBF{}"), "header does not start with '{'");
  expect_parse_error(image("\xEF\xBB\xBF {\"w\":1}"), "header does not start with '{'");
  // Nesting is bounded: a valid header nests 3 deep (header, entry, arrays); a fifth level is refused, in
  // an entry, in __metadata__ or at the root (a fourth reaches the entry checks, RejectsBadEntries).
  expect_parse_error(image("{\"w\":{\"shape\":[[[1]]],\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", {7}),
                     "header nests deeper than 4 levels");
  expect_parse_error(
      image("{\"__metadata__\":{\"k\":" + std::string(200, '[') + std::string(200, ']') + "}}"),
      "header nests deeper than 4 levels");
  expect_parse_error(image(std::string(129, '[') + std::string(129, ']')),
                     "header nests deeper than 4 levels");
}

// A number beyond a double's range is malformed input (kErrorParse), not an internal error; an array longer
// than any shape or data_offsets is rejected while the header is read, before a tree is built for it.
TEST(Safetensors, RejectsOverflowingNumbersAndLongArrays) {
  expect_parse_error(image("{\"__metadata__\":{\"k\":\"v\"},\"w\":{\"dtype\":\"U8\",\"shape\":[1e400],"
                           "\"data_offsets\":[0,1]}}",
                           {7}),
                     "number overflow");
  std::string objects = "{\"a\":[";
  for (int i = 0; i < 1000; ++i) {
    objects += i > 0 ? ",{}" : "{}";
  }
  expect_parse_error(image(objects + "]}"), "an array holds more than 64 values");
  std::string dims = "1";
  for (int i = 1; i < 65; ++i) {
    dims += ",1"; // 65 dimensions
  }
  expect_parse_error(image("{\"w\":{\"dtype\":\"U8\",\"shape\":[" + dims + "],\"data_offsets\":[0,1]}}", {7}),
                     "an array holds more than 64 values");
}

// Many entries read in linear time: 20 000 zero-size tensors took 3.5 s when the header was read with a
// parser callback (nlohmann-json rescans an object's siblings after each one closes); the result is
// checked here, the time only shows in the suite's run time.
TEST(Safetensors, ReadsAHeaderOfManyEntries) {
  constexpr int kCount = 20000;
  std::string header = "{";
  for (int i = 0; i < kCount; ++i) {
    header += (i > 0 ? ",\"t" : "\"t") + std::to_string(i) +
              "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}";
  }
  header += ",\"last\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}";
  const Bytes bytes = image(header, {5, 6});
  nn::SafetensorsFile f;
  ASSERT_EQ(nn::parse_safetensors(bytes.data(), bytes.size(), &f), Status::kSuccess)
      << culayers::last_error_message();
  ASSERT_EQ(f.tensors.size(), static_cast<std::size_t>(kCount) + 1);
  std::size_t with_data = 0;
  for (const auto& t : f.tensors) {
    with_data += t.data.empty() ? 0 : 1;
    if (t.name == "last") {
      EXPECT_EQ(t.data, (Bytes{5, 6}));
    }
  }
  EXPECT_EQ(with_data, 1u);
}

// The header is read one entry at a time (never as a whole tree): the first bad entry in the text ends the
// parse, before anything after it is read (here a syntax error and a later entry that sorts first, either of
// which a whole-document parse would report instead), and entries given in any order come back in name
// order.
TEST(Safetensors, FirstBadEntryInTheTextEndsTheParse) {
  const std::string good = "{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}";
  expect_parse_error(image("{\"m\":" + good + ",\"k\":{},\"a\":0, this is not JSON", {7}),
                     "tensor \"k\": missing key \"dtype\"");
  std::string junk = "{\"b\":[]";
  for (int i = 0; i < 100000; ++i) {
    junk += ",\"j" + std::to_string(i) + "\":{}";
  }
  expect_parse_error(image(junk + ",\"a\":0}"), "tensor \"b\": entry is not a JSON object");
  // A leading blank is refused as such, not for the first entry's contents.
  expect_parse_error(image(" {\"w\":1}"), "header does not start with '{'");
  // An entry's objects hold at most 16 keys (it has 3): a huge one fails at its 17th key, before it is
  // built; __metadata__ is free-form.
  std::string wide = "{\"w\":{\"dtype\":\"U8\"";
  std::string meta = "{\"__metadata__\":{\"k\":\"v\"";
  for (int i = 0; i < 200; ++i) {
    wide += ",\"x" + std::to_string(i) + "\":0";
    meta += ",\"k" + std::to_string(i) + "\":\"v\"";
  }
  expect_parse_error(image(wide + "}}"), "tensor \"w\": an object holds more than 16 keys");
  // The exemption is __metadata__'s own object: one nested in it is limited (and refused anyway: metadata
  // values are strings).
  std::string nested_meta = "{\"__metadata__\":{\"k\":{\"a\":\"v\"";
  for (int i = 0; i < 20; ++i) {
    nested_meta += ",\"a" + std::to_string(i) + "\":\"v\"";
  }
  expect_parse_error(image(nested_meta + "}}}"),
                     "tensor \"__metadata__\": an object holds more than 16 keys");
  expect_parse_error(image("{\"w\":{\"shape\":{\"a\":0},\"dtype\":\"U8\",\"data_offsets\":[0,1]}}"),
                     "tensor \"w\": shape: is not an array");
  const Bytes big_meta = image(meta + "}}");
  nn::SafetensorsFile m;
  ASSERT_EQ(nn::parse_safetensors(big_meta.data(), big_meta.size(), &m), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(m.metadata.size(), 201u);
  const Bytes bytes = image("{\"c\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]},"
                            "\"__metadata__\":{\"k\":\"v\"},\"b\":" +
                                good + "}",
                            {7, 8});
  nn::SafetensorsFile f;
  ASSERT_EQ(nn::parse_safetensors(bytes.data(), bytes.size(), &f), Status::kSuccess)
      << culayers::last_error_message();
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_EQ(f.tensors[0].name, "b");
  EXPECT_EQ(f.tensors[0].data, (Bytes{7}));
  EXPECT_EQ(f.tensors[1].name, "c");
  EXPECT_EQ(f.tensors[1].data, (Bytes{8}));
  EXPECT_EQ(f.metadata.at("k"), "v");
}

TEST(Safetensors, RejectsDuplicateKeys) {
  const std::string entry = "{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}";
  expect_parse_error(image("{\"w\":" + entry + ",\"w\":" + entry + "}", {7}), "duplicate key \"w\"");
  expect_parse_error(image("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}"), "duplicate key \"k\"");
  expect_parse_error(
      image("{\"w\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", {7}),
      "duplicate key \"dtype\"");
  // The same key in different objects is fine.
  const Bytes ok = image("{\"__metadata__\":{\"dtype\":\"x\"},\"dtype\":" + entry + "}", {7});
  nn::SafetensorsFile f;
  EXPECT_EQ(nn::parse_safetensors(ok.data(), ok.size(), &f), Status::kSuccess)
      << culayers::last_error_message();
}

TEST(Safetensors, RejectsBadMetadata) {
  expect_parse_error(image("{\"__metadata__\":[\"a\"]}"), "__metadata__: is not a JSON object");
  expect_parse_error(image("{\"__metadata__\":\"a\"}"), "__metadata__: is not a JSON object");
  expect_parse_error(image("{\"__metadata__\":{\"n\":1}}"), "__metadata__: value of \"n\" is not a string");
  expect_parse_error(image("{\"__metadata__\":{\"n\":null}}"),
                     "__metadata__: value of \"n\" is not a string");
}

/// An image with one tensor "w" whose entry is `entry` and `data_bytes` bytes of data.
Bytes one_tensor(const std::string& entry, std::size_t data_bytes) {
  return image("{\"w\":" + entry + "}", Bytes(data_bytes, 0));
}

TEST(Safetensors, RejectsBadEntries) {
  expect_parse_error(one_tensor("1", 0), "tensor \"w\": entry is not a JSON object");
  // Long names are cut in messages.
  expect_parse_error(image("{\"" + std::string(5000, 'n') + "\":1}"),
                     "\"" + std::string(200, 'n') + "\"...: entry is");
  expect_parse_error(one_tensor("[]", 0), "tensor \"w\": entry is not a JSON object");
  expect_parse_error(one_tensor("{\"shape\":[1],\"data_offsets\":[0,4]}", 4),
                     "tensor \"w\": missing key \"dtype\"");
  expect_parse_error(one_tensor("{\"dtype\":\"F32\",\"data_offsets\":[0,4]}", 4),
                     "tensor \"w\": missing key \"shape\"");
  expect_parse_error(one_tensor("{\"dtype\":\"F32\",\"shape\":[1]}", 4),
                     "tensor \"w\": missing key \"data_offsets\"");
  expect_parse_error(one_tensor("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":1}", 4),
                     "tensor \"w\": unknown key \"extra\"");
  // dtype
  expect_parse_error(one_tensor("{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}", 4),
                     "dtype: is not a string");
  expect_parse_error(one_tensor("{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}", 8),
                     "tensor \"w\": dtype: unsupported dtype \"F64\"");
  expect_parse_error(one_tensor("{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[0,1]}", 1),
                     "unsupported dtype \"BOOL\"");
  // shape
  expect_parse_error(one_tensor("{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}", 4),
                     "shape: is not an array");
  expect_parse_error(one_tensor("{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}", 4),
                     "shape: dimension -1 is negative");
  expect_parse_error(one_tensor("{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}", 4),
                     "shape: dimension 1.5 is not a non-negative integer");
  expect_parse_error(one_tensor("{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}", 4),
                     "is not a non-negative integer");
  expect_parse_error(one_tensor("{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}", 4),
                     "is not a non-negative integer");
  expect_parse_error(one_tensor("{\"dtype\":\"F32\",\"shape\":[[1]],\"data_offsets\":[0,4]}", 4),
                     "shape: dimension of type array is not a non-negative integer");
  expect_parse_error(one_tensor("{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}", 1),
                     "shape: rank 9 exceeds the maximum rank 8");
  expect_parse_error(
      one_tensor("{\"dtype\":\"U8\",\"shape\":[18446744073709551615],\"data_offsets\":[0,1]}", 1),
      "dimension 18446744073709551615 overflows int64");
  expect_parse_error(
      one_tensor("{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,1]}", 1),
      "shape: the element count overflows int64");
  // A zero dimension does not excuse an overflowing product of the others (Shape's validity rule).
  expect_parse_error(
      one_tensor("{\"dtype\":\"U8\",\"shape\":[0,4294967296,4294967296],\"data_offsets\":[0,0]}", 0),
      "shape: the element count overflows int64");
  expect_parse_error(
      one_tensor("{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}", 4),
      "shape: the byte size overflows int64");
  // data_offsets
  const std::string head = "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":";
  expect_parse_error(one_tensor(head + "8}", 8),
                     "data_offsets: is not an array of two non-negative integers");
  expect_parse_error(one_tensor(head + "[0]}", 8),
                     "data_offsets: is not an array of two non-negative integers");
  expect_parse_error(one_tensor(head + "[0,4,8]}", 8), "is not an array of two non-negative integers");
  expect_parse_error(one_tensor(head + "[-8,0]}", 8), "is not an array of two non-negative integers");
  expect_parse_error(one_tensor(head + "[0,8.0]}", 8), "is not an array of two non-negative integers");
  expect_parse_error(one_tensor(head + "[\"0\",\"8\"]}", 8), "is not an array of two non-negative integers");
  expect_parse_error(one_tensor(head + "[8,0]}", 8), "data_offsets: end 0 is before begin 8");
  expect_parse_error(one_tensor(head + "[0,4]}", 8),
                     "data_offsets: [0, 4) holds 4 bytes, but F32 [2] needs 8");
  expect_parse_error(one_tensor(head + "[0,12]}", 12), "holds 12 bytes, but F32 [2] needs 8");
  expect_parse_error(one_tensor(head + "[4,12]}", 8),
                     "data_offsets: end 12 is beyond the data buffer (8 bytes)");
  expect_parse_error(one_tensor(head + "[18446744073709551608,18446744073709551615]}", 8),
                     "holds 7 bytes, but F32 [2] needs 8");
  expect_parse_error(one_tensor(head + "[18446744073709551607,18446744073709551615]}", 8),
                     "is beyond the data buffer (8 bytes)");
}

TEST(Safetensors, RejectsBuffersNotExactlyCovered) {
  auto entry = [](const char* name, int begin, int end) {
    return "\"" + std::string(name) + "\":{\"dtype\":\"U8\",\"shape\":[" + std::to_string(end - begin) +
           "],\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
  };
  // Overlapping tensors, including a zero-size tensor inside another.
  expect_parse_error(image("{" + entry("a", 0, 4) + "," + entry("b", 2, 6) + "}", Bytes(6)),
                     "tensors \"a\" and \"b\" overlap");
  expect_parse_error(image("{" + entry("a", 0, 4) + "," + entry("b", 0, 4) + "}", Bytes(4)), "overlap");
  expect_parse_error(image("{" + entry("a", 0, 4) + "," + entry("z", 2, 2) + "}", Bytes(4)),
                     "tensors \"a\" and \"z\" overlap");
  // Holes: at the start, between tensors.
  expect_parse_error(image("{" + entry("a", 2, 4) + "}", Bytes(4)),
                     "bytes [0, 2) of the data buffer belong to no tensor (a hole before tensor \"a\")");
  expect_parse_error(image("{" + entry("a", 0, 2) + "," + entry("b", 3, 4) + "}", Bytes(4)),
                     "bytes [2, 3) of the data buffer belong to no tensor");
  // Trailing bytes after the last tensor, and data with no tensor at all.
  expect_parse_error(image("{" + entry("a", 0, 2) + "}", Bytes(5)),
                     "3 trailing bytes after the last tensor's data");
  expect_parse_error(image("{}", Bytes(1)), "1 trailing bytes after the last tensor's data");
  // Two zero-size tensors at the same offset, and one at the very end, are fine.
  const Bytes ok =
      image("{" + entry("a", 0, 2) + "," + entry("y", 2, 2) + "," + entry("z", 2, 2) + "}", Bytes(2));
  nn::SafetensorsFile f;
  EXPECT_EQ(nn::parse_safetensors(ok.data(), ok.size(), &f), Status::kSuccess)
      << culayers::last_error_message();
}

TEST(Safetensors, RejectsTruncatedImages) {
  auto rng = culayers::test::rng_for_test();
  nn::SafetensorsFile file;
  file.tensors.push_back(tensor("w", DType::kFloat32, Shape{3, 5}, random_bytes(rng, 60)));
  Bytes bytes;
  ASSERT_EQ(nn::serialize_safetensors(file, &bytes), Status::kSuccess);
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  // Cut inside the data, at the end of the header, inside the header, inside the prefix.
  for (const std::size_t keep :
       {bytes.size() - 1, static_cast<std::size_t>(8 + n + 1), static_cast<std::size_t>(8 + n),
        static_cast<std::size_t>(8 + n / 2), std::size_t{8}, std::size_t{3}}) {
    const Bytes cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(keep));
    nn::SafetensorsFile out = sentinel();
    EXPECT_EQ(nn::parse_safetensors(cut.data(), cut.size(), &out), Status::kErrorParse) << keep;
    EXPECT_TRUE(is_sentinel(out));
  }
}

TEST(Safetensors, ArgumentErrors) {
  nn::SafetensorsFile out = sentinel();
  EXPECT_EQ(nn::parse_safetensors(nullptr, 8, &out), Status::kErrorNullPointer);
  EXPECT_TRUE(is_sentinel(out));
  const Bytes bytes = image("{}");
  EXPECT_EQ(nn::parse_safetensors(bytes.data(), bytes.size(), nullptr), Status::kErrorNullPointer);
  // The name given for the source appears in messages.
  EXPECT_EQ(nn::parse_safetensors(bytes.data(), 3, &out, "model.safetensors"), Status::kErrorParse);
  EXPECT_EQ(std::string(culayers::last_error_message()).rfind("safetensors: model.safetensors: ", 0), 0u);
  EXPECT_EQ(nn::serialize_safetensors(out, nullptr), Status::kErrorNullPointer);
  EXPECT_EQ(nn::read_safetensors("x", nullptr), Status::kErrorNullPointer);
}

// ---- serializing invalid contents ----------------------------------------------------------------------

void expect_serialize_error(const nn::SafetensorsFile& file, Status expected, const std::string& problem) {
  Bytes out = {1, 2, 3};
  EXPECT_EQ(nn::serialize_safetensors(file, &out), expected) << problem;
  const std::string message = culayers::last_error_message();
  EXPECT_EQ(message.rfind("safetensors: buffer: ", 0), 0u) << message;
  EXPECT_NE(message.find(problem), std::string::npos) << "message: " << message << "\nexpected: " << problem;
  EXPECT_EQ(out, (Bytes{1, 2, 3}));
}

TEST(Safetensors, SerializeRejectsInvalidContents) {
  nn::SafetensorsFile f;
  f.tensors.push_back(tensor("a", DType::kUInt8, Shape{2}, {1, 2}));
  f.tensors.push_back(tensor("a", DType::kUInt8, Shape{1}, {1}));
  expect_serialize_error(f, Status::kErrorInvalidValue, "tensor \"a\": duplicate tensor name");

  f.tensors = {tensor("__metadata__", DType::kUInt8, Shape{1}, {1})};
  expect_serialize_error(f, Status::kErrorInvalidValue, "the name is reserved");

  f.tensors = {tensor("a", DType::kFloat32, Shape{2}, Bytes(7))};
  expect_serialize_error(f, Status::kErrorInvalidValue,
                         "tensor \"a\": data: holds 7 bytes, the shape and dtype need 8");

  f.tensors = {tensor("a", static_cast<DType>(42), Shape{1}, Bytes(1))};
  expect_serialize_error(f, Status::kErrorInvalidDType, "tensor \"a\": dtype: 42 is not a dtype");

  f.tensors = {tensor("a", DType::kFloat32, Shape{2, -1}, {})};
  expect_serialize_error(f, Status::kErrorInvalidShape, "shape: dimension 1 is negative");

  f.tensors = {tensor("a", DType::kFloat32, Shape{INT64_MAX / 2}, {})};
  expect_serialize_error(f, Status::kErrorSizeLimit, "the byte size overflows int64");

  f.tensors = {tensor("bad\xff", DType::kUInt8, Shape{1}, {1})};
  expect_serialize_error(f, Status::kErrorInvalidValue, "not valid UTF-8");

  f.tensors.clear();
  f.metadata["k"] = "\xc3";
  expect_serialize_error(f, Status::kErrorInvalidValue, "not valid UTF-8");
}

// ---- files ------------------------------------------------------------------------------------------

TEST_F(SafetensorsFileTest, WriteThenReadRoundTrip) {
  auto rng = culayers::test::rng_for_test();
  nn::SafetensorsFile file;
  file.metadata["format"] = "culayers";
  file.tensors.push_back(tensor("dense/kernel", DType::kFloat32, Shape{3, 4}, random_bytes(rng, 48)));
  file.tensors.push_back(tensor("dense/bias", DType::kBFloat16, Shape{4}, random_bytes(rng, 8)));
  file.tensors.push_back(tensor("dropout/iterations", DType::kInt64, Shape{}, random_bytes(rng, 8)));
  file.tensors.push_back(tensor("empty", DType::kInt32, Shape{0}, {}));
  const std::string p = path("model.safetensors");
  ASSERT_EQ(nn::write_safetensors(p, file), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(listing(), std::vector<std::string>{"model.safetensors"}); // no .tmp left behind

  // The file holds exactly the serialized image.
  Bytes expected;
  ASSERT_EQ(nn::serialize_safetensors(file, &expected), Status::kSuccess);
  EXPECT_EQ(read_raw(p), expected);

  nn::SafetensorsFile back;
  ASSERT_EQ(nn::read_safetensors(p, &back), Status::kSuccess) << culayers::last_error_message();
  expect_same(back, file);

  // Writing again replaces the file.
  file.tensors.resize(1);
  ASSERT_EQ(nn::write_safetensors(p, file), Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(nn::read_safetensors(p, &back), Status::kSuccess);
  expect_same(back, file);
  EXPECT_EQ(listing(), std::vector<std::string>{"model.safetensors"});
}

TEST_F(SafetensorsFileTest, MissingFileAndDirectoryAreIOErrors) {
  nn::SafetensorsFile out = sentinel();
  const std::string missing = path("missing.safetensors");
  EXPECT_EQ(nn::read_safetensors(missing, &out), Status::kErrorIO);
  const std::string message = culayers::last_error_message();
  EXPECT_EQ(message.rfind("safetensors: " + missing + ": cannot open", 0), 0u) << message;
  EXPECT_TRUE(is_sentinel(out));

  EXPECT_EQ(nn::read_safetensors(dir_.string(), &out), Status::kErrorIO) << culayers::last_error_message();
  EXPECT_TRUE(is_sentinel(out));
}

TEST_F(SafetensorsFileTest, TruncatedAndMalformedFilesAreParseErrors) {
  auto rng = culayers::test::rng_for_test();
  nn::SafetensorsFile file;
  file.tensors.push_back(tensor("w", DType::kFloat16, Shape{5, 3}, random_bytes(rng, 30)));
  Bytes bytes;
  ASSERT_EQ(nn::serialize_safetensors(file, &bytes), Status::kSuccess);
  const std::string p = path("cut.safetensors");

  const struct {
    std::size_t keep;
    const char* problem;
  } cuts[] = {
      {bytes.size() - 1, "is beyond the data buffer"},
      {20, "exceeds the 12 bytes after the length prefix"},
      {5, "is 5 bytes long, shorter than the 8-byte length prefix"},
      {0, "is 0 bytes long"},
  };
  for (const auto& cut : cuts) {
    write_raw(p, Bytes(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(cut.keep)));
    nn::SafetensorsFile out = sentinel();
    EXPECT_EQ(nn::read_safetensors(p, &out), Status::kErrorParse) << cut.keep;
    const std::string message = culayers::last_error_message();
    EXPECT_EQ(message.rfind("safetensors: " + p + ": ", 0), 0u) << message;
    EXPECT_NE(message.find(cut.problem), std::string::npos) << message;
    EXPECT_TRUE(is_sentinel(out));
  }

  // Extra bytes appended to a valid file.
  Bytes longer = bytes;
  longer.push_back(0);
  write_raw(p, longer);
  nn::SafetensorsFile out = sentinel();
  EXPECT_EQ(nn::read_safetensors(p, &out), Status::kErrorParse);
  EXPECT_NE(std::string(culayers::last_error_message()).find("1 trailing bytes"), std::string::npos);
  EXPECT_TRUE(is_sentinel(out));

  // And the untouched image reads back.
  write_raw(p, bytes);
  ASSERT_EQ(nn::read_safetensors(p, &out), Status::kSuccess) << culayers::last_error_message();
  expect_same(out, file);
}

TEST_F(SafetensorsFileTest, FailedWritesLeaveNoFile) {
  nn::SafetensorsFile file;
  file.tensors.push_back(tensor("w", DType::kUInt8, Shape{2}, {1, 2}));

  // A directory that does not exist: the temporary file cannot be created.
  const std::string in_missing_dir = path("no_such_dir/model.safetensors");
  EXPECT_EQ(nn::write_safetensors(in_missing_dir, file), Status::kErrorIO);
  EXPECT_NE(std::string(culayers::last_error_message()).find("cannot create"), std::string::npos);
  EXPECT_TRUE(listing().empty());

  // Invalid contents: rejected before any file is created; an existing file is left as it was.
  const std::string p = path("model.safetensors");
  write_raw(p, {'o', 'l', 'd'});
  nn::SafetensorsFile bad = file;
  bad.tensors[0].data.push_back(3);
  EXPECT_EQ(nn::write_safetensors(p, bad), Status::kErrorInvalidValue);
  EXPECT_EQ(std::string(culayers::last_error_message()).rfind("safetensors: " + p + ": tensor \"w\"", 0), 0u);
  EXPECT_EQ(listing(), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(read_raw(p), (Bytes{'o', 'l', 'd'}));

  // The rename fails (the target is a non-empty directory): the temporary file is removed.
  const std::string target = path("taken");
  ASSERT_TRUE(fs::create_directory(target));
  write_raw(path("taken/inside"), {1});
  EXPECT_EQ(nn::write_safetensors(target, file), Status::kErrorIO);
  EXPECT_NE(std::string(culayers::last_error_message()).find("cannot rename"), std::string::npos);
  EXPECT_EQ(listing(), (std::vector<std::string>{"model.safetensors", "taken"}));
  EXPECT_TRUE(fs::is_directory(target));
}

} // namespace
