// The JSON of a safetensors header as a tree, read with nlohmann-json's SAX
// parser under rules stricter than JSON's (not a public API).
#ifndef DUET_COMMON_FORMAT_INTERNAL_JSON_TREE_H_
#define DUET_COMMON_FORMAT_INTERNAL_JSON_TREE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace duet::common::internal {

// The subset of JSON a safetensors header uses: objects (members in document
// order), arrays, strings and non-negative 64-bit integers.
struct JsonMember;

struct JsonValue {
  enum class Kind { kObject, kArray, kString, kInteger };
  Kind kind = Kind::kObject;
  std::string str;
  uint64_t integer = 0;
  std::vector<JsonMember> members;  // kObject, in document order
  std::vector<JsonValue> elements;  // kArray
};

struct JsonMember {
  std::string key;
  JsonValue value;
};

const char* KindName(JsonValue::Kind kind);  // "an object", "an integer", ...

// Parses `text` into `root`. Rejects, beyond invalid JSON, literals
// (true/false/null), negative and non-integer numbers, integers beyond 64
// bits, duplicate keys, nesting deeper than 8 levels, a byte order mark and
// NUL bytes. DATA_LOSS "invalid JSON header at byte N (file offset N+8):
// what" on failure, N being where the offending token or character starts.
absl::Status ParseJsonTree(absl::string_view text, JsonValue* root);

}  // namespace duet::common::internal

#endif  // DUET_COMMON_FORMAT_INTERNAL_JSON_TREE_H_
