// Int8Mlp: derives each int8 layer's oneDNN form (folded zero point, output
// scales, clip), quantizes the fp32 input, and runs the shared matmul stack.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/kernels/int8_arithmetic.h"
#include "common/kernels/internal/matmul_stack.h"
#include "common/kernels/internal/mlp_shared.h"
#include "common/kernels/internal/onednn.h"
#include "common/kernels/mlp.h"
#include "dnnl.hpp"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#endif

namespace duet::common {
namespace {

using internal::CheckRows;
using internal::DnnlError;
using internal::GetThreadState;
using internal::LastPostOp;
using internal::LayerSpec;
using internal::MatmulStack;
using internal::MlpShape;
using internal::PinOneDnnToCallingThread;
using internal::ThreadState;
using internal::ValidateShapes;
using Dt = dnnl::memory::data_type;

// q = saturate(round_half_even(x / scale) + zero_point) to [lo, hi], a range
// within [0, 255] (u8 codes).
inline uint8_t QuantizeInputOne(float x, float scale, float zero_point,
                                float lo, float hi) {
  float r = std::nearbyint(x / scale) + zero_point;
  r = r < hi ? r : hi;  // NaN -> hi, as the vector paths below
  r = r > lo ? r : lo;
  return static_cast<uint8_t>(static_cast<int32_t>(r));
}

void QuantizeInput(const float* x, int64_t n, float scale,
                   const Int8LayerRanges& r, uint8_t* q) {
  const float zp = static_cast<float>(r.input_zero_point);
  const float lo = static_cast<float>(r.input_min);
  const float hi = static_cast<float>(r.input_max);
  int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 vscale = _mm256_set1_ps(scale);
  const __m256 vzp = _mm256_set1_ps(zp);
  const __m256 vmax = _mm256_set1_ps(hi);
  const __m256 vmin = _mm256_set1_ps(lo);
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + i), vscale);
    v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm256_max_ps(_mm256_min_ps(_mm256_add_ps(v, vzp), vmax), vmin);
    const __m256i i32 = _mm256_cvtps_epi32(v);
    const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32),
                                        _mm256_extracti128_si256(i32, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i),
                     _mm_packus_epi16(i16, i16));
  }
#elif defined(__aarch64__) && defined(__ARM_NEON)
  const float32x4_t vscale = vdupq_n_f32(scale);
  const float32x4_t vzp = vdupq_n_f32(zp);
  const float32x4_t vmax = vdupq_n_f32(hi);
  const float32x4_t vmin = vdupq_n_f32(lo);
  for (; i + 8 <= n; i += 8) {
    int32x4_t v[2];
    for (int j = 0; j < 2; ++j) {
      float32x4_t t = vaddq_f32(
          vrndnq_f32(vdivq_f32(vld1q_f32(x + i + 4 * j), vscale)), vzp);
      // Compare-and-select: NaN takes the upper bound (fmin would keep it).
      t = vbslq_f32(vcltq_f32(t, vmax), t, vmax);
      t = vbslq_f32(vcgtq_f32(t, vmin), t, vmin);
      v[j] = vcvtq_s32_f32(t);
    }
    vst1_u8(q + i,
            vqmovun_s16(vcombine_s16(vqmovn_s32(v[0]), vqmovn_s32(v[1]))));
  }
#endif
  for (; i < n; ++i) q[i] = QuantizeInputOne(x[i], scale, zp, lo, hi);
}

// Per layer, with alpha[o] = input_scale * weight_scale[o] and the input's
// zero point z (sum over i of (q[i] - z) w[o][i] = acc - z * rowsum[o]):
//   hidden: q_next = saturate(round((acc + c[o]) * alpha[o] / s'))
//           (ReLU is implied by the saturation at 0; s' = next input scale)
//   last:   y = act((acc + c[o]) * alpha[o])
// where c[o] = bias[o] / alpha[o] - z * rowsum[o]. A zero weight scale (an
// all-zero row) becomes scale 1 with zero codes, so the bias never has to
// be divided by zero.
struct Int8LayerMath {
  std::vector<int8_t> weight;
  std::vector<float> output_scale;
  std::vector<float> bias;
};

Int8LayerMath DeriveInt8Layer(const Int8LinearLayer& l, int32_t zero_point,
                              float next_input_scale) {
  Int8LayerMath m;
  m.weight.assign(l.weight, l.weight + int64_t{l.in} * l.out);
  m.output_scale.resize(l.out);
  m.bias.resize(l.out);
  for (int o = 0; o < l.out; ++o) {
    int8_t* row = m.weight.data() + int64_t{o} * l.in;
    float ws = l.weight_scale[o];
    if (ws == 0.0f) {
      ws = 1.0f;
      std::fill_n(row, l.in, int8_t{0});
    }
    int64_t row_sum = 0;
    for (int i = 0; i < l.in; ++i) row_sum += row[i];
    const float alpha = l.input_scale * ws;
    m.output_scale[o] =
        next_input_scale > 0.0f ? alpha / next_input_scale : alpha;
    m.bias[o] = (l.bias != nullptr ? l.bias[o] : 0.0f) / alpha -
                static_cast<float>(zero_point * row_sum);
  }
  return m;
}

absl::Status ValidateInt8Codes(const std::vector<Int8LinearLayer>& layers,
                               Int8Arithmetic arithmetic) {
  for (size_t l = 0; l < layers.size(); ++l) {
    const Int8LinearLayer& layer = layers[l];
    if (layer.weight_scale == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("int8 MLP layer ", l, " has no weight_scale"));
    }
    if (!(layer.input_scale > 0.0f) || !std::isfinite(layer.input_scale)) {
      return absl::InvalidArgumentError(
          absl::StrCat("int8 MLP layer ", l, " has input_scale ",
                       layer.input_scale, "; expected finite and > 0"));
    }
    for (int o = 0; o < layer.out; ++o) {
      const float ws = layer.weight_scale[o];
      if (!(ws >= 0.0f) || !std::isfinite(ws)) {
        return absl::InvalidArgumentError(
            absl::StrCat("int8 MLP layer ", l, " has weight_scale[", o,
                         "] = ", ws, "; expected finite and >= 0"));
      }
    }
    const int32_t w_max = LayerRanges(arithmetic, l == 0).weight_max;
    const int64_t n = int64_t{layer.in} * layer.out;
    for (int64_t i = 0; i < n; ++i) {
      if (std::abs(int32_t{layer.weight[i]}) > w_max) {
        return absl::InvalidArgumentError(absl::StrCat(
            "int8 MLP layer ", l, " has weight code ", layer.weight[i], " at [",
            i / layer.in, "][", i % layer.in, "]; ",
            Int8ArithmeticName(arithmetic), " arithmetic needs codes in [-",
            w_max, ", ", w_max, "]"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<Int8LinearLayer> Int8MlpParams::Views() const {
  std::vector<Int8LinearLayer> views;
  views.reserve(layers.size());
  for (const Layer& l : layers) {
    views.push_back({l.in, l.out, l.weight.data(), l.weight_scale.data(),
                     l.bias.empty() ? nullptr : l.bias.data(), l.input_scale});
  }
  return views;
}

struct Int8Mlp::Impl {
  std::unique_ptr<MatmulStack> stack;
  Int8Arithmetic arithmetic = Int8Arithmetic::kFull;
  Int8LayerRanges input_ranges;
  float input_scale = 1.0f;
  MlpShape shape;
};

Int8Mlp::Int8Mlp(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Int8Mlp::~Int8Mlp() = default;

absl::StatusOr<std::unique_ptr<Int8Mlp>> Int8Mlp::Create(
    const std::vector<Int8LinearLayer>& layers, Activation last_activation,
    Int8Arithmetic arithmetic) {
  RETURN_IF_ERROR(ValidateShapes(layers, "int8"));
  RETURN_IF_ERROR(ValidateInt8Codes(layers, arithmetic));
  std::vector<LayerSpec> specs(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    const bool last = l + 1 == layers.size();
    const Int8LayerRanges in = LayerRanges(arithmetic, l == 0);
    Int8LayerMath math =
        DeriveInt8Layer(layers[l], in.input_zero_point,
                        last ? 0.0f : layers[l + 1].input_scale);
    LayerSpec& s = specs[l];
    s.in = layers[l].in;
    s.out = layers[l].out;
    s.src_dt = Dt::u8;
    s.wei_dt = Dt::s8;
    s.dst_dt = last ? Dt::f32 : Dt::u8;
    s.output_scales = std::move(math.output_scale);
    s.bias = std::move(math.bias);
    s.weights.resize(math.weight.size());
    std::memcpy(s.weights.data(), math.weight.data(), math.weight.size());
    if (last) {
      s.post_op = LastPostOp(last_activation);
    } else if (const int32_t hi = LayerRanges(arithmetic, false).input_max;
               hi < 255) {
      // The u8 destination saturates at 0 (the ReLU) and 255; the clip
      // keeps codes within the next layer's narrower range.
      s.post_op = dnnl::algorithm::eltwise_clip;
      s.post_op_alpha = 0.0f;
      s.post_op_beta = static_cast<float>(hi);
    }
  }
  auto impl = std::make_unique<Impl>();
  ASSIGN_OR_RETURN(impl->stack, MatmulStack::Create(std::move(specs)));
  impl->arithmetic = arithmetic;
  impl->input_ranges = LayerRanges(arithmetic, /*first_layer=*/true);
  impl->input_scale = layers.front().input_scale;
  impl->shape = MlpShape::Of(layers);
  return std::unique_ptr<Int8Mlp>(new Int8Mlp(std::move(impl)));
}

absl::Status Int8Mlp::Run(const float* in, int64_t m, float* out) const {
  RETURN_IF_ERROR(CheckRows(m, "int8"));
  PinOneDnnToCallingThread();
  try {
    ThreadState& ts = GetThreadState();
    const int64_t n = m * impl_->shape.in_dim;
    auto* q = static_cast<uint8_t*>(ts.input.Reserve(n));
    QuantizeInput(in, n, impl_->input_scale, impl_->input_ranges, q);
    impl_->stack->Run(ts, q, m, out);
  } catch (const dnnl::error& e) {
    return DnnlError(e, "run the int8 MLP");
  }
  return absl::OkStatus();
}

int Int8Mlp::in_dim() const { return impl_->shape.in_dim; }
int Int8Mlp::out_dim() const { return impl_->shape.out_dim; }
int Int8Mlp::num_layers() const { return impl_->shape.num_layers; }
int64_t Int8Mlp::Ops(int64_t m) const {
  return 2 * m * impl_->shape.macs_per_row;
}

Int8Arithmetic Int8Mlp::arithmetic() const { return impl_->arithmetic; }
std::vector<std::string> Int8Mlp::Implementations() const {
  return impl_->stack->Implementations();
}

}  // namespace duet::common
