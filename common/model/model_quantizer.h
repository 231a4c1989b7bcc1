// Post-training static int8 quantization of a model directory's user top MLP
// (`duet-model quantize`, DESIGN.md §2 "Models people trained"): the fp32
// edge weights are read, never rewritten; the int8 form goes to
// edge_int8.safetensors (format: model.proto, Int8QuantizationInfo).
#ifndef DUET_COMMON_MODEL_MODEL_QUANTIZER_H_
#define DUET_COMMON_MODEL_MODEL_QUANTIZER_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "common/kernels/mlp.h"
#include "duet/v1/model.pb.h"

namespace duet::common {

// The calibration file: a safetensors file with one F32 tensor of this name,
// shape [n, user_top_in]: recorded user top MLP inputs [z_s, z_c, p_1..p_Tu].
inline constexpr char kCalibrationTensor[] = "user_top_inputs";

// Writes dir/edge_int8.safetensors from `int8` (the user top MLP in full
// 8-bit arithmetic) and records it in `config`: its files entry (added or
// replaced) and user_top_int8 (with `calibration_samples`). The caller
// re-signs and writes model.pbtxt.
absl::Status WriteUserTopInt8(const std::string& dir, const Int8MlpParams& int8,
                              int64_t calibration_samples,
                              duet::v1::ModelConfig* config);

// Quantizes the fp32 user top MLP of the model in `dir` on the rows of
// `calibration_path`, writes edge_int8.safetensors, re-signs the model and
// rewrites model.pbtxt last: a crash before that leaves an fp32 model as it
// was (re-quantizing a quantized model replaces edge_int8.safetensors first;
// running the command again completes it). Run it before a model is
// published, not on a directory a server is reloading from. Returns the new
// config. INVALID_ARGUMENT for a calibration file of the wrong shape or with
// non-finite values; FAILED_PRECONDITION for a model whose int8 tensors live
// in edge.safetensors (written by an older generator). Progress to `log`.
absl::StatusOr<duet::v1::ModelConfig> QuantizeModelDir(
    const std::string& dir, const std::string& calibration_path,
    std::ostream* log);

}  // namespace duet::common

#endif  // DUET_COMMON_MODEL_MODEL_QUANTIZER_H_
