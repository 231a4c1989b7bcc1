// How the int8 MLPs feed oneDNN so that its kernels compute exact int32 dot
// products on the CPU at hand (docs/ARCHITECTURE.md, "Int8 arithmetic").
// Every layer's input is u8 (the first layer's signed input around a zero
// point), weights are s8. oneDNN's x86 int8 kernels without VNNI (AVX2;
// AVX-512 without VNNI) add pairs of u8 x s8 products into int16 lanes with
// saturation (vpmaddubsw), so a pair overflows once 2 x 255 x 127 > 32767;
// VNNI (vpdpbusd) and AMX accumulate in int32. Each arithmetic bounds the
// codes so that every pair fits, where it must.
#ifndef DUET_COMMON_KERNELS_INT8_ARITHMETIC_H_
#define DUET_COMMON_KERNELS_INT8_ARITHMETIC_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace duet::common {

enum class Int8Arithmetic {
  // Inputs u8 [0, 255] (the first layer's with zero point 128, i.e. s8),
  // weights [-127, 127]. Exact only where the kernels accumulate in int32.
  kFull,
  // Weights in [-63, 63]: |pair| <= 2 x 255 x 63 = 32130. Inputs as kFull.
  kReducedWeights,
  // Inputs u8 [0, 127] (the first layer's with zero point 64, i.e. [-64,
  // 63] around it), weights [-127, 127]: |pair| <= 2 x 127 x 127 = 32258.
  kReducedActivations,
};
// Most accurate first: reduced weights cost less accuracy than reduced
// activations on every preset (`duet-model compare --int8-arithmetic`,
// docs/ARCHITECTURE.md "Int8 arithmetic").
inline constexpr std::array<Int8Arithmetic, 3> kAllInt8Arithmetics = {
    Int8Arithmetic::kFull, Int8Arithmetic::kReducedWeights,
    Int8Arithmetic::kReducedActivations};

// "full" | "reduced-weights" | "reduced-activations"; INVALID_ARGUMENT else.
absl::StatusOr<Int8Arithmetic> ParseInt8Arithmetic(absl::string_view name);
const char* Int8ArithmeticName(Int8Arithmetic a);

// The integer ranges of one layer under an arithmetic: its u8 input codes q
// (x ~= scale * (q - input_zero_point), q in [input_min, input_max]) and its
// weight codes (|w| <= weight_max).
struct Int8LayerRanges {
  int32_t input_min = 0;
  int32_t input_max = 0;
  int32_t input_zero_point = 0;
  int32_t weight_max = 0;
};
Int8LayerRanges LayerRanges(Int8Arithmetic a, bool first_layer);

// What oneDNN runs for int8 matmuls in this process, measured once (the
// first call, about a millisecond) with worst-case operands of each
// arithmetic at the row counts the MLPs use. ONEDNN_MAX_CPU_ISA caps what it
// dispatches. Thread-safe.
struct Int8KernelReport {
  std::string isa;  // oneDNN's effective ISA, e.g. "avx2"; aarch64: "asimd",
                    // "sve_256" (the CPU's, see int8_arithmetic.cc)
  std::string implementation;   // its u8s8 matmul, e.g. "gemm:jit"
  std::array<bool, 3> exact{};  // by Int8Arithmetic
  // The first exact one of kAllInt8Arithmetics (the most accurate), else
  // kFull with none exact.
  Int8Arithmetic recommended = Int8Arithmetic::kFull;
  bool IsExact(Int8Arithmetic a) const { return exact[static_cast<int>(a)]; }
  // One line for logs: "isa avx2, gemm:jit: full saturates; using ...".
  std::string Describe() const;
};
const Int8KernelReport& Int8Kernels();

}  // namespace duet::common

#endif  // DUET_COMMON_KERNELS_INT8_ARITHMETIC_H_
