#include "common/model/model_quantizer.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/format/safetensors.h"
#include "common/model/internal/weight_file_writer.h"
#include "common/model/mlp_quantizer.h"
#include "common/model/model.h"
#include "common/model/model_config.h"

namespace duet::common {
namespace {

using duet::v1::ModelConfig;

absl::Status AppendInt8Tensor(SafetensorsWriter* w, const Int8MlpParams& int8,
                              const std::string& name) {
  // user_top_int8.<i>.<field>
  constexpr size_t kPrefix = sizeof("user_top_int8.") - 1;
  const size_t dot = name.find('.', kPrefix);
  const size_t i = std::stoul(name.substr(kPrefix, dot - kPrefix));
  const std::string field = name.substr(dot + 1);
  const Int8MlpParams::Layer& layer = int8.layers.at(i);
  if (field == "weight") {
    return w->Append(layer.weight.data(), layer.weight.size());
  }
  if (field == "weight_scale") {
    return w->Append(layer.weight_scale.data(),
                     layer.weight_scale.size() * sizeof(float));
  }
  if (field == "bias") {
    return w->Append(layer.bias.data(), layer.bias.size() * sizeof(float));
  }
  return w->Append(&layer.input_scale, sizeof(float));
}

}  // namespace

absl::Status WriteUserTopInt8(const std::string& dir, const Int8MlpParams& int8,
                              int64_t calibration_samples,
                              ModelConfig* config) {
  if (int8.arithmetic != Int8Arithmetic::kFull) {
    return absl::InvalidArgumentError(
        "a model directory stores the int8 user top MLP in full arithmetic");
  }
  auto* q = config->mutable_user_top_int8();
  q->set_calibration_samples(static_cast<int32_t>(calibration_samples));
  q->set_weight_scheme("per-output-channel symmetric int8");
  q->set_activation_scheme(
      "per-tensor, calibrated max; s8 first layer, u8 after");
  duet::v1::WeightFile* entry = internal::FileEntry(config, kEdgeInt8File);
  ASSIGN_OR_RETURN(const internal::WrittenFile written,
                   internal::WriteWeightFile(
                       *config, dir, kEdgeInt8File,
                       [&](SafetensorsWriter* w, const TensorSpec& spec) {
                         return AppendInt8Tensor(w, int8, spec.name);
                       }));
  entry->set_sha256(written.sha256);
  entry->set_size_bytes(static_cast<int64_t>(written.size));
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> QuantizeModelDir(
    const std::string& dir, const std::string& calibration_path,
    std::ostream* log) {
  const auto start = std::chrono::steady_clock::now();
  LoadOptions lo;
  lo.parts.edge = true;
  lo.parts.user_top_int8 = false;
  lo.parts.cloud = false;
  lo.parts.user_tables = false;
  ASSIGN_OR_RETURN(const std::unique_ptr<Model> model, Model::Load(dir, lo));
  ModelConfig config = model->config();
  if (Int8TensorFile(config) == kEdgeFile) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, ": ", ModelLabel(config),
        " keeps its int8 user top MLP in edge.safetensors (written by an "
        "older duet-model gen); regenerate it, or export the fp32 model "
        "again, to quantize"));
  }
  const int in = model->dims().user_top_in;
  ASSIGN_OR_RETURN(const auto calib, SafetensorsFile::Open(calibration_path));
  const TensorInfo* info = calib->Find(kCalibrationTensor);
  if (info == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(calibration_path, " has no tensor '", kCalibrationTensor,
                     "' (F32 [n, ", in, "]: user top MLP inputs)"));
  }
  if (info->dtype != DType::kF32 || info->shape.size() != 2 ||
      info->shape[1] != in || info->shape[0] < 1) {
    std::string shape;
    for (int64_t d : info->shape)
      absl::StrAppend(&shape, shape.empty() ? "" : ",", d);
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: tensor '%s' is %s [%s], expected F32 [n >= 1, %d] (the user top "
        "MLP's input width of %s)",
        calibration_path, kCalibrationTensor, DTypeName(info->dtype), shape, in,
        ModelLabel(config)));
  }
  const int64_t n = info->shape[0];
  const float* rows = static_cast<const float*>(calib->data(*info));
  for (int64_t i = 0; i < n * in; ++i) {
    if (!std::isfinite(rows[i])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: %s[%d][%d] is %f; calibration inputs must be finite",
          calibration_path, kCalibrationTensor, i / in, i % in, rows[i]));
    }
  }
  const Int8MlpParams int8 =
      QuantizeMlp(model->user_top_layers(), rows, n, Int8Arithmetic::kFull);
  RETURN_IF_ERROR(WriteUserTopInt8(dir, int8, n, &config));
  config.set_signature(ComputeSignature(config));
  RETURN_IF_ERROR(WriteConfig(dir + "/" + kConfigFile, config));
  if (log != nullptr) {
    *log << absl::StrFormat(
                "quantized the user top MLP of %s on %d calibration rows "
                "into %s/%s in %.2f s",
                ModelLabel(config), n, dir, kEdgeInt8File,
                std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                              start)
                    .count())
         << std::endl;
  }
  return config;
}

}  // namespace duet::common
