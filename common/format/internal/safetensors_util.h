// Shared by the safetensors reader and writer (not a public API): the
// format's limits, byte-size arithmetic, UTF-8 validation and the pieces of
// error messages both sides print.
#ifndef DUET_COMMON_FORMAT_INTERNAL_SAFETENSORS_UTIL_H_
#define DUET_COMMON_FORMAT_INTERNAL_SAFETENSORS_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/format/safetensors.h"

namespace duet::common::internal {

// Same cap as the reference Rust implementation: a header this large is
// almost certainly a corrupt length field, and parsing it would cost seconds.
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;
inline constexpr absl::string_view kMetadataKey = "__metadata__";
inline constexpr DType kAllDTypes[] = {DType::kF32, DType::kF16, DType::kI8,
                                       DType::kU8,  DType::kI32, DType::kI64};

bool ParseDType(absl::string_view name, DType* dtype);
std::string ShapeString(absl::Span<const int64_t> shape);  // "[96,1600]"
std::string OffsetsString(const TensorInfo& t);            // "[0, 8]"
// Byte size of a tensor, or false if it does not fit in 64 bits.
bool TensorByteSize(absl::Span<const int64_t> shape, DType dtype,
                    uint64_t* nbytes);
// Length of the well-formed UTF-8 sequence starting at s[pos], or 0 if it is
// malformed (overlong, surrogate, beyond U+10FFFF, or truncated).
size_t Utf8SequenceLength(absl::string_view s, size_t pos);
bool IsValidUtf8(absl::string_view s);

}  // namespace duet::common::internal

#endif  // DUET_COMMON_FORMAT_INTERNAL_SAFETENSORS_UTIL_H_
