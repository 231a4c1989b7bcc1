// Eight fp32 lanes for the gather kernels (embedding_bag.cc), written once
// over this type and built for the ISA at hand: one AVX2 register (x86-64-v3
// builds), two Advanced SIMD (NEON) registers (aarch64), or a plain array the
// compiler may vectorize (anything else). Internal to duet_kernels.
//   F32x8 Zero(), Set1(s), Load(float bytes), LoadU8(8 u8 codes as floats)
//   Add(a, b) = a + b;  MulAdd(a, b, c) = a * b + c (fused where the ISA has
//   it);  Store(v, float* out);  Prefetch(p): one cache line, for reading.
// Every load takes a byte pointer with no alignment: rows sit at any offset
// of a memory-mapped file.
#ifndef DUET_COMMON_KERNELS_INTERNAL_F32X8_H_
#define DUET_COMMON_KERNELS_INTERNAL_F32X8_H_

#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define DUET_F32X8_AVX2 1
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#define DUET_F32X8_NEON 1
#endif

namespace duet::common::internal {

// The ISA the kernels were built for: "avx2", "neon" or "scalar".
#if defined(DUET_F32X8_AVX2)
inline constexpr const char kF32x8Isa[] = "avx2";
#elif defined(DUET_F32X8_NEON)
inline constexpr const char kF32x8Isa[] = "neon";
#else
inline constexpr const char kF32x8Isa[] = "scalar";
#endif

inline void Prefetch(const uint8_t* p) { __builtin_prefetch(p, 0, 3); }

#if defined(DUET_F32X8_AVX2)

struct F32x8 {
  __m256 v;
};
inline F32x8 Zero() { return {_mm256_setzero_ps()}; }
inline F32x8 Set1(float s) { return {_mm256_set1_ps(s)}; }
inline F32x8 Load(const uint8_t* p) {
  return {_mm256_loadu_ps(reinterpret_cast<const float*>(p))};
}
inline F32x8 Load(const float* p) { return {_mm256_loadu_ps(p)}; }
inline F32x8 LoadU8(const uint8_t* p) {
  const __m128i codes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return {_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes))};
}
inline F32x8 Add(F32x8 a, F32x8 b) { return {_mm256_add_ps(a.v, b.v)}; }
inline F32x8 MulAdd(F32x8 a, F32x8 b, F32x8 c) {
  return {_mm256_fmadd_ps(a.v, b.v, c.v)};
}
inline void Store(F32x8 a, float* out) { _mm256_storeu_ps(out, a.v); }

#elif defined(DUET_F32X8_NEON)

struct F32x8 {
  float32x4_t lo, hi;
};
inline F32x8 Zero() { return {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)}; }
inline F32x8 Set1(float s) { return {vdupq_n_f32(s), vdupq_n_f32(s)}; }
inline F32x8 Load(const float* p) { return {vld1q_f32(p), vld1q_f32(p + 4)}; }
// ld1 has no alignment requirement beyond the element's; a row at an odd
// byte offset goes through a byte load instead of a misaligned float*.
inline F32x8 Load(const uint8_t* p) {
  return {vreinterpretq_f32_u8(vld1q_u8(p)),
          vreinterpretq_f32_u8(vld1q_u8(p + 16))};
}
inline F32x8 LoadU8(const uint8_t* p) {
  const uint16x8_t w = vmovl_u8(vld1_u8(p));
  return {vcvtq_f32_u32(vmovl_u16(vget_low_u16(w))),
          vcvtq_f32_u32(vmovl_u16(vget_high_u16(w)))};
}
inline F32x8 Add(F32x8 a, F32x8 b) {
  return {vaddq_f32(a.lo, b.lo), vaddq_f32(a.hi, b.hi)};
}
inline F32x8 MulAdd(F32x8 a, F32x8 b, F32x8 c) {
  return {vfmaq_f32(c.lo, a.lo, b.lo), vfmaq_f32(c.hi, a.hi, b.hi)};
}
inline void Store(F32x8 a, float* out) {
  vst1q_f32(out, a.lo);
  vst1q_f32(out + 4, a.hi);
}

#else

struct F32x8 {
  float v[8];
};
inline F32x8 Zero() { return {}; }
inline F32x8 Set1(float s) { return {{s, s, s, s, s, s, s, s}}; }
inline F32x8 Load(const uint8_t* p) {
  F32x8 r;
  std::memcpy(r.v, p, sizeof(r.v));
  return r;
}
inline F32x8 Load(const float* p) {
  return Load(reinterpret_cast<const uint8_t*>(p));
}
inline F32x8 LoadU8(const uint8_t* p) {
  F32x8 r;
  for (int i = 0; i < 8; ++i) r.v[i] = static_cast<float>(p[i]);
  return r;
}
inline F32x8 Add(F32x8 a, F32x8 b) {
  for (int i = 0; i < 8; ++i) a.v[i] += b.v[i];
  return a;
}
inline F32x8 MulAdd(F32x8 a, F32x8 b, F32x8 c) {
  for (int i = 0; i < 8; ++i) c.v[i] += a.v[i] * b.v[i];
  return c;
}
inline void Store(F32x8 a, float* out) { std::memcpy(out, a.v, sizeof(a.v)); }

#endif

}  // namespace duet::common::internal

#endif  // DUET_COMMON_KERNELS_INTERNAL_F32X8_H_
