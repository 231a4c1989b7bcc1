#include "common/format/safetensors.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_matchers.h"
#include "common/format/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::common {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;

std::string Bytes(const void* p, size_t n) {
  return std::string(static_cast<const char*>(p), n);
}

// Deterministic, distinct content per tensor.
std::string Pattern(size_t n, uint8_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i * 7);
  return s;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "safetensors_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Writes an 8-byte LE length, `header` verbatim, then `data`.
  std::string WriteRaw(const std::string& name, const std::string& header,
                       const std::string& data) {
    std::string bytes(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(n >> (8 * i));
    return WriteFile(name, bytes + header + data);
  }

  std::string WriteFile(const std::string& name, const std::string& bytes) {
    const std::string path = Path(name);
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  std::vector<std::string> ListDir() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir_)) {
      names.push_back(e.path().filename().string());
    }
    return names;
  }

  std::string dir_;
};

// --------------------------------------------------------------------------
// SHA-256

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex("abc", 3),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("", 0),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256Test, IncrementalMatchesOneShotAndDigestIsStable) {
  const std::string text = Pattern(3 << 20, 11);
  Sha256 h;
  for (size_t i = 0; i < text.size(); i += 100003) {
    h.Update(text.data() + i, std::min<size_t>(100003, text.size() - i));
  }
  const std::string digest = h.HexDigest();
  EXPECT_EQ(digest, Sha256Hex(text.data(), text.size()));
  EXPECT_EQ(h.HexDigest(), digest);
}

TEST_F(SafetensorsTest, Sha256FileStreamsAndReportsMissingFile) {
  const std::string content = Pattern((1 << 20) * 2 + 5, 3);
  const std::string path = WriteFile("blob", content);
  EXPECT_EQ(*Sha256File(path), Sha256Hex(content.data(), content.size()));
  EXPECT_THAT(Sha256File(Path("absent")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("absent")));
}

// --------------------------------------------------------------------------
// Round trips

TEST_F(SafetensorsTest, RoundTripDTypesShapesZeroSizeAndMetadata) {
  const std::string path = Path("model.safetensors");
  std::vector<TensorSpec> specs = {
      {"emb.weight", DType::kF32, {2, 3}}, {"half", DType::kF16, {4}},
      {"empty", DType::kI8, {3, 0}},       {"bytes.\xc3\xbc", DType::kU8, {5}},
      {"scalar", DType::kI32, {}},         {"ids", DType::kI64, {2, 2}},
  };
  std::vector<std::string> contents;
  for (size_t i = 0; i < specs.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : specs[i].shape) n *= d;
    contents.push_back(Pattern(n * DTypeSize(specs[i].dtype), 17 * i + 1));
  }
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"note", "quote \" backslash \\ newline \n tab \t"}};
  auto writer = SafetensorsWriter::Create(path, specs, metadata);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (const std::string& c : contents) {
    ASSERT_TRUE((*writer)->Append(c.data(), c.size()).ok());
  }
  ASSERT_TRUE((*writer)->Finish().ok());
  EXPECT_THAT(ListDir(), ElementsAre("model.safetensors"));

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;
  EXPECT_EQ(f.file_size(), (*writer)->file_size());
  EXPECT_EQ(f.file_size(), std::filesystem::file_size(path));
  EXPECT_EQ(*Sha256File(path), (*writer)->sha256_hex());
  EXPECT_EQ(f.metadata(), metadata);
  ASSERT_EQ(f.tensors().size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(specs[i].name);
    const TensorInfo* info = f.Find(specs[i].name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, specs[i].dtype);
    EXPECT_EQ(info->shape, specs[i].shape);
    EXPECT_EQ(info->end - info->begin, contents[i].size());
    auto data = f.Get(specs[i].name, specs[i].dtype, specs[i].shape);
    ASSERT_TRUE(data.ok()) << data.status();
    EXPECT_EQ(*data, f.data(*info));
    EXPECT_EQ(Bytes(*data, contents[i].size()), contents[i]);
    f.Prefetch(*info);
  }
  EXPECT_EQ(f.Find("empty")->num_elements(), 0);
  EXPECT_EQ(f.Find("scalar")->num_elements(), 1);
  EXPECT_EQ(f.Find("emb.weight")->num_elements(), 6);
  EXPECT_EQ(f.Find("nope"), nullptr);

  // The writer pads the header so the data section is 64-byte aligned.
  std::ifstream in(path, std::ios::binary);
  unsigned char len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  EXPECT_EQ((8 + n) % 64, 0u);
}

TEST_F(SafetensorsTest, RoundTripWithNoTensors) {
  const std::string path = Path("empty.safetensors");
  auto writer = SafetensorsWriter::Create(path, {});
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Finish().ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_THAT((*file)->tensors(), IsEmpty());
  EXPECT_THAT((*file)->metadata(), IsEmpty());
}

TEST_F(SafetensorsTest, ChunkedAppendsCrossTensorBoundaries) {
  const std::string path = Path("chunked.safetensors");
  // "big" exceeds the 1 MiB write buffer, exercising the direct-write path.
  std::vector<TensorSpec> specs = {{"a", DType::kF32, {3, 5}},
                                   {"big", DType::kU8, {3 << 20}},
                                   {"zero", DType::kF16, {0}},
                                   {"c", DType::kI64, {7}}};
  const std::string all = Pattern(60 + (3 << 20) + 56, 5);
  auto writer = SafetensorsWriter::Create(path, specs);
  ASSERT_TRUE(writer.ok()) << writer.status();
  size_t pos = 0;
  for (size_t chunk : {size_t{7}, size_t{100}, size_t{2} << 20, size_t{13}}) {
    ASSERT_TRUE((*writer)->Append(all.data() + pos, chunk).ok());
    pos += chunk;
  }
  ASSERT_TRUE((*writer)->Append(all.data() + pos, all.size() - pos).ok());
  ASSERT_TRUE((*writer)->Finish().ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const auto& tensors = (*file)->tensors();
  ASSERT_EQ(tensors.size(), 4u);
  EXPECT_EQ(Bytes((*file)->data(tensors.front()), all.size()), all);
  EXPECT_EQ(*Sha256File(path), (*writer)->sha256_hex());
}

TEST_F(SafetensorsTest, ReadsForeignHeaderKeyOrderNoMetadataNoPadding) {
  // As PyTorch / HF write it: keys in any order, fields in any order, JSON
  // whitespace, escapes, no __metadata__, no padding.
  const std::string header =
      "{ \"b\\u00fc\\ud83d\\ude00\\/x\": {\"data_offsets\": [8, 12], "
      "\"shape\": [2], \"dtype\": \"F16\"},\n"
      "  \"a\":{\"shape\":[2],\"dtype\":\"I32\",\"data_offsets\":[0,8]}\t}";
  const std::string data = Pattern(12, 9);
  const std::string path = WriteRaw("foreign.safetensors", header, data);
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const std::string b_name = "b\xc3\xbc\xf0\x9f\x98\x80/x";
  ASSERT_EQ((*file)->tensors().size(), 2u);
  EXPECT_EQ((*file)->tensors()[0].name, "a");  // ordered by offset
  EXPECT_EQ((*file)->tensors()[1].name, b_name);
  EXPECT_THAT((*file)->metadata(), IsEmpty());
  auto b = (*file)->Get(b_name, DType::kF16, {2});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(Bytes(*b, 4), data.substr(8));
}

TEST_F(SafetensorsTest, DataIsMappedNotCopied) {
  const std::string path = Path("mapped.safetensors");
  std::vector<TensorSpec> specs = {{"x", DType::kF32, {10}},
                                   {"y", DType::kI8, {3}},
                                   {"z", DType::kF32, {4}}};
  auto writer = SafetensorsWriter::Create(path, specs, {{"k", "v"}});
  ASSERT_TRUE(writer.ok()) << writer.status();
  const std::string all = Pattern(40 + 3 + 16, 1);
  ASSERT_TRUE((*writer)->Append(all.data(), all.size()).ok());
  ASSERT_TRUE((*writer)->Finish().ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;
  const auto* x = static_cast<const char*>(f.data(*f.Find("x")));
  const auto* y = static_cast<const char*>(f.data(*f.Find("y")));
  const auto* z = static_cast<const char*>(f.data(*f.Find("z")));
  // Tensors sit at their file offsets in one contiguous mapping...
  EXPECT_EQ(y - x, static_cast<ptrdiff_t>(f.Find("y")->begin));
  EXPECT_EQ(z - x, static_cast<ptrdiff_t>(f.Find("z")->begin));
  // ...which starts on a page, so data start = page + 8 + N, a multiple of 64.
  const uint64_t data_start = f.file_size() - all.size();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(x) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(x) % sysconf(_SC_PAGESIZE),
            data_start % sysconf(_SC_PAGESIZE));
  EXPECT_EQ(Bytes(z, 16), all.substr(43));
}

// --------------------------------------------------------------------------
// Reader errors

TEST_F(SafetensorsTest, MissingFile) {
  const std::string path = Path("missing.safetensors");
  EXPECT_THAT(SafetensorsFile::Open(path),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(path)));
}

TEST_F(SafetensorsTest, FileShorterThanLengthField) {
  const std::string path = WriteFile("short.safetensors", "abcde");
  EXPECT_THAT(SafetensorsFile::Open(path),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("short.safetensors: file is 5 bytes, too "
                                 "short for the 8-byte header length")));
}

TEST_F(SafetensorsTest, HeaderLengthBeyondFile) {
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(0xE8);  // 1000
  bytes[1] = 0x03;
  bytes += "{}";
  const std::string path = WriteFile("h.safetensors", bytes);
  EXPECT_THAT(
      SafetensorsFile::Open(path),
      StatusIs(absl::StatusCode::kDataLoss,
               HasSubstr("header length 1000 exceeds the 2 bytes after the "
                         "length field (file truncated?)")));
}

TEST_F(SafetensorsTest, HeaderLengthBeyondLimit) {
  std::string bytes(8, '\0');
  bytes[4] = 0x01;  // 2^32
  bytes += "{}";
  const std::string path = WriteFile("huge.safetensors", bytes);
  EXPECT_THAT(SafetensorsFile::Open(path),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("header length 4294967296 exceeds the limit "
                                 "of 100000000 bytes")));
}

TEST_F(SafetensorsTest, TruncatedDataSection) {
  const std::string path = Path("edge.safetensors");
  auto writer = SafetensorsWriter::Create(
      path, {{"user_top.0.bias", DType::kF32, {2}},
             {"user_top.0.weight", DType::kF32, {100}}});
  ASSERT_TRUE(writer.ok());
  const std::string all = Pattern(408, 2);
  ASSERT_TRUE((*writer)->Append(all.data(), all.size()).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  std::filesystem::resize_file(path, (*writer)->file_size() - 12);
  EXPECT_THAT(SafetensorsFile::Open(path),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("edge.safetensors: tensor 'user_top.0.weight' "
                                 "data_offsets [8, 408] exceed data section "
                                 "of 396 bytes (file truncated?)")));
}

struct BadHeaderCase {
  std::string name;
  std::string header;
  std::string data;
  std::string message;
};

void PrintTo(const BadHeaderCase& c, std::ostream* os) { *os << c.name; }

class BadHeaderTest : public SafetensorsTest,
                      public ::testing::WithParamInterface<BadHeaderCase> {};

TEST_P(BadHeaderTest, IsRejectedWithPreciseMessage) {
  const BadHeaderCase& c = GetParam();
  const std::string path = WriteRaw(c.name + ".safetensors", c.header, c.data);
  EXPECT_THAT(SafetensorsFile::Open(path),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr(c.name + ".safetensors: " + c.message)));
}

const char kT4[] = R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";

INSTANTIATE_TEST_SUITE_P(
    Json, BadHeaderTest,
    ::testing::Values(
        BadHeaderCase{"trailing_comma", R"({"a":[1,2,],})", "",
                      "invalid JSON header at byte 10 (file offset 18): "
                      "syntax error while parsing value - unexpected ']'"},
        BadHeaderCase{"missing_colon", R"({"a" 1})", "",
                      "invalid JSON header at byte 5 (file offset 13): "
                      "syntax error while parsing object separator - "
                      "unexpected number literal; expected ':'"},
        BadHeaderCase{"literal", R"({"a":true})", "",
                      "invalid JSON header at byte 5 (file offset 13): "
                      "expected an object, array, "
                      "string or non-negative integer, found character 't'"},
        BadHeaderCase{"null", R"({"a":[1, null]})", "",
                      "invalid JSON header at byte 9 (file offset 17): "
                      "expected an object, array, "
                      "string or non-negative integer, found character 'n'"},
        BadHeaderCase{
            "negative", R"({"a":[-1]})", "",
            "invalid JSON header at byte 6 (file offset 14): negative numbers"},
        BadHeaderCase{"float", R"({"a":[1.5]})", "",
                      "invalid JSON header at byte 6 (file offset 14): "
                      "non-integer numbers"},
        BadHeaderCase{"leading_zero", R"({"a":[01]})", "",
                      "invalid JSON header at byte 6 (file offset 14): integer "
                      "with a leading "
                      "zero"},
        BadHeaderCase{"overflow", R"({"a":[18446744073709551616]})", "",
                      "invalid JSON header at byte 6 (file offset 14): integer "
                      "does not fit in 64 "
                      "bits"},
        BadHeaderCase{"unterminated", R"({"abc)", "",
                      "invalid JSON header at byte 1 (file offset 9): "
                      "syntax error while parsing object key - invalid "
                      "string: missing closing quote; found end of header"},
        BadHeaderCase{
            "bad_escape", R"({"a\x":1})", "",
            "invalid JSON header at byte 3 (file offset 11): syntax error "
            "while parsing object key - invalid string: forbidden character "
            "after backslash; found character 'x'"},
        BadHeaderCase{"lone_low_surrogate", R"({"\udc00":1})", "",
                      "invalid JSON header at byte 2 (file offset 10): "
                      "syntax error while parsing object key - invalid "
                      "string: surrogate U+DC00..U+DFFF must follow "
                      "U+D800..U+DBFF"},
        BadHeaderCase{"lone_high_surrogate", R"({"\ud800x":1})", "",
                      "invalid JSON header at byte 2 (file offset 10): "
                      "syntax error while parsing object key - invalid "
                      "string: surrogate U+D800..U+DBFF must be followed by "
                      "U+DC00..U+DFFF"},
        BadHeaderCase{
            "control_char", "{\"a\tb\":1}", "",
            "invalid JSON header at byte 3 (file offset 11): syntax error "
            "while parsing object key - invalid string: control character "
            "U+0009 (HT) must be escaped to \\u0009 or \\t; found byte 0x09"},
        BadHeaderCase{"bad_utf8", "{\"a\xc3(\":1}", "",
                      "invalid JSON header at byte 3 (file offset 11): "
                      "syntax error while parsing object key - invalid "
                      "string: ill-formed UTF-8 byte; found character '('"},
        BadHeaderCase{"deep", R"({"a":[[[[[[[[1]]]]]]]]})", "",
                      "invalid JSON header at byte 12 (file offset 20): "
                      "nesting deeper than 8 "
                      "levels"},
        BadHeaderCase{"garbage_after", R"({} x)", "",
                      "invalid JSON header at byte 3 (file offset 11): "
                      "syntax error while parsing value - invalid literal; "
                      "found character 'x'; expected end of input"},
        // nlohmann's lexer takes NUL for the end of input and skips a BOM.
        BadHeaderCase{"nul_after", std::string("{}  \0x", 6), "",
                      "invalid JSON header at byte 4 (file offset 12): "
                      "unexpected byte 0x00 after the top-level value"},
        BadHeaderCase{"byte_order_mark", "\xEF\xBB\xBF{}", "",
                      "invalid JSON header at byte 0 (file offset 8): "
                      "expected an object, array, string or non-negative "
                      "integer, found byte 0xef"},
        BadHeaderCase{"not_object", R"([1])", "",
                      "header must be a JSON object, found an array"},
        BadHeaderCase{"empty_header", "", "",
                      "invalid JSON header at byte 0 (file offset 8): syntax "
                      "error while parsing value - unexpected end of input"}),
    [](const auto& info) { return info.param.name; });

INSTANTIATE_TEST_SUITE_P(
    Semantics, BadHeaderTest,
    ::testing::Values(
        BadHeaderCase{
            "unknown_dtype",
            R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})",
            std::string(4, 'x'),
            "tensor 'w' has unsupported dtype 'BF16' (supported: F32, F16, "
            "I8, U8, I32, I64)"},
        BadHeaderCase{
            "size_mismatch",
            R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})",
            std::string(20, 'x'),
            "tensor 'w' has shape [2,3] x F32 = 24 bytes, but data_offsets "
            "[0, 20] span 20 bytes"},
        BadHeaderCase{
            "reversed_offsets",
            R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})",
            std::string(4, 'x'),
            "tensor 'w' has data_offsets [4, 0] with begin after end"},
        BadHeaderCase{"missing_field", R"({"w":{"dtype":"U8","shape":[0]}})",
                      "", "tensor 'w' has no \"data_offsets\""},
        BadHeaderCase{
            "unknown_field",
            R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":1}})",
            "", "tensor 'w' has unknown field 'x'"},
        BadHeaderCase{
            "overlap",
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            std::string(12, 'x'),
            "tensors 'a' data_offsets [0, 8] and 'b' data_offsets [4, 12] "
            "overlap"},
        BadHeaderCase{
            "gap",
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
            std::string(20, 'x'),
            "data section bytes [8, 12) belong to no tensor (gap before "
            "tensor 'b')"},
        BadHeaderCase{
            "leading_gap",
            R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
            std::string(8, 'x'),
            "data section bytes [0, 4) belong to no tensor (gap before tensor "
            "'a')"},
        BadHeaderCase{"trailing_bytes", kT4, std::string(7, 'x'),
                      "data section is 7 bytes but tensors cover only 4 (3 "
                      "trailing bytes)"},
        BadHeaderCase{"duplicate_name",
                      R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                      R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                      std::string(2, 'x'),
                      "invalid JSON header at byte 53 (file offset 61): "
                      "duplicate key 'a' (first at byte "
                      "1)"},
        BadHeaderCase{"metadata_not_string", R"({"__metadata__":{"k":1}})", "",
                      "__metadata__ value for key 'k' must be a string, found "
                      "an integer"}),
    [](const auto& info) { return info.param.name; });

TEST_F(SafetensorsTest, GetReportsMissingTensorWrongDTypeAndWrongShape) {
  const std::string path = Path("get.safetensors");
  auto writer = SafetensorsWriter::Create(
      path, {{"user_top.0.weight", DType::kF32, {96, 1600}}});
  ASSERT_TRUE(writer.ok());
  const std::string all(96 * 1600 * 4, '\1');
  ASSERT_TRUE((*writer)->Append(all.data(), all.size()).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;
  EXPECT_THAT(
      f.Get("user_top.1.weight", DType::kF32, {96, 1600}),
      StatusIs(absl::StatusCode::kNotFound,
               HasSubstr("tensor 'user_top.1.weight' not found in " + path)));
  EXPECT_THAT(f.Get("user_top.0.weight", DType::kF16, {96, 1600}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensor 'user_top.0.weight' in " + path +
                                 " has dtype F32, expected F16")));
  EXPECT_THAT(f.Get("user_top.0.weight", DType::kF32, {96, 1601}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("has shape [96,1600], expected [96,1601]")));
  EXPECT_THAT(f.Get("user_top.0.weight", DType::kF32, {96, 1600, 1}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("has shape [96,1600], expected [96,1600,1]")));
}

// --------------------------------------------------------------------------
// Writer errors

TEST_F(SafetensorsTest, FinishWithTooFewBytesFailsAndLeavesNoFiles) {
  const std::string path = Path("short.safetensors");
  {
    auto writer = SafetensorsWriter::Create(
        path, {{"a", DType::kF32, {2}}, {"b", DType::kF32, {4}}});
    ASSERT_TRUE(writer.ok());
    const std::string part(12, 'x');
    ASSERT_TRUE((*writer)->Append(part.data(), part.size()).ok());
    EXPECT_THAT(ListDir(), ElementsAre("short.safetensors.tmp"));
    EXPECT_THAT((*writer)->Finish(),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         HasSubstr("short.safetensors: Finish after 12 of 24 "
                                   "declared data bytes; tensor 'b' has 4 of "
                                   "16 bytes")));
  }
  EXPECT_THAT(ListDir(), IsEmpty());
}

TEST_F(SafetensorsTest, AppendBeyondDeclaredSizeFails) {
  const std::string path = Path("long.safetensors");
  auto writer = SafetensorsWriter::Create(path, {{"a", DType::kI32, {2}}});
  ASSERT_TRUE(writer.ok());
  const std::string bytes(12, 'x');
  ASSERT_TRUE((*writer)->Append(bytes.data(), 6).ok());
  EXPECT_THAT((*writer)->Append(bytes.data(), 3),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("long.safetensors: Append of 3 bytes would "
                                 "exceed the declared data size: 6 of 8 bytes "
                                 "already written")));
  // The rejected append wrote nothing, so the file can still be completed.
  ASSERT_TRUE((*writer)->Append(bytes.data(), 2).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  EXPECT_THAT((*writer)->Append(bytes.data(), 0),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("Append after Finish")));
  EXPECT_THAT((*writer)->Finish(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("Finish called twice")));
  EXPECT_THAT(ListDir(), ElementsAre("long.safetensors"));
}

TEST_F(SafetensorsTest, AbandonedWriterRemovesTemporaryFile) {
  const std::string path = Path("abandoned.safetensors");
  {
    auto writer = SafetensorsWriter::Create(path, {{"a", DType::kU8, {4}}});
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Append("ab", 2).ok());
    EXPECT_THAT(ListDir(), ElementsAre("abandoned.safetensors.tmp"));
  }
  EXPECT_THAT(ListDir(), IsEmpty());
}

TEST_F(SafetensorsTest, CreateRejectsBadSpecs) {
  const std::string path = Path("bad.safetensors");
  EXPECT_THAT(SafetensorsWriter::Create(
                  path, {{"a", DType::kU8, {1}}, {"a", DType::kU8, {1}}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensor #1 'a' duplicates the name of tensor "
                                 "#0")));
  EXPECT_THAT(SafetensorsWriter::Create(path, {{"", DType::kU8, {1}}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensor #0 '' has an empty name")));
  EXPECT_THAT(SafetensorsWriter::Create(path, {{"n", DType::kU8, {2, -1}}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensor #0 'n' has negative dimension in "
                                 "shape [2,-1]")));
  EXPECT_THAT(
      SafetensorsWriter::Create(
          path, {{"n", DType::kI64, {int64_t{1} << 40, int64_t{1} << 40}}}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("overflows 64-bit byte offsets")));
  EXPECT_THAT(SafetensorsWriter::Create(Path("no/such/dir/x.safetensors"),
                                        {{"n", DType::kU8, {1}}}),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("no/such/dir/x.safetensors.tmp")));
  EXPECT_THAT(ListDir(), IsEmpty());
}

TEST_F(SafetensorsTest, EscapedNamesAndMetadataRoundTrip) {
  const std::string path = Path("escape.safetensors");
  const std::string name = "we\"ird\\name\x01\n";
  auto writer = SafetensorsWriter::Create(path, {{name, DType::kU8, {1}}},
                                          {{"k\"", "v\x1f"}});
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Append("z", 1).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_NE((*file)->Find(name), nullptr);
  EXPECT_THAT((*file)->metadata(), ElementsAre(Pair("k\"", "v\x1f")));
}

}  // namespace
}  // namespace duet::common
