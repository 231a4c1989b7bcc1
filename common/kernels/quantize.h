// Affine int8 quantization of activation vectors (the user vector on the wire).
#ifndef DUET_COMMON_KERNELS_QUANTIZE_H_
#define DUET_COMMON_KERNELS_QUANTIZE_H_

#include <cstdint>
#include <limits>

namespace duet::common {

struct AffineParams {
  float scale = 1.0f;
  int32_t zero_point = 0;
};

// The largest scale whose dequantized values stay finite (|q - zero_point|
// <= 255). Senders fail rather than emit a larger one; receivers reject it.
inline constexpr float kMaxAffineScale =
    std::numeric_limits<float>::max() / 256;

// Chooses scale and zero point so [min(x, 0), max(x, 0)] maps onto
// [-128, 127], then q[i] = clamp(round(x[i] / scale) + zero_point).
// Dequantization error per element is at most scale / 2. n may be 0.
AffineParams QuantizeAffineInt8(const float* x, int n, int8_t* q);
void QuantizeAffineInt8Ref(const float* x, int n, int8_t* q,
                           AffineParams* params);

// x[i] = scale * (q[i] - zero_point).
void DequantizeAffineInt8(const int8_t* q, int n, AffineParams params,
                          float* x);

}  // namespace duet::common

#endif  // DUET_COMMON_KERNELS_QUANTIZE_H_
