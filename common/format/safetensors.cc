#include "common/format/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/format/sha256.h"

namespace duet::common {
namespace {

// Same cap as the reference Rust implementation: a header this large is
// almost certainly a corrupt length field, and parsing it would cost seconds.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// A valid header nests three levels (root, tensor, shape); the limit only
// bounds recursion on hostile input.
constexpr int kMaxJsonDepth = 8;
constexpr uint64_t kHeaderAlignment = 64;
constexpr size_t kWriteBufferSize = size_t{1} << 20;
// Linux transfers at most ~2 GiB per write(); larger requests just loop.
constexpr size_t kMaxWriteChunk = size_t{1} << 30;
constexpr absl::string_view kMetadataKey = "__metadata__";

constexpr DType kAllDTypes[] = {DType::kF32, DType::kF16, DType::kI8,
                                DType::kU8,  DType::kI32, DType::kI64};

bool ParseDType(absl::string_view name, DType* dtype) {
  for (DType d : kAllDTypes) {
    if (DTypeName(d) == name) {
      *dtype = d;
      return true;
    }
  }
  return false;
}

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

std::string OffsetsString(const TensorInfo& t) {
  return absl::StrCat("[", t.begin, ", ", t.end, "]");
}

// Byte size of a tensor, or false if it does not fit in 64 bits.
bool TensorByteSize(absl::Span<const int64_t> shape, DType dtype,
                    uint64_t* nbytes) {
  uint64_t n = DTypeSize(dtype);
  for (int64_t dim : shape) {
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(dim), &n)) return false;
  }
  *nbytes = n;
  return true;
}

// Length of the well-formed UTF-8 sequence starting at s[pos], or 0 if it is
// malformed (overlong, surrogate, beyond U+10FFFF, or truncated).
size_t Utf8SequenceLength(absl::string_view s, size_t pos) {
  auto byte = [&](size_t i) -> unsigned {
    return pos + i < s.size() ? static_cast<unsigned char>(s[pos + i]) : 0x100;
  };
  auto cont = [&](size_t i, unsigned lo = 0x80, unsigned hi = 0xBF) {
    return byte(i) >= lo && byte(i) <= hi;
  };
  const unsigned b0 = byte(0);
  if (b0 < 0x80) return 1;
  if (b0 >= 0xC2 && b0 <= 0xDF) return cont(1) ? 2 : 0;
  if (b0 == 0xE0) return cont(1, 0xA0, 0xBF) && cont(2) ? 3 : 0;
  if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) {
    return cont(1) && cont(2) ? 3 : 0;
  }
  if (b0 == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
  if (b0 == 0xF0) return cont(1, 0x90, 0xBF) && cont(2) && cont(3) ? 4 : 0;
  if (b0 >= 0xF1 && b0 <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (b0 == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

bool IsValidUtf8(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t len = Utf8SequenceLength(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// ---------------------------------------------------------------------------
// A strict parser for the subset of JSON a safetensors header uses: objects
// (duplicate keys rejected), arrays, strings and non-negative integers.

struct JsonMember;

struct JsonValue {
  enum class Kind { kObject, kArray, kString, kInteger };
  Kind kind = Kind::kObject;
  size_t offset = 0;  // header byte where the value starts
  std::string str;
  uint64_t integer = 0;
  std::vector<JsonMember> members;  // kObject, in document order
  std::vector<JsonValue> elements;  // kArray
};

struct JsonMember {
  std::string key;
  JsonValue value;
};

const char* KindName(JsonValue::Kind kind) {
  switch (kind) {
    case JsonValue::Kind::kObject:
      return "an object";
    case JsonValue::Kind::kArray:
      return "an array";
    case JsonValue::Kind::kString:
      return "a string";
    case JsonValue::Kind::kInteger:
      return "an integer";
  }
  return "?";
}

class JsonParser {
 public:
  explicit JsonParser(absl::string_view text) : text_(text) {}

  // Parses one value followed only by whitespace (writers pad with spaces).
  absl::Status Parse(JsonValue* out) {
    if (absl::Status s = ParseValue(0, out); !s.ok()) return s;
    SkipWhitespace();
    if (pos_ != text_.size()) {
      return Error(pos_, absl::StrCat("unexpected ", Found(pos_),
                                      " after the top-level value"));
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Error(size_t offset, absl::string_view what) const {
    return absl::DataLossError(absl::StrCat("invalid JSON header at byte ",
                                            offset, " (file offset ",
                                            offset + 8, "): ", what));
  }

  std::string Found(size_t pos) const {
    if (pos >= text_.size()) return "end of header";
    const unsigned char c = static_cast<unsigned char>(text_[pos]);
    if (c >= 0x20 && c < 0x7F)
      return absl::StrCat("character '", text_.substr(pos, 1), "'");
    return absl::StrCat("byte 0x", absl::Hex(c, absl::kZeroPad2));
  }

  bool AtEnd() const { return pos_ >= text_.size(); }
  char Peek() const { return AtEnd() ? '\0' : text_[pos_]; }

  void SkipWhitespace() {
    while (!AtEnd() && (Peek() == ' ' || Peek() == '\t' || Peek() == '\n' ||
                        Peek() == '\r')) {
      ++pos_;
    }
  }

  absl::Status ParseValue(int depth, JsonValue* out) {
    SkipWhitespace();
    out->offset = pos_;
    const char c = Peek();
    if (!AtEnd() && c == '{') return ParseObject(depth + 1, out);
    if (!AtEnd() && c == '[') return ParseArray(depth + 1, out);
    if (!AtEnd() && c == '"') {
      out->kind = JsonValue::Kind::kString;
      return ParseString(&out->str);
    }
    if (!AtEnd() && c >= '0' && c <= '9') return ParseInteger(out);
    if (c == '-') {
      return Error(pos_,
                   "negative numbers cannot occur in a safetensors header");
    }
    return Error(pos_, absl::StrCat("expected an object, array, string or "
                                    "non-negative integer, found ",
                                    Found(pos_)));
  }

  absl::Status CheckDepth(int depth) const {
    if (depth > kMaxJsonDepth) {
      return Error(
          pos_, absl::StrCat("nesting deeper than ", kMaxJsonDepth, " levels"));
    }
    return absl::OkStatus();
  }

  absl::Status ParseObject(int depth, JsonValue* out) {
    if (absl::Status s = CheckDepth(depth); !s.ok()) return s;
    out->kind = JsonValue::Kind::kObject;
    ++pos_;                                         // '{'
    absl::flat_hash_map<std::string, size_t> seen;  // key -> its offset
    SkipWhitespace();
    if (Peek() == '}' && !AtEnd()) {
      ++pos_;
      return absl::OkStatus();
    }
    while (true) {
      SkipWhitespace();
      if (Peek() != '"' || AtEnd()) {
        return Error(pos_, absl::StrCat("expected '\"' to begin an object key, "
                                        "found ",
                                        Found(pos_)));
      }
      const size_t key_offset = pos_;
      JsonMember member;
      if (absl::Status s = ParseString(&member.key); !s.ok()) return s;
      auto [it, inserted] = seen.emplace(member.key, key_offset);
      if (!inserted) {
        return Error(key_offset,
                     absl::StrCat("duplicate key '", member.key,
                                  "' (first at byte ", it->second, ")"));
      }
      SkipWhitespace();
      if (Peek() != ':' || AtEnd()) {
        return Error(pos_, absl::StrCat("expected ':' after object key, found ",
                                        Found(pos_)));
      }
      ++pos_;
      if (absl::Status s = ParseValue(depth, &member.value); !s.ok()) return s;
      out->members.push_back(std::move(member));
      SkipWhitespace();
      if (!AtEnd() && Peek() == ',') {
        ++pos_;
        continue;
      }
      if (!AtEnd() && Peek() == '}') {
        ++pos_;
        return absl::OkStatus();
      }
      return Error(pos_, absl::StrCat("expected ',' or '}' in object, found ",
                                      Found(pos_)));
    }
  }

  absl::Status ParseArray(int depth, JsonValue* out) {
    if (absl::Status s = CheckDepth(depth); !s.ok()) return s;
    out->kind = JsonValue::Kind::kArray;
    ++pos_;  // '['
    SkipWhitespace();
    if (!AtEnd() && Peek() == ']') {
      ++pos_;
      return absl::OkStatus();
    }
    while (true) {
      JsonValue element;
      if (absl::Status s = ParseValue(depth, &element); !s.ok()) return s;
      out->elements.push_back(std::move(element));
      SkipWhitespace();
      if (!AtEnd() && Peek() == ',') {
        ++pos_;
        continue;
      }
      if (!AtEnd() && Peek() == ']') {
        ++pos_;
        return absl::OkStatus();
      }
      return Error(pos_, absl::StrCat("expected ',' or ']' in array, found ",
                                      Found(pos_)));
    }
  }

  absl::Status ParseInteger(JsonValue* out) {
    out->kind = JsonValue::Kind::kInteger;
    const size_t start = pos_;
    if (Peek() == '0' && pos_ + 1 < text_.size() && text_[pos_ + 1] >= '0' &&
        text_[pos_ + 1] <= '9') {
      return Error(start, "integer with a leading zero");
    }
    uint64_t value = 0;
    while (!AtEnd() && Peek() >= '0' && Peek() <= '9') {
      const uint64_t digit = static_cast<uint64_t>(Peek() - '0');
      if (__builtin_mul_overflow(value, uint64_t{10}, &value) ||
          __builtin_add_overflow(value, digit, &value)) {
        return Error(start, "integer does not fit in 64 bits");
      }
      ++pos_;
    }
    if (!AtEnd() && (Peek() == '.' || Peek() == 'e' || Peek() == 'E')) {
      return Error(start,
                   "non-integer numbers cannot occur in a safetensors header");
    }
    out->integer = value;
    return absl::OkStatus();
  }

  absl::Status ParseHex4(uint32_t* out) {
    if (pos_ + 4 > text_.size()) {
      return Error(pos_, "truncated \\u escape");
    }
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_ + i];
      uint32_t d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        d = c - 'A' + 10;
      } else {
        return Error(pos_ + i, absl::StrCat("expected a hex digit in \\u "
                                            "escape, found ",
                                            Found(pos_ + i)));
      }
      v = v * 16 + d;
    }
    pos_ += 4;
    *out = v;
    return absl::OkStatus();
  }

  absl::Status ParseString(std::string* out) {
    const size_t start = pos_;
    ++pos_;  // '"'
    out->clear();
    while (true) {
      if (AtEnd()) return Error(start, "unterminated string");
      const unsigned char c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return absl::OkStatus();
      }
      if (c < 0x20) {
        return Error(pos_, absl::StrCat("unescaped control character ",
                                        Found(pos_), " in string"));
      }
      if (c >= 0x80) {
        const size_t len = Utf8SequenceLength(text_, pos_);
        if (len == 0) return Error(pos_, "invalid UTF-8 in string");
        out->append(text_.data() + pos_, len);
        pos_ += len;
        continue;
      }
      if (c != '\\') {
        out->push_back(static_cast<char>(c));
        ++pos_;
        continue;
      }
      const size_t escape_offset = pos_;
      ++pos_;
      if (AtEnd()) return Error(start, "unterminated string");
      const char e = text_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out->push_back(e);
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          uint32_t cp;
          if (absl::Status s = ParseHex4(&cp); !s.ok()) return s;
          if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return Error(escape_offset, "unpaired low surrogate in \\u escape");
          }
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (text_.substr(pos_, 2) != "\\u") {
              return Error(escape_offset,
                           "high surrogate not followed by a \\u low "
                           "surrogate");
            }
            pos_ += 2;
            uint32_t low;
            if (absl::Status s = ParseHex4(&low); !s.ok()) return s;
            if (low < 0xDC00 || low > 0xDFFF) {
              return Error(escape_offset,
                           "high surrogate not followed by a low surrogate");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          AppendUtf8(cp, out);
          break;
        }
        default:
          return Error(escape_offset,
                       absl::StrCat("invalid escape: backslash followed by ",
                                    Found(pos_ - 1)));
      }
    }
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

// ---------------------------------------------------------------------------
// Header semantics.

// Converts one tensor entry of the header; `error` gets context prepended by
// the caller.
absl::Status ParseTensorEntry(const JsonMember& entry, TensorInfo* info) {
  info->name = entry.key;
  auto fail = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("tensor '", entry.key, "' ", what));
  };
  if (entry.value.kind != JsonValue::Kind::kObject) {
    return fail(
        absl::StrCat("must be an object, found ", KindName(entry.value.kind)));
  }
  const JsonValue* dtype = nullptr;
  const JsonValue* shape = nullptr;
  const JsonValue* offsets = nullptr;
  for (const JsonMember& field : entry.value.members) {
    if (field.key == "dtype") {
      dtype = &field.value;
    } else if (field.key == "shape") {
      shape = &field.value;
    } else if (field.key == "data_offsets") {
      offsets = &field.value;
    } else {
      return fail(absl::StrCat("has unknown field '", field.key, "'"));
    }
  }
  if (dtype == nullptr) return fail("has no \"dtype\"");
  if (shape == nullptr) return fail("has no \"shape\"");
  if (offsets == nullptr) return fail("has no \"data_offsets\"");

  if (dtype->kind != JsonValue::Kind::kString) {
    return fail(absl::StrCat("\"dtype\" must be a string, found ",
                             KindName(dtype->kind)));
  }
  if (!ParseDType(dtype->str, &info->dtype)) {
    std::vector<absl::string_view> names;
    for (DType d : kAllDTypes) names.push_back(DTypeName(d));
    return fail(absl::StrCat("has unsupported dtype '", dtype->str,
                             "' (supported: ", absl::StrJoin(names, ", "),
                             ")"));
  }

  if (shape->kind != JsonValue::Kind::kArray) {
    return fail(absl::StrCat("\"shape\" must be an array, found ",
                             KindName(shape->kind)));
  }
  info->shape.clear();
  for (const JsonValue& dim : shape->elements) {
    if (dim.kind != JsonValue::Kind::kInteger) {
      return fail(absl::StrCat("\"shape\" must hold integers, found ",
                               KindName(dim.kind)));
    }
    if (dim.integer >
        static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return fail(absl::StrCat("has shape dimension ", dim.integer,
                               " beyond the int64 range"));
    }
    info->shape.push_back(static_cast<int64_t>(dim.integer));
  }

  if (offsets->kind != JsonValue::Kind::kArray ||
      offsets->elements.size() != 2 ||
      offsets->elements[0].kind != JsonValue::Kind::kInteger ||
      offsets->elements[1].kind != JsonValue::Kind::kInteger) {
    return fail("\"data_offsets\" must be an array of two integers");
  }
  info->begin = offsets->elements[0].integer;
  info->end = offsets->elements[1].integer;
  if (info->begin > info->end) {
    return fail(absl::StrCat("has data_offsets ", OffsetsString(*info),
                             " with begin after end"));
  }
  uint64_t nbytes;
  if (!TensorByteSize(info->shape, info->dtype, &nbytes)) {
    return fail(absl::StrCat("has shape ", ShapeString(info->shape),
                             " whose byte size overflows 64 bits"));
  }
  if (nbytes != info->end - info->begin) {
    return fail(absl::StrCat("has shape ", ShapeString(info->shape), " x ",
                             DTypeName(info->dtype), " = ", nbytes,
                             " bytes, but data_offsets ", OffsetsString(*info),
                             " span ", info->end - info->begin, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status ParseMetadata(const JsonValue& value,
                           std::map<std::string, std::string>* metadata) {
  if (value.kind != JsonValue::Kind::kObject) {
    return absl::DataLossError(absl::StrCat(
        "__metadata__ must be an object, found ", KindName(value.kind)));
  }
  for (const JsonMember& m : value.members) {
    if (m.value.kind != JsonValue::Kind::kString) {
      return absl::DataLossError(
          absl::StrCat("__metadata__ value for key '", m.key,
                       "' must be a string, found ", KindName(m.value.kind)));
    }
    (*metadata)[m.key] = m.value.str;
  }
  return absl::OkStatus();
}

absl::Status Prefixed(absl::string_view prefix, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat(prefix, ": ", status.message()));
}

uint64_t DecodeLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void EncodeLe64(uint64_t v, char* p) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}

void AppendJsonString(absl::string_view s, std::string* out) {
  out->push_back('"');
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      default:
        if (c < 0x20) {
          absl::StrAppend(out, "\\u00", absl::Hex(c, absl::kZeroPad2));
        } else {
          out->push_back(ch);
        }
    }
  }
  out->push_back('"');
}

}  // namespace

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kI8:
      return "I8";
    case DType::kU8:
      return "U8";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "INVALID";
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
      return 2;
    case DType::kI8:
    case DType::kU8:
      return 1;
    case DType::kI64:
      return 8;
  }
  return 0;
}

int64_t TensorInfo::num_elements() const {
  uint64_t n = 1;
  for (int64_t dim : shape) n *= static_cast<uint64_t>(dim);
  return static_cast<int64_t>(n);
}

// ---------------------------------------------------------------------------
// SafetensorsFile

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat("cannot open safetensors file ", path));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return absl::ErrnoToStatus(err, absl::StrCat("fstat ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    close(fd);
    return absl::DataLossError(
        absl::StrCat(path, ": file is ", size,
                     " bytes, too short for the 8-byte header length"));
  }
  // Map the whole file but touch only the header: tensor pages are faulted in
  // on first use (or by Prefetch), so opening a large file is cheap.
  void* map = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  const int mmap_errno = errno;
  close(fd);  // the mapping keeps the file referenced
  if (map == MAP_FAILED) {
    return absl::ErrnoToStatus(mmap_errno, absl::StrCat("mmap ", path));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = map;
  file->size_ = size;
  const uint8_t* base = static_cast<const uint8_t*>(map);

  const uint64_t header_len = DecodeLe64(base);
  if (header_len > kMaxHeaderBytes) {
    return absl::DataLossError(
        absl::StrCat(path, ": header length ", header_len,
                     " exceeds the limit of ", kMaxHeaderBytes, " bytes"));
  }
  if (header_len > size - 8) {
    return absl::DataLossError(absl::StrCat(
        path, ": header length ", header_len, " exceeds the ", size - 8,
        " bytes after the length field (file truncated?)"));
  }
  const absl::string_view header(reinterpret_cast<const char*>(base + 8),
                                 header_len);
  JsonValue root;
  if (absl::Status s = JsonParser(header).Parse(&root); !s.ok()) {
    return Prefixed(path, s);
  }
  if (root.kind != JsonValue::Kind::kObject) {
    return absl::DataLossError(absl::StrCat(
        path, ": header must be a JSON object, found ", KindName(root.kind)));
  }

  file->data_start_ = base + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  for (const JsonMember& member : root.members) {
    if (member.key == kMetadataKey) {
      if (absl::Status s = ParseMetadata(member.value, &file->metadata_);
          !s.ok()) {
        return Prefixed(path, s);
      }
      continue;
    }
    TensorInfo info;
    if (absl::Status s = ParseTensorEntry(member, &info); !s.ok()) {
      return Prefixed(path, s);
    }
    file->tensors_.push_back(std::move(info));
  }

  // The format requires the tensors to tile the data section exactly.
  std::sort(file->tensors_.begin(), file->tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return std::tie(a.begin, a.end, a.name) <
                     std::tie(b.begin, b.end, b.name);
            });
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : file->tensors_) {
    if (t.begin < covered) {
      return absl::DataLossError(
          absl::StrCat(path, ": tensors '", previous->name, "' data_offsets ",
                       OffsetsString(*previous), " and '", t.name,
                       "' data_offsets ", OffsetsString(t), " overlap"));
    }
    if (t.begin > covered) {
      return absl::DataLossError(absl::StrCat(
          path, ": data section bytes [", covered, ", ", t.begin,
          ") belong to no tensor (gap before tensor '", t.name, "')"));
    }
    if (t.end > data_size) {
      return absl::DataLossError(absl::StrCat(
          path, ": tensor '", t.name, "' data_offsets ", OffsetsString(t),
          " exceed data section of ", data_size, " bytes (file truncated?)"));
    }
    covered = t.end;
    previous = &t;
  }
  if (covered != data_size) {
    return absl::DataLossError(absl::StrCat(
        path, ": data section is ", data_size, " bytes but tensors cover only ",
        covered, " (", data_size - covered, " trailing bytes)"));
  }
  for (size_t i = 0; i < file->tensors_.size(); ++i) {
    file->index_.emplace(file->tensors_[i].name, i);
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) munmap(map_, size_);
}

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<const void*> SafetensorsFile::Get(
    absl::string_view name, DType dtype,
    absl::Span<const int64_t> shape) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("tensor '", name, "' not found in ", path_));
  }
  if (info->dtype != dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' in ", path_, " has dtype ",
                     DTypeName(info->dtype), ", expected ", DTypeName(dtype)));
  }
  if (absl::MakeConstSpan(info->shape) != shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", name, "' in ", path_, " has shape ",
        ShapeString(info->shape), ", expected ", ShapeString(shape)));
  }
  return data(*info);
}

const void* SafetensorsFile::data(const TensorInfo& info) const {
  return data_start_ + info.begin;
}

void SafetensorsFile::Prefetch(const TensorInfo& info) const {
  if (info.end <= info.begin) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t first = reinterpret_cast<uintptr_t>(data_start_ + info.begin);
  const uintptr_t last = reinterpret_cast<uintptr_t>(data_start_ + info.end);
  const uintptr_t start = first & ~(page - 1);
  // Advice only: a failure leaves the pages to be faulted in on demand.
  madvise(reinterpret_cast<void*>(start), last - start, MADV_WILLNEED);
}

// ---------------------------------------------------------------------------
// SafetensorsWriter

struct SafetensorsWriter::Impl {
  std::string path;
  std::string tmp_path;
  int fd = -1;
  std::vector<TensorInfo> tensors;  // declaration order, offsets assigned
  uint64_t data_declared = 0;
  uint64_t data_written = 0;
  uint64_t header_bytes = 0;
  std::vector<char> buffer;  // pending bytes, capacity kWriteBufferSize
  Sha256 sha;
  absl::Status io_error;  // first I/O failure; the file is unusable after it
  bool renamed = false;

  ~Impl() {
    if (fd >= 0) close(fd);
    if (!renamed && !tmp_path.empty()) unlink(tmp_path.c_str());
  }

  absl::Status WriteAll(const char* p, size_t n) {
    while (n > 0) {
      const ssize_t w = write(fd, p, std::min(n, kMaxWriteChunk));
      if (w < 0) {
        if (errno == EINTR) continue;
        return absl::ErrnoToStatus(errno, absl::StrCat("write ", tmp_path));
      }
      if (w == 0) {
        return absl::InternalError(
            absl::StrCat("write ", tmp_path, " made no progress"));
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    return absl::OkStatus();
  }

  absl::Status Flush() {
    absl::Status s = WriteAll(buffer.data(), buffer.size());
    buffer.clear();
    return s;
  }

  // Buffers small writes; large ones bypass the buffer to avoid a copy.
  absl::Status Write(const char* p, size_t n) {
    sha.Update(p, n);
    if (buffer.size() + n <= kWriteBufferSize) {
      buffer.insert(buffer.end(), p, p + n);
      return absl::OkStatus();
    }
    if (absl::Status s = Flush(); !s.ok()) return s;
    if (n >= kWriteBufferSize) return WriteAll(p, n);
    buffer.insert(buffer.end(), p, p + n);
    return absl::OkStatus();
  }

  absl::Status Fail(absl::Status s) {
    io_error = s;
    return s;
  }
};

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, std::vector<TensorSpec> tensors,
    std::map<std::string, std::string> metadata) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  absl::flat_hash_map<std::string, size_t> seen;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    TensorSpec& spec = tensors[i];
    auto fail = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor #", i, " '", spec.name, "' ", what));
    };
    if (spec.name.empty()) return fail("has an empty name");
    if (spec.name == kMetadataKey) return fail("uses the reserved name");
    if (!IsValidUtf8(spec.name)) return fail("has a name that is not UTF-8");
    if (auto [it, inserted] = seen.emplace(spec.name, i); !inserted) {
      return fail(absl::StrCat("duplicates the name of tensor #", it->second));
    }
    for (int64_t dim : spec.shape) {
      if (dim < 0) {
        return fail(absl::StrCat("has negative dimension in shape ",
                                 ShapeString(spec.shape)));
      }
    }
    uint64_t nbytes;
    if (!TensorByteSize(spec.shape, spec.dtype, &nbytes) ||
        __builtin_add_overflow(offset, nbytes, &offset)) {
      return fail(absl::StrCat("with shape ", ShapeString(spec.shape),
                               " overflows 64-bit byte offsets"));
    }
    TensorInfo info;
    info.name = std::move(spec.name);
    info.dtype = spec.dtype;
    info.shape = std::move(spec.shape);
    info.begin = offset - nbytes;
    info.end = offset;
    impl->tensors.push_back(std::move(info));
  }
  impl->data_declared = offset;

  std::string json = "{";
  if (!metadata.empty()) {
    AppendJsonString(kMetadataKey, &json);
    json += ":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      if (!IsValidUtf8(key) || !IsValidUtf8(value)) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": metadata entry '", key, "' is not valid UTF-8"));
      }
      if (!first) json += ",";
      first = false;
      AppendJsonString(key, &json);
      json += ":";
      AppendJsonString(value, &json);
    }
    json += "}";
  }
  for (const TensorInfo& t : impl->tensors) {
    if (json.size() > 1) json += ",";
    AppendJsonString(t.name, &json);
    absl::StrAppend(&json, ":{\"dtype\":\"", DTypeName(t.dtype),
                    "\",\"shape\":[", absl::StrJoin(t.shape, ","),
                    "],\"data_offsets\":[", t.begin, ",", t.end, "]}");
  }
  json += "}";
  // Pad with spaces (allowed by the format) so the data section starts on a
  // 64-byte boundary of the file, and hence of any page-aligned mapping.
  const uint64_t unpadded = 8 + json.size();
  json.append(
      (kHeaderAlignment - unpadded % kHeaderAlignment) % kHeaderAlignment, ' ');
  if (json.size() > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header of ", json.size(),
                     " bytes exceeds the limit of ", kMaxHeaderBytes));
  }

  impl->tmp_path = path + ".tmp";
  impl->fd = open(impl->tmp_path.c_str(),
                  O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (impl->fd < 0) {
    const int err = errno;
    impl->tmp_path.clear();  // not ours: do not unlink someone else's file
    return absl::ErrnoToStatus(err,
                               absl::StrCat("cannot create ", path, ".tmp"));
  }
  impl->buffer.reserve(kWriteBufferSize);
  char length[8];
  EncodeLe64(json.size(), length);
  impl->header_bytes = 8 + json.size();
  if (absl::Status s = impl->Write(length, sizeof(length)); !s.ok()) return s;
  if (absl::Status s = impl->Write(json.data(), json.size()); !s.ok()) {
    return s;
  }
  std::unique_ptr<SafetensorsWriter> writer(new SafetensorsWriter());
  writer->impl_ = std::move(impl);
  return writer;
}

SafetensorsWriter::~SafetensorsWriter() = default;

absl::Status SafetensorsWriter::Append(const void* data, size_t nbytes) {
  Impl& impl = *impl_;
  if (!impl.io_error.ok()) return impl.io_error;
  if (impl.renamed) {
    return absl::FailedPreconditionError(
        absl::StrCat(impl.path, ": Append after Finish"));
  }
  if (nbytes > impl.data_declared - impl.data_written) {
    return absl::FailedPreconditionError(absl::StrCat(
        impl.path, ": Append of ", nbytes,
        " bytes would exceed the declared data size: ", impl.data_written,
        " of ", impl.data_declared, " bytes already written"));
  }
  if (absl::Status s = impl.Write(static_cast<const char*>(data), nbytes);
      !s.ok()) {
    return impl.Fail(s);
  }
  impl.data_written += nbytes;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  Impl& impl = *impl_;
  if (!impl.io_error.ok()) return impl.io_error;
  if (impl.renamed) {
    return absl::FailedPreconditionError(
        absl::StrCat(impl.path, ": Finish called twice"));
  }
  if (impl.data_written != impl.data_declared) {
    // Name the first incomplete tensor: the usual cause is a producer that
    // stopped early or sized one tensor wrongly.
    std::string which;
    for (const TensorInfo& t : impl.tensors) {
      if (t.end > impl.data_written) {
        which = absl::StrCat(
            "; tensor '", t.name, "' has ",
            impl.data_written - std::min(impl.data_written, t.begin), " of ",
            t.end - t.begin, " bytes");
        break;
      }
    }
    return absl::FailedPreconditionError(
        absl::StrCat(impl.path, ": Finish after ", impl.data_written, " of ",
                     impl.data_declared, " declared data bytes", which));
  }
  if (absl::Status s = impl.Flush(); !s.ok()) return impl.Fail(s);
  if (fsync(impl.fd) != 0) {
    return impl.Fail(
        absl::ErrnoToStatus(errno, absl::StrCat("fsync ", impl.tmp_path)));
  }
  const int fd = impl.fd;
  impl.fd = -1;
  if (close(fd) != 0) {
    return impl.Fail(
        absl::ErrnoToStatus(errno, absl::StrCat("close ", impl.tmp_path)));
  }
  if (rename(impl.tmp_path.c_str(), impl.path.c_str()) != 0) {
    return impl.Fail(absl::ErrnoToStatus(
        errno, absl::StrCat("rename ", impl.tmp_path, " to ", impl.path)));
  }
  impl.renamed = true;
  sha256_hex_ = impl.sha.HexDigest();
  file_size_ = impl.header_bytes + impl.data_written;

  // Persist the directory entry too, or a crash could lose the rename.
  const size_t slash = impl.path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                       : impl.path.substr(0, slash);
  const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("open directory ", dir));
  }
  const int rc = fsync(dir_fd);
  const int err = errno;
  close(dir_fd);
  if (rc != 0) {
    return absl::ErrnoToStatus(err, absl::StrCat("fsync directory ", dir));
  }
  return absl::OkStatus();
}

}  // namespace duet::common
