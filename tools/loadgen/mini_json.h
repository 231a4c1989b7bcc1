// The loadgen's --json output as a tree, for the multi-process tests under
// tests/ that read it: parsing is nlohmann-json's; this header only keeps
// their JsonValue / Find("a.b.c") interface. New code should use
// nlohmann::json directly (as tools/loadgen/summary_test.cc does).
#ifndef DUET_TOOLS_LOADGEN_MINI_JSON_H_
#define DUET_TOOLS_LOADGEN_MINI_JSON_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

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
  // INVALID_ARGUMENT with nlohmann's message (byte offset included) for
  // text that is not one JSON value.
  static absl::StatusOr<JsonValue> Parse(const std::string& text) {
    nlohmann::json json;
    try {
      json = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      return absl::InvalidArgumentError(absl::StrCat("JSON: ", e.what()));
    }
    return Convert(json);
  }

 private:
  static JsonValue Convert(const nlohmann::json& json) {
    JsonValue v;
    switch (json.type()) {
      case nlohmann::json::value_t::boolean:
        v.kind = JsonValue::kBool;
        v.boolean = json.get<bool>();
        break;
      case nlohmann::json::value_t::number_integer:
      case nlohmann::json::value_t::number_unsigned:
      case nlohmann::json::value_t::number_float:
        v.kind = JsonValue::kNumber;
        v.number = json.get<double>();
        break;
      case nlohmann::json::value_t::string:
        v.kind = JsonValue::kString;
        v.string = json.get<std::string>();
        break;
      case nlohmann::json::value_t::array:
        v.kind = JsonValue::kArray;
        for (const auto& e : json) v.array.push_back(Convert(e));
        break;
      case nlohmann::json::value_t::object:
        v.kind = JsonValue::kObject;
        for (const auto& [key, e] : json.items()) v.object[key] = Convert(e);
        break;
      default:
        break;  // null (and binary, which JSON text cannot produce)
    }
    return v;
  }
};

}  // namespace duet::loadgen

#endif  // DUET_TOOLS_LOADGEN_MINI_JSON_H_
