#include "cloud/user_vector_checks.h"

#include <cmath>

#include "absl/strings/str_format.h"
#include "common/kernels/quantize.h"
#include "common/model/model_config.h"

namespace duet::cloud {

absl::Status ValidateUserVector(const duet::v1::UserVector& uv,
                                const common::Model& model) {
  const duet::v1::ModelConfig& c = model.config();
  if (uv.model_version() != c.version() ||
      uv.model_fingerprint() != model.fingerprint()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "user vector is for model %s v%d (signature %016x), this server runs "
        "%s",
        c.name(), uv.model_version(), uv.model_fingerprint(),
        common::ModelLabel(c)));
  }
  const bool has_int8 = !uv.int8_data().empty();
  const bool has_fp32 = uv.fp32_data_size() > 0;
  const int expected = model.dims().user_out;
  if (has_int8 == has_fp32) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "user_vector carries %s of int8_data and fp32_data, set exactly one "
        "(%d values for model %s)",
        has_int8 ? "both" : "neither", expected, common::ModelLabel(c)));
  }
  if (has_fp32) {
    if (uv.fp32_data_size() != expected) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "user_vector.fp32_data has %d values, model %s expects %d",
          uv.fp32_data_size(), common::ModelLabel(c), expected));
    }
    for (int i = 0; i < expected; ++i) {
      if (!std::isfinite(uv.fp32_data(i))) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "user_vector.fp32_data[%d] is %f, values must be finite", i,
            uv.fp32_data(i)));
      }
    }
    return absl::OkStatus();
  }
  if (static_cast<int>(uv.int8_data().size()) != expected) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "user_vector.int8_data has %d values, model %s expects %d",
        uv.int8_data().size(), common::ModelLabel(c), expected));
  }
  if (!std::isfinite(uv.scale()) || uv.scale() <= 0 ||
      uv.scale() > common::kMaxAffineScale) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "user_vector.scale is %g, must be positive and at most %g (so every "
        "dequantized value is finite)",
        uv.scale(), common::kMaxAffineScale));
  }
  if (uv.zero_point() < -128 || uv.zero_point() > 127) {
    return absl::InvalidArgumentError(
        absl::StrFormat("user_vector.zero_point is %d, must be in [-128, 127]",
                        uv.zero_point()));
  }
  return absl::OkStatus();
}

}  // namespace duet::cloud
