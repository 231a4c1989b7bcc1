#include "edge/user_model.h"

#include <cmath>
#include <cstring>
#include <string>

#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/model/model_config.h"

namespace duet::edge {

absl::StatusOr<Precision> ParsePrecision(const std::string& name) {
  if (name == "int8") return Precision::kInt8;
  if (name == "fp32") return Precision::kFp32;
  return absl::InvalidArgumentError(
      absl::StrFormat("precision '%s' is not one of int8, fp32", name));
}

const char* PrecisionName(Precision p) {
  return p == Precision::kInt8 ? "int8" : "fp32";
}

absl::StatusOr<std::unique_ptr<UserModel>> UserModel::Create(
    const common::Model* model, const Options& options) {
  if (model == nullptr || !model->has_edge()) {
    return absl::FailedPreconditionError(
        "the user model needs the edge part of the model (edge.safetensors)");
  }
  if (options.precision == Precision::kInt8 && !model->has_user_top_int8()) {
    return absl::FailedPreconditionError(
        "an int8 user model needs the int8 user top MLP, which was not loaded "
        "(LoadOptions.parts.user_top_int8)");
  }
  return std::unique_ptr<UserModel>(new UserModel(model, options));
}

namespace {

absl::Status OverflowError(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrFormat(
      "the user vector overflows float32 (%s): the request's features are "
      "far outside the range the model was trained on",
      what));
}

}  // namespace

absl::Status UserModel::Run(const float* z_s, const float* c,
                            const float* pooled, Output* out) const {
  const common::ModelDims& d = model_->dims();
  // Grow-only per-thread input buffer: no allocation after warm-up.
  thread_local std::vector<float> x;
  if (x.size() < static_cast<size_t>(d.user_top_in)) x.resize(d.user_top_in);
  std::memcpy(x.data(), z_s, d.static_out * sizeof(float));
  if (d.dynamic_out > 0) {
    RETURN_IF_ERROR(common::RunOrIdentity(
        model_->dynamic_bottom(), c, 1, d.dynamic_in, x.data() + d.static_out));
  }
  std::memcpy(x.data() + d.static_out + d.dynamic_out, pooled,
              d.pooled * sizeof(float));
  out->u.resize(d.user_out);
  if (options_.precision == Precision::kInt8) {
    RETURN_IF_ERROR(model_->user_top_int8().Run(x.data(), 1, out->u.data()));
  } else {
    RETURN_IF_ERROR(model_->user_top().Run(x.data(), 1, out->u.data()));
  }
  // Finite features far beyond the model's range can overflow the fp32 MLPs
  // (the int8 one saturates instead). A finite u whose range is within 1/256
  // of float32's maximum gets an int8 scale above common::kMaxAffineScale,
  // which the cloud refuses with its own INVALID_ARGUMENT.
  for (int i = 0; i < d.user_out; ++i) {
    if (!std::isfinite(out->u[i])) {
      return OverflowError(absl::StrFormat("u[%d] is %f", i, out->u[i]));
    }
  }
  if (options_.wire == Precision::kInt8) {
    out->q.resize(d.user_out);
    out->params =
        common::QuantizeAffineInt8(out->u.data(), d.user_out, out->q.data());
  }
  return absl::OkStatus();
}

void UserModel::ToProto(const Output& out, uint64_t query_id,
                        duet::v1::UserVector* proto) const {
  proto->set_query_id(query_id);
  proto->set_model_version(model_->config().version());
  proto->set_model_fingerprint(model_->fingerprint());
  if (options_.wire == Precision::kInt8) {
    proto->set_int8_data(reinterpret_cast<const char*>(out.q.data()),
                         out.q.size());
    proto->set_scale(out.params.scale);
    proto->set_zero_point(out.params.zero_point);
    proto->clear_fp32_data();
  } else {
    proto->clear_int8_data();
    proto->clear_scale();
    proto->clear_zero_point();
    proto->mutable_fp32_data()->Assign(out.u.begin(), out.u.end());
  }
}

}  // namespace duet::edge
