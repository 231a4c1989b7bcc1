// A minimal JSON reader for tests of the loadgen's --json output (no JSON
// library is available): parses the full grammar into a tree of
// JsonValue, reporting the first syntax error. Not for production input.
#ifndef DUET_TOOLS_LOADGEN_MINI_JSON_H_
#define DUET_TOOLS_LOADGEN_MINI_JSON_H_

#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace duet::loadgen {

struct JsonValue {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = kNull;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<JsonValue> array;
  std::map<std::string, JsonValue> object;

  bool Has(const std::string& key) const { return object.count(key) > 0; }
  // Follows a dotted path of object keys ("queries.by_code.OK"); nullptr
  // when a key is missing.
  const JsonValue* Find(const std::string& path) const {
    const JsonValue* v = this;
    for (const auto& key : absl::StrSplit(path, '.')) {
      if (v->kind != kObject) return nullptr;
      auto it = v->object.find(std::string(key));
      if (it == v->object.end()) return nullptr;
      v = &it->second;
    }
    return v;
  }
};

class MiniJsonParser {
 public:
  static absl::StatusOr<JsonValue> Parse(const std::string& text) {
    MiniJsonParser p(text);
    JsonValue v;
    if (!p.Value(&v)) return p.Error();
    p.Space();
    if (p.pos_ != text.size()) {
      p.error_ = "trailing characters";
      return p.Error();
    }
    return v;
  }

 private:
  explicit MiniJsonParser(const std::string& t) : t_(t) {}

  absl::Status Error() const {
    return absl::InvalidArgumentError(
        absl::StrCat("JSON error at offset ", pos_, ": ", error_));
  }
  void Space() {
    while (pos_ < t_.size() && (t_[pos_] == ' ' || t_[pos_] == '\n' ||
                                t_[pos_] == '\t' || t_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool Eat(char c) {
    Space();
    if (pos_ < t_.size() && t_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool Fail(const std::string& e) {
    error_ = e;
    return false;
  }
  bool Literal(const char* word) {
    const std::string w(word);
    if (t_.compare(pos_, w.size(), w) != 0) return Fail("bad literal");
    pos_ += w.size();
    return true;
  }
  bool String(std::string* out) {
    if (!Eat('"')) return Fail("expected string");
    while (pos_ < t_.size() && t_[pos_] != '"') {
      char c = t_[pos_++];
      if (static_cast<unsigned char>(c) < 0x20) {
        return Fail("control character in string");
      }
      if (c == '\\') {
        if (pos_ >= t_.size()) return Fail("bad escape");
        const char e = t_[pos_++];
        switch (e) {
          case 'n':
            c = '\n';
            break;
          case 't':
            c = '\t';
            break;
          case 'r':
            c = '\r';
            break;
          case 'b':
            c = '\b';
            break;
          case 'f':
            c = '\f';
            break;
          case 'u':
            if (pos_ + 4 > t_.size()) return Fail("bad \\u escape");
            c = static_cast<char>(
                std::strtol(t_.substr(pos_, 4).c_str(), nullptr, 16));
            pos_ += 4;
            break;
          case '"':
          case '\\':
          case '/':
            c = e;
            break;
          default:
            return Fail("bad escape");
        }
      }
      out->push_back(c);
    }
    if (pos_ >= t_.size()) return Fail("unterminated string");
    ++pos_;
    return true;
  }
  bool Value(JsonValue* v) {
    Space();
    if (pos_ >= t_.size()) return Fail("unexpected end");
    const char c = t_[pos_];
    if (c == '{') {
      ++pos_;
      v->kind = JsonValue::kObject;
      if (Eat('}')) return true;
      do {
        std::string key;
        Space();
        if (!String(&key)) return false;
        if (!Eat(':')) return Fail("expected ':'");
        if (v->object.count(key)) return Fail("duplicate key " + key);
        if (!Value(&v->object[key])) return false;
      } while (Eat(','));
      return Eat('}') || Fail("expected '}'");
    }
    if (c == '[') {
      ++pos_;
      v->kind = JsonValue::kArray;
      if (Eat(']')) return true;
      do {
        v->array.emplace_back();
        if (!Value(&v->array.back())) return false;
      } while (Eat(','));
      return Eat(']') || Fail("expected ']'");
    }
    if (c == '"') {
      v->kind = JsonValue::kString;
      return String(&v->string);
    }
    if (c == 't' || c == 'f') {
      v->kind = JsonValue::kBool;
      v->boolean = c == 't';
      return Literal(c == 't' ? "true" : "false");
    }
    if (c == 'n') return Literal("null");
    const char* begin = t_.c_str() + pos_;
    char* end = nullptr;
    v->kind = JsonValue::kNumber;
    v->number = std::strtod(begin, &end);
    if (end == begin) return Fail("expected a value");
    pos_ += end - begin;
    return true;
  }

  const std::string& t_;
  size_t pos_ = 0;
  std::string error_;
};

}  // namespace duet::loadgen

#endif  // DUET_TOOLS_LOADGEN_MINI_JSON_H_
