#include "common/kernels/quantize.h"

#include <algorithm>
#include <cmath>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#endif

namespace duet::common {
namespace {

// Both implementations derive the parameters from (min, max) here and round
// with the same operations (IEEE division, round-half-to-even, clamp in float
// before the integer conversion), so the fast path is bit-identical to the
// reference and NaN inputs clamp instead of hitting an undefined cast.
AffineParams ParamsFromRange(float lo, float hi) {
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  AffineParams p;
  const float range = hi - lo;
  if (!(range > 0.0f) || !std::isfinite(range)) {
    // All zeros (or a non-finite range, the caller's problem): any scale
    // represents 0 exactly; 1 keeps dequantization finite.
    p.scale = 1.0f;
    p.zero_point = 0;
    return p;
  }
  p.scale = range / 255.0f;
  // lo / scale is in [-255, 0], so the zero point lands in [-128, 127] and
  // 0.0f maps exactly onto an integer code.
  const float zp = -128.0f - std::nearbyint(lo / p.scale);
  p.zero_point = static_cast<int32_t>(std::clamp(zp, -128.0f, 127.0f));
  return p;
}

inline int8_t QuantizeOne(float x, float scale, float zp) {
  float r = std::nearbyint(x / scale) + zp;
  r = r < 127.0f ? r : 127.0f;  // NaN -> 127, as the vector paths below
  r = r > -128.0f ? r : -128.0f;
  return static_cast<int8_t>(static_cast<int32_t>(r));
}

// The vector paths: (min, max) of x with 0, then 16 codes at a time; the
// tail (and every element on other CPUs) through QuantizeOne.
#if defined(__AVX2__) && defined(__FMA__)

void RangeWithZero(const float* x, int n, float* lo_out, float* hi_out) {
  int i = 0;
  __m256 vlo = _mm256_setzero_ps();
  __m256 vhi = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    vlo = _mm256_min_ps(vlo, v);
    vhi = _mm256_max_ps(vhi, v);
  }
  alignas(32) float lo8[8], hi8[8];
  _mm256_store_ps(lo8, vlo);
  _mm256_store_ps(hi8, vhi);
  float lo = 0.0f, hi = 0.0f;
  for (int j = 0; j < 8; ++j) {
    lo = std::min(lo, lo8[j]);
    hi = std::max(hi, hi8[j]);
  }
  for (int j = i; j < n; ++j) {
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  *lo_out = lo;
  *hi_out = hi;
}

int Quantize16s(const float* x, int n, float scale, float zp, int8_t* q) {
  const __m256 vscale = _mm256_set1_ps(scale);
  const __m256 vzp = _mm256_set1_ps(zp);
  const __m256 vmax = _mm256_set1_ps(127.0f);
  const __m256 vmin = _mm256_set1_ps(-128.0f);
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 a = _mm256_div_ps(_mm256_loadu_ps(x + i), vscale);
    __m256 b = _mm256_div_ps(_mm256_loadu_ps(x + i + 8), vscale);
    a = _mm256_add_ps(
        _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), vzp);
    b = _mm256_add_ps(
        _mm256_round_ps(b, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), vzp);
    // min(a, 127) returns 127 for NaN a (second operand), matching QuantizeOne.
    a = _mm256_max_ps(_mm256_min_ps(a, vmax), vmin);
    b = _mm256_max_ps(_mm256_min_ps(b, vmax), vmin);
    const __m256i ia = _mm256_cvtps_epi32(a);
    const __m256i ib = _mm256_cvtps_epi32(b);
    // packs works within 128-bit lanes; permute restores element order.
    const __m256i w16 = _mm256_packs_epi32(ia, ib);
    const __m128i lo16 = _mm256_castsi256_si128(w16);
    const __m128i hi16 = _mm256_extracti128_si256(w16, 1);
    __m128i b8 = _mm_packs_epi16(lo16, hi16);
    // After the two packs the order is a0-3 b0-3 a4-7 b4-7.
    b8 = _mm_shuffle_epi32(b8, _MM_SHUFFLE(3, 1, 2, 0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), b8);
  }
  return i;
}

#elif defined(__aarch64__) && defined(__ARM_NEON)

void RangeWithZero(const float* x, int n, float* lo_out, float* hi_out) {
  int i = 0;
  float32x4_t vlo = vdupq_n_f32(0.0f);
  float32x4_t vhi = vdupq_n_f32(0.0f);
  // fminnm/fmaxnm skip a NaN operand, as std::min(lo, x) does in the
  // reference.
  for (; i + 4 <= n; i += 4) {
    const float32x4_t v = vld1q_f32(x + i);
    vlo = vminnmq_f32(vlo, v);
    vhi = vmaxnmq_f32(vhi, v);
  }
  float lo = vminvq_f32(vlo), hi = vmaxvq_f32(vhi);
  for (; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  *lo_out = lo;
  *hi_out = hi;
}

// round-half-even (frintn), clamp by compare-and-select so that NaN takes
// the upper bound as in QuantizeOne (fmin would propagate it), then the
// integral value converts exactly.
inline int32x4_t QuantizeLanes(float32x4_t x, float32x4_t scale, float32x4_t zp,
                               float32x4_t hi, float32x4_t lo) {
  float32x4_t r = vaddq_f32(vrndnq_f32(vdivq_f32(x, scale)), zp);
  r = vbslq_f32(vcltq_f32(r, hi), r, hi);
  r = vbslq_f32(vcgtq_f32(r, lo), r, lo);
  return vcvtq_s32_f32(r);
}

int Quantize16s(const float* x, int n, float scale, float zp, int8_t* q) {
  const float32x4_t vscale = vdupq_n_f32(scale);
  const float32x4_t vzp = vdupq_n_f32(zp);
  const float32x4_t vmax = vdupq_n_f32(127.0f);
  const float32x4_t vmin = vdupq_n_f32(-128.0f);
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    int32x4_t v[4];
    for (int j = 0; j < 4; ++j) {
      v[j] = QuantizeLanes(vld1q_f32(x + i + 4 * j), vscale, vzp, vmax, vmin);
    }
    const int16x8_t w0 = vcombine_s16(vqmovn_s32(v[0]), vqmovn_s32(v[1]));
    const int16x8_t w1 = vcombine_s16(vqmovn_s32(v[2]), vqmovn_s32(v[3]));
    vst1q_s8(q + i, vcombine_s8(vqmovn_s16(w0), vqmovn_s16(w1)));
  }
  return i;
}

#else

void RangeWithZero(const float* x, int n, float* lo_out, float* hi_out) {
  float lo = 0.0f, hi = 0.0f;
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  *lo_out = lo;
  *hi_out = hi;
}

int Quantize16s(const float*, int, float, float, int8_t*) { return 0; }

#endif

}  // namespace

AffineParams QuantizeAffineInt8(const float* x, int n, int8_t* q) {
  if (n <= 0) return ParamsFromRange(0.0f, 0.0f);
  float lo, hi;
  RangeWithZero(x, n, &lo, &hi);
  const AffineParams p = ParamsFromRange(lo, hi);
  const float zp = static_cast<float>(p.zero_point);
  int i = Quantize16s(x, n, p.scale, zp, q);
  for (; i < n; ++i) q[i] = QuantizeOne(x[i], p.scale, zp);
  return p;
}

void QuantizeAffineInt8Ref(const float* x, int n, int8_t* q,
                           AffineParams* params) {
  float lo = 0.0f, hi = 0.0f;
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  const AffineParams p = ParamsFromRange(lo, hi);
  const float zp = static_cast<float>(p.zero_point);
  for (int i = 0; i < n; ++i) q[i] = QuantizeOne(x[i], p.scale, zp);
  if (params != nullptr) *params = p;
}

void DequantizeAffineInt8(const int8_t* q, int n, AffineParams params,
                          float* x) {
  for (int i = 0; i < n; ++i) {
    x[i] = params.scale *
           static_cast<float>(static_cast<int32_t>(q[i]) - params.zero_point);
  }
}

}  // namespace duet::common
