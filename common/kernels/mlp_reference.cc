#include "common/kernels/mlp_reference.h"

#include <algorithm>
#include <cmath>

namespace duet::common {
namespace {

template <typename T>
T Activate(Activation a, T x) {
  switch (a) {
    case Activation::kRelu:
      return x > T{0} ? x : T{0};
    case Activation::kSigmoid:
      return T{1} / (T{1} + std::exp(-x));
    case Activation::kNone:
      break;
  }
  return x;
}

// The code range of a layer's input, written out from int8_arithmetic.h's
// contract (not taken from LayerRanges, which the fast path uses).
struct CodeRange {
  int64_t lo, hi, zero_point;
};
CodeRange InputCodes(Int8Arithmetic a, bool first_layer) {
  // u8 codes; the first layer's signed input sits around the middle.
  if (a == Int8Arithmetic::kReducedActivations) {
    return {0, 127, first_layer ? 64 : 0};
  }
  return {0, 255, first_layer ? 128 : 0};
}

// round_half_even(v) (the default rounding mode) saturated to [lo, hi].
int64_t RoundClamp(double v, int64_t lo, int64_t hi) {
  const double r = std::nearbyint(v);
  if (std::isnan(r)) return hi;
  return static_cast<int64_t>(
      std::clamp(r, static_cast<double>(lo), static_cast<double>(hi)));
}

}  // namespace

void Fp32MlpRef(const std::vector<LinearLayer>& layers,
                Activation last_activation, const float* in, int64_t m,
                float* out) {
  std::vector<float> cur(in, in + m * layers.front().in), next;
  for (size_t l = 0; l < layers.size(); ++l) {
    const LinearLayer& layer = layers[l];
    const bool last = l + 1 == layers.size();
    next.assign(m * layer.out, 0.0f);
    for (int64_t r = 0; r < m; ++r) {
      const float* x = cur.data() + r * layer.in;
      for (int o = 0; o < layer.out; ++o) {
        const float* w = layer.weight + int64_t{o} * layer.in;
        float acc = layer.bias != nullptr ? layer.bias[o] : 0.0f;
        for (int i = 0; i < layer.in; ++i) acc += w[i] * x[i];
        next[r * layer.out + o] =
            Activate(last ? last_activation : Activation::kRelu, acc);
      }
    }
    cur.swap(next);
  }
  std::copy(cur.begin(), cur.end(), out);
}

void Int8MlpRef(const std::vector<Int8LinearLayer>& layers,
                Int8Arithmetic arithmetic, Activation last_activation,
                const float* in, int64_t m, float* out) {
  const Int8LinearLayer& first = layers.front();
  const CodeRange in0 = InputCodes(arithmetic, true);
  // Codes of the current layer's input, and its zero point.
  std::vector<int64_t> q(m * first.in), next;
  for (int64_t i = 0; i < m * first.in; ++i) {
    // x / s in float, as a float32 input divided by a float32 scale is.
    const float ratio = in[i] / first.input_scale;
    q[i] =
        RoundClamp(static_cast<double>(ratio) + in0.zero_point, in0.lo, in0.hi);
  }
  int64_t zero_point = in0.zero_point;
  for (size_t l = 0; l < layers.size(); ++l) {
    const Int8LinearLayer& layer = layers[l];
    const bool last = l + 1 == layers.size();
    const CodeRange out_codes = InputCodes(arithmetic, false);
    next.assign(last ? 0 : m * layer.out, 0);
    for (int64_t r = 0; r < m; ++r) {
      const int64_t* x = q.data() + r * layer.in;
      for (int o = 0; o < layer.out; ++o) {
        const int8_t* w = layer.weight + int64_t{o} * layer.in;
        int64_t acc = 0;
        for (int i = 0; i < layer.in; ++i) acc += (x[i] - zero_point) * w[i];
        const double bias = layer.bias != nullptr ? layer.bias[o] : 0.0;
        const double v = static_cast<double>(acc) * layer.input_scale *
                             static_cast<double>(layer.weight_scale[o]) +
                         bias;
        if (last) {
          out[r * layer.out + o] =
              static_cast<float>(Activate(last_activation, v));
        } else {
          next[r * layer.out + o] = RoundClamp(v / layers[l + 1].input_scale,
                                               out_codes.lo, out_codes.hi);
        }
      }
    }
    if (!last) {
      q.swap(next);
      zero_point = out_codes.zero_point;
    }
  }
}

}  // namespace duet::common
