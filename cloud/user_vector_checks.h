// The checks of a user vector against the model the cloud serves: model
// version and signature (FAILED_PRECONDITION: the device runs another
// model), then exactly one of int8_data / fp32_data with the user top MLP's
// width, finite values, and a quantization whose every dequantized value is
// finite (INVALID_ARGUMENT naming the field).
#ifndef DUET_CLOUD_USER_VECTOR_CHECKS_H_
#define DUET_CLOUD_USER_VECTOR_CHECKS_H_

#include "absl/status/status.h"
#include "common/model/model.h"
#include "duet/v1/scoring.pb.h"

namespace duet::cloud {

absl::Status ValidateUserVector(const duet::v1::UserVector& uv,
                                const common::Model& model);

}  // namespace duet::cloud

#endif  // DUET_CLOUD_USER_VECTOR_CHECKS_H_
