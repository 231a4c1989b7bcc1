#include "common/format/internal/header_parser.h"

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/format/internal/json_tree.h"
#include "common/format/internal/safetensors_util.h"

namespace duet::common::internal {
namespace {

// Converts one tensor entry of the header; the caller prepends the path.
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

}  // namespace

absl::Status ParseHeader(absl::string_view header,
                         std::vector<TensorInfo>* tensors,
                         std::map<std::string, std::string>* metadata) {
  JsonValue root;
  if (absl::Status s = ParseJsonTree(header, &root); !s.ok()) return s;
  if (root.kind != JsonValue::Kind::kObject) {
    return absl::DataLossError(absl::StrCat(
        "header must be a JSON object, found ", KindName(root.kind)));
  }
  for (const JsonMember& member : root.members) {
    if (member.key == kMetadataKey) {
      if (absl::Status s = ParseMetadata(member.value, metadata); !s.ok()) {
        return s;
      }
      continue;
    }
    TensorInfo info;
    if (absl::Status s = ParseTensorEntry(member, &info); !s.ok()) return s;
    tensors->push_back(std::move(info));
  }
  return absl::OkStatus();
}

}  // namespace duet::common::internal
