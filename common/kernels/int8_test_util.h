// Test helpers for the int8 arithmetics (int8_arithmetic.h): header-only, so
// kernel tests that link nothing above duet_kernels can use them.
#ifndef DUET_COMMON_KERNELS_INT8_TEST_UTIL_H_
#define DUET_COMMON_KERNELS_INT8_TEST_UTIL_H_

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/kernels/int8_arithmetic.h"

namespace duet::common {

// Why a test of arithmetic `a` cannot run on this CPU (or under its
// ONEDNN_MAX_CPU_ISA cap), for GTEST_SKIP; "" when `a` is exact here.
inline std::string InexactInt8Reason(Int8Arithmetic a) {
  if (Int8Kernels().IsExact(a)) return "";
  return absl::StrCat(Int8ArithmeticName(a),
                      " arithmetic saturates in oneDNN's int8 kernels on this "
                      "CPU (",
                      Int8Kernels().Describe(),
                      "); mlp_test's ProbeVerdictHoldsForEveryArithmetic "
                      "proves it");
}

// "reduced_weights": an arithmetic's name as a test-name part.
inline std::string Int8ArithmeticTestName(Int8Arithmetic a) {
  std::string name = Int8ArithmeticName(a);
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

}  // namespace duet::common

#endif  // DUET_COMMON_KERNELS_INT8_TEST_UTIL_H_
