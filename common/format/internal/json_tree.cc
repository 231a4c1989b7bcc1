#include "common/format/internal/json_tree.h"

#include <algorithm>
#include <cstddef>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/format/internal/safetensors_util.h"
#include "nlohmann/json.hpp"

namespace duet::common::internal {
namespace {

// A valid header nests three levels (root, tensor, shape); the limit only
// bounds the tree built from hostile input.
constexpr size_t kMaxJsonDepth = 8;

// Feeds the header to nlohmann's lexer, then one extra space, and records
// how many characters the lexer has fetched. The SAX events carry no
// positions; the fetch count does: the lexer reads a number's terminator
// before it reports the number, and the space gives every number one.
class HeaderIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = char;

  HeaderIterator(absl::string_view text, size_t pos, size_t* fetched)
      : text_(text), pos_(pos), fetched_(fetched) {}
  char operator*() const {
    *fetched_ = pos_ + 1;
    return pos_ < text_.size() ? text_[pos_] : ' ';
  }
  HeaderIterator& operator++() {
    ++pos_;
    return *this;
  }
  bool operator==(const HeaderIterator& o) const { return pos_ == o.pos_; }
  bool operator!=(const HeaderIterator& o) const { return pos_ != o.pos_; }

 private:
  absl::string_view text_;
  size_t pos_;
  size_t* fetched_;
};

bool IsNumberChar(char c) {
  return absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '-' ||
         c == '+' || c == '.' || c == 'e' || c == 'E';
}

// nlohmann SAX handler: builds the JsonValue tree and rejects, with the
// header byte offset, what JSON allows but a safetensors header does not.
class TreeBuilder {
 public:
  using Json = nlohmann::json;

  explicit TreeBuilder(absl::string_view text) : text_(text) {}

  // Parses the whole header into `root`.
  absl::Status Parse(JsonValue* root) {
    root_ = root;
    // nlohmann skips a byte order mark (EF BB BF); JSON (RFC 8259) and the
    // format do not allow one, and no JSON text starts with 0xEF.
    if (absl::StartsWith(text_, "\xEF")) {
      Unexpected(0);
      return status_;
    }
    const HeaderIterator begin(text_, 0, &fetched_);
    const HeaderIterator end(text_, text_.size() + 1, &fetched_);
    // Every callback that stops the parse sets status_.
    Json::sax_parse(begin, end, this);
    if (!status_.ok()) return status_;
    // The lexer takes a NUL byte for the end of input, so one can only
    // have passed unnoticed after the top-level value.
    if (const size_t nul = text_.find('\0'); nul != absl::string_view::npos) {
      return Error(nul, "unexpected byte 0x00 after the top-level value");
    }
    return absl::OkStatus();
  }

  // SAX callbacks; `false` stops the parse with status_ set.
  bool null() { return Unexpected(fetched_ - 4); }
  bool boolean(bool value) { return Unexpected(fetched_ - (value ? 4 : 5)); }
  bool number_integer(Json::number_integer_t /*value*/) {
    return Fail(NumberStart(fetched_ - 1),
                "negative numbers cannot occur in a safetensors header");
  }
  bool number_unsigned(Json::number_unsigned_t value) {
    const size_t end = fetched_ - 1;
    const size_t start = NumberStart(end);
    // nlohmann ends the number "01" after its "0"; JSON forbids the zero.
    if (end < text_.size() && absl::ascii_isdigit(text_[end])) {
      return Fail(start, "integer with a leading zero");
    }
    JsonValue* v = NewValue(JsonValue::Kind::kInteger);
    if (v != nullptr) v->integer = value;
    return v != nullptr;
  }
  bool number_float(Json::number_float_t /*value*/, const std::string& text) {
    const size_t start = NumberStart(fetched_ - 1);
    if (absl::StartsWith(text, "-")) {
      return Fail(start,
                  "negative numbers cannot occur in a safetensors header");
    }
    // Digits only: an integer beyond 64 bits, which nlohmann reads as double.
    if (text.find_first_not_of("0123456789") == std::string::npos) {
      return Fail(start, "integer does not fit in 64 bits");
    }
    return Fail(start,
                "non-integer numbers cannot occur in a safetensors header");
  }
  bool string(std::string& value) {
    JsonValue* v = NewValue(JsonValue::Kind::kString);
    if (v != nullptr) v->str = std::move(value);
    return v != nullptr;
  }
  bool binary(Json::binary_t& /*value*/) { return Unexpected(fetched_ - 1); }
  bool start_object(size_t /*elements*/) {
    return NewValue(JsonValue::Kind::kObject) != nullptr;
  }
  bool key(std::string& key) {
    const size_t offset = OpeningQuote(fetched_ - 1);
    Frame& frame = stack_.back();
    auto [it, inserted] = frame.seen.emplace(key, offset);
    if (!inserted) {
      return Fail(offset, absl::StrCat("duplicate key '", key,
                                       "' (first at byte ", it->second, ")"));
    }
    frame.value->members.push_back(JsonMember{std::move(key), {}});
    return true;
  }
  bool end_object() { return Close(); }
  bool start_array(size_t /*elements*/) {
    return NewValue(JsonValue::Kind::kArray) != nullptr;
  }
  bool end_array() { return Close(); }
  bool parse_error(size_t position, const std::string& last_token,
                   const Json::exception& ex);

 private:
  struct Frame {
    JsonValue* value;
    absl::flat_hash_map<std::string, size_t> seen;  // object key -> offset
  };

  absl::Status Error(size_t offset, absl::string_view what) const {
    return absl::DataLossError(absl::StrCat("invalid JSON header at byte ",
                                            offset, " (file offset ",
                                            offset + 8, "): ", what));
  }
  bool Fail(size_t offset, absl::string_view what) {
    status_ = Error(offset, what);
    return false;
  }
  bool Unexpected(size_t offset) {
    return Fail(offset, absl::StrCat("expected an object, array, string or "
                                     "non-negative integer, found ",
                                     Found(offset)));
  }

  std::string Found(size_t pos) const {
    if (pos >= text_.size()) return "end of header";
    const unsigned char c = static_cast<unsigned char>(text_[pos]);
    if (c >= 0x20 && c < 0x7F) {
      return absl::StrCat("character '", text_.substr(pos, 1), "'");
    }
    return absl::StrCat("byte 0x", absl::Hex(c, absl::kZeroPad2));
  }

  // The opening quote of the string whose content runs up to `pos`: the
  // nearest '"' before it not escaped by an odd run of backslashes (the
  // content itself cannot hold one).
  size_t OpeningQuote(size_t pos) const {
    for (size_t i = std::min(pos, text_.size()); i > 0; --i) {
      if (text_[i - 1] != '"') continue;
      size_t backslashes = 0;
      while (i - 1 > backslashes && text_[i - 2 - backslashes] == '\\') {
        ++backslashes;
      }
      if (backslashes % 2 == 0) return i - 1;
    }
    return pos;
  }
  // The first character of the number that ends just before `end`.
  size_t NumberStart(size_t end) const {
    size_t i = std::min(end, text_.size());
    while (i > 0 && IsNumberChar(text_[i - 1])) --i;
    return i;
  }
  // The first character of the token whose last character is at `pos`.
  size_t TokenStart(size_t pos) const {
    if (pos >= text_.size()) return pos;
    const char c = text_[pos];
    if (c == '"') return OpeningQuote(pos);
    if (IsNumberChar(c)) return NumberStart(pos + 1);
    size_t i = pos;
    if (!absl::ascii_isalpha(c)) return i;
    while (i > 0 && absl::ascii_isalpha(text_[i - 1])) --i;
    return i;
  }

  // The slot for a value just scanned: the root, the next array element or
  // the value of the last key. Opens a frame for a container.
  JsonValue* NewValue(JsonValue::Kind kind) {
    JsonValue* v = root_;
    if (!stack_.empty()) {
      JsonValue* parent = stack_.back().value;
      if (parent->kind == JsonValue::Kind::kArray) {
        v = &parent->elements.emplace_back();
      } else {
        v = &parent->members.back().value;
      }
    }
    v->kind = kind;
    if (kind == JsonValue::Kind::kObject || kind == JsonValue::Kind::kArray) {
      if (stack_.size() + 1 > kMaxJsonDepth) {
        Fail(fetched_ - 1,
             absl::StrCat("nesting deeper than ", kMaxJsonDepth, " levels"));
        return nullptr;
      }
      stack_.push_back(Frame{v, {}});
    }
    return v;
  }
  bool Close() {
    stack_.pop_back();
    return true;
  }

  const absl::string_view text_;
  size_t fetched_ = 0;  // characters the lexer has read, the space included
  JsonValue* root_ = nullptr;
  std::vector<Frame> stack_;  // open containers, outermost first
  absl::Status status_;
};

// nlohmann reports a syntax error at `position`, one past the character it
// stopped at, with a message like "[json.exception.parse_error.101] parse
// error at line 1, column 5: syntax error while parsing value - unexpected
// ']'; expected '[', '{', or a literal". Keeps the part after the column,
// and points at the offending token's first byte, or for a malformed string
// at the byte that began the malformed part.
bool TreeBuilder::parse_error(size_t position, const std::string& last_token,
                              const Json::exception& ex) {
  const size_t stop = std::min(position == 0 ? 0 : position - 1, text_.size());
  std::string what = ex.what();
  if (size_t i = what.find("] "); i != std::string::npos) what.erase(0, i + 2);
  if (absl::StartsWith(what, "parse error")) {
    if (size_t i = what.find(": "); i != std::string::npos) {
      what.erase(0, i + 2);
    }
  }
  // A lexer error quotes the whole token read so far, which can be most of
  // the header; say instead which character stopped it.
  const std::string last_read = absl::StrCat("; last read: '", last_token, "'");
  const size_t lexer_error = what.find(last_read);
  if (lexer_error == std::string::npos) return Fail(TokenStart(stop), what);
  size_t offset = stop;
  std::string found = absl::StrCat("; found ", Found(stop));
  if (absl::StrContains(what, "invalid literal")) {
    // "nul," stops at the ',': back up to the literal's first letter.
    while (offset > 0 && absl::ascii_isalpha(text_[offset - 1])) --offset;
    found = absl::StrCat("; found ", Found(offset));
  } else if (absl::StrContains(what, "invalid number")) {
    offset = NumberStart(stop);  // "1e:" stops at the ':'
  } else if (absl::StrContains(what, "missing closing quote")) {
    offset = OpeningQuote(stop);
  } else if (absl::StrContains(what, "UTF-8")) {
    // Back up to the lead byte of the sequence that turned out malformed.
    for (size_t i = 1; i <= 3 && i <= stop; ++i) {
      const unsigned char b = static_cast<unsigned char>(text_[stop - i]);
      if (b < 0x80) break;
      if (b >= 0xC0) {
        if (Utf8SequenceLength(text_, stop - i) == 0) offset = stop - i;
        break;
      }
    }
  } else if (absl::StrContains(what, "after backslash")) {
    offset = stop - 1;
  } else if (absl::StrContains(what, "surrogate")) {
    // The \u escape nlohmann rejected, or for a bad low surrogate the high
    // one before it.
    offset = std::min(text_.rfind('\\', stop), stop);
    if (offset >= 6 && text_.substr(offset - 6, 2) == "\\u" &&
        absl::ascii_tolower(text_[offset - 4]) == 'd' &&
        absl::string_view("89abAB").find(text_[offset - 3]) !=
            absl::string_view::npos) {
      offset -= 6;
    }
    found.clear();
  }
  what.replace(lexer_error, last_read.size(), found);
  return Fail(offset, what);
}

}  // namespace

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

absl::Status ParseJsonTree(absl::string_view text, JsonValue* root) {
  return TreeBuilder(text).Parse(root);
}

}  // namespace duet::common::internal
