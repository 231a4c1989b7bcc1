// Dotted-path lookup in a parsed JSON document ("queries.by_code.OK"), for
// the tests that read duet-loadgen's --json summary.
#ifndef DUET_TESTS_JSON_PATH_H_
#define DUET_TESTS_JSON_PATH_H_

#include <string>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace duet::test {

// The value at `path` (object keys separated by '.'), or nullptr when a key
// is missing or a step is not an object.
inline const nlohmann::json* FindPath(const nlohmann::json& doc,
                                      absl::string_view path) {
  const nlohmann::json* v = &doc;
  for (absl::string_view key : absl::StrSplit(path, '.')) {
    if (!v->is_object()) return nullptr;
    auto it = v->find(std::string(key));
    if (it == v->end()) return nullptr;
    v = &*it;
  }
  return v;
}

// The number at `path`, or -1 when it is missing or not a number.
inline double NumberAt(const nlohmann::json& doc, absl::string_view path) {
  const nlohmann::json* v = FindPath(doc, path);
  return v != nullptr && v->is_number() ? v->get<double>() : -1;
}

}  // namespace duet::test

#endif  // DUET_TESTS_JSON_PATH_H_
