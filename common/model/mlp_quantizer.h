// Post-training static quantization of an fp32 MLP into Int8MlpParams for an
// Int8Arithmetic (int8_arithmetic.h), and the re-quantization of a stored
// full-arithmetic stack for a narrower one.
#ifndef DUET_COMMON_MODEL_MLP_QUANTIZER_H_
#define DUET_COMMON_MODEL_MLP_QUANTIZER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/kernels/int8_arithmetic.h"
#include "common/kernels/mlp.h"

namespace duet::common {

// Weights: per output channel, symmetric, scale = max |w| / weight_max.
// Activations: per tensor, from the max |activation| seen on `calib_rows`
// calibration inputs through the fp32 reference, over the arithmetic's
// levels (first layer: 127 signed, or 63 around the zero point; later: 255,
// or 127 for reduced activations).
Int8MlpParams QuantizeMlp(const std::vector<LinearLayer>& layers,
                          const float* calib, int64_t calib_rows,
                          Int8Arithmetic arithmetic);

// `full` (full 8-bit arithmetic, as a model directory stores it) for
// `target`: the calibrated activation ranges (input_scale x levels) are kept
// and re-divided over the target's levels; reduced weights are re-derived
// from the fp32 `layers` (one rounding, not two). INVALID_ARGUMENT when the
// two stacks' shapes differ.
absl::StatusOr<Int8MlpParams> RequantizeMlp(
    const std::vector<Int8LinearLayer>& full,
    const std::vector<LinearLayer>& layers, Int8Arithmetic target);

}  // namespace duet::common

#endif  // DUET_COMMON_MODEL_MLP_QUANTIZER_H_
