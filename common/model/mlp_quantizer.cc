#include "common/model/mlp_quantizer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/kernels/mlp_reference.h"

namespace duet::common {
namespace {

// Levels of a layer's input that max |x| maps onto: signed inputs use the
// shorter side around the zero point, post-ReLU inputs [0, input_max].
float InputLevels(Int8Arithmetic a, bool first_layer) {
  const Int8LayerRanges r = LayerRanges(a, first_layer);
  const int32_t z = r.input_zero_point;
  return static_cast<float>(r.input_min < z
                                ? std::min(r.input_max - z, z - r.input_min)
                                : r.input_max);
}

float ScaleFor(float max_abs, float levels) {
  return max_abs > 0.0f && std::isfinite(max_abs) ? max_abs / levels : 1.0f;
}

void QuantizeWeights(const LinearLayer& src, int32_t weight_max,
                     Int8MlpParams::Layer* dst) {
  const float levels = static_cast<float>(weight_max);
  dst->weight.resize(int64_t{src.in} * src.out);
  dst->weight_scale.resize(src.out);
  for (int o = 0; o < src.out; ++o) {
    const float* w = src.weight + int64_t{o} * src.in;
    float w_max = 0.0f;
    for (int i = 0; i < src.in; ++i) w_max = std::max(w_max, std::fabs(w[i]));
    const float scale = ScaleFor(w_max, levels);
    dst->weight_scale[o] = scale;
    for (int i = 0; i < src.in; ++i) {
      const float c = std::clamp(std::nearbyint(w[i] / scale), -levels, levels);
      dst->weight[int64_t{o} * src.in + i] = static_cast<int8_t>(c);
    }
  }
}

}  // namespace

Int8MlpParams QuantizeMlp(const std::vector<LinearLayer>& layers,
                          const float* calib, int64_t calib_rows,
                          Int8Arithmetic arithmetic) {
  Int8MlpParams params;
  params.arithmetic = arithmetic;
  params.layers.resize(layers.size());
  std::vector<float> cur, next;
  if (!layers.empty() && calib != nullptr && calib_rows > 0) {
    cur.assign(calib, calib + calib_rows * layers.front().in);
  }
  for (size_t l = 0; l < layers.size(); ++l) {
    const LinearLayer& src = layers[l];
    Int8MlpParams::Layer& dst = params.layers[l];
    dst.in = src.in;
    dst.out = src.out;
    float max_abs = 0.0f;
    for (float v : cur) max_abs = std::max(max_abs, std::fabs(v));
    dst.input_scale = ScaleFor(max_abs, InputLevels(arithmetic, l == 0));
    QuantizeWeights(src, LayerRanges(arithmetic, l == 0).weight_max, &dst);
    dst.bias = src.bias != nullptr
                   ? std::vector<float>(src.bias, src.bias + src.out)
                   : std::vector<float>(src.out, 0.0f);
    if (l + 1 < layers.size() && !cur.empty()) {
      next.resize(calib_rows * src.out);
      Fp32MlpRef({src}, Activation::kRelu, cur.data(), calib_rows, next.data());
      cur.swap(next);
    }
  }
  return params;
}

absl::StatusOr<Int8MlpParams> RequantizeMlp(
    const std::vector<Int8LinearLayer>& full,
    const std::vector<LinearLayer>& layers, Int8Arithmetic target) {
  if (full.size() != layers.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("int8 stack has ", full.size(), " layers, its fp32 stack ",
                     layers.size()));
  }
  Int8MlpParams params;
  params.arithmetic = target;
  params.layers.resize(full.size());
  for (size_t l = 0; l < full.size(); ++l) {
    const Int8LinearLayer& src = full[l];
    if (src.in != layers[l].in || src.out != layers[l].out) {
      return absl::InvalidArgumentError(
          absl::StrCat("int8 layer ", l, " is ", src.in, "x", src.out,
                       ", its fp32 layer ", layers[l].in, "x", layers[l].out));
    }
    Int8MlpParams::Layer& dst = params.layers[l];
    dst.in = src.in;
    dst.out = src.out;
    const bool first = l == 0;
    const float range =
        src.input_scale * InputLevels(Int8Arithmetic::kFull, first);
    dst.input_scale = range / InputLevels(target, first);
    const int32_t weight_max = LayerRanges(target, first).weight_max;
    if (weight_max == LayerRanges(Int8Arithmetic::kFull, first).weight_max) {
      const int64_t n = int64_t{src.in} * src.out;
      dst.weight.assign(src.weight, src.weight + n);
      dst.weight_scale.assign(src.weight_scale, src.weight_scale + src.out);
    } else {
      QuantizeWeights(layers[l], weight_max, &dst);
    }
    dst.bias = src.bias != nullptr
                   ? std::vector<float>(src.bias, src.bias + src.out)
                   : std::vector<float>(src.out, 0.0f);
  }
  return params;
}

}  // namespace duet::common
