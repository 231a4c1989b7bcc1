// The safetensors header's JSON, read with nlohmann-json's SAX parser under
// the format's rules (not a public API; SafetensorsFile::Open calls it).
#ifndef DUET_COMMON_FORMAT_INTERNAL_HEADER_PARSER_H_
#define DUET_COMMON_FORMAT_INTERNAL_HEADER_PARSER_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/format/safetensors.h"

namespace duet::common::internal {

// Parses `header` (the bytes after the length field) into its tensors, in
// header order, and its __metadata__. Stricter than JSON: no literals,
// negative or non-integer numbers, duplicate keys, nesting beyond 8 levels,
// or NUL bytes. Checks each tensor alone (dtype, shape x dtype size ==
// data_offsets span); the caller checks how the tensors tile the file.
// DATA_LOSS on failure; syntax errors give the header byte offset.
absl::Status ParseHeader(absl::string_view header,
                         std::vector<TensorInfo>* tensors,
                         std::map<std::string, std::string>* metadata);

}  // namespace duet::common::internal

#endif  // DUET_COMMON_FORMAT_INTERNAL_HEADER_PARSER_H_
