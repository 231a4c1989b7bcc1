// Scalar references of the MLPs (the oracles of tests and benchmarks),
// written from the math of DESIGN.md §2 and int8_arithmetic.h; they share no
// helper with the oneDNN paths in mlp.cc, so a bug there cannot pass here.
#ifndef DUET_COMMON_KERNELS_MLP_REFERENCE_H_
#define DUET_COMMON_KERNELS_MLP_REFERENCE_H_

#include <cstdint>
#include <vector>

#include "common/kernels/int8_arithmetic.h"
#include "common/kernels/mlp.h"

namespace duet::common {

// y = last(W_L ... relu(W_1 x + b_1) ... + b_L), fp32 accumulation in order.
void Fp32MlpRef(const std::vector<LinearLayer>& layers,
                Activation last_activation, const float* in, int64_t m,
                float* out);

// The exact integer arithmetic an int8 MLP specifies:
//   q_0  = clamp(round_half_even(x / s_0) + z_0, lo_0, hi_0)
//   acc  = sum_i (q_l[i] - z_l) * w_l[o][i]                 (exact, int64)
//   v    = acc * s_l * ws_l[o] + b_l[o]                     (double)
//   q_l+1[o] = clamp(round_half_even(v / s_l+1), 0, hi_l+1)  (hidden)
//   y[o] = last(v)                                          (last layer)
// with the code ranges and zero points of `arithmetic`; a row whose weight
// scale is 0 yields its bias.
void Int8MlpRef(const std::vector<Int8LinearLayer>& layers,
                Int8Arithmetic arithmetic, Activation last_activation,
                const float* in, int64_t m, float* out);

}  // namespace duet::common

#endif  // DUET_COMMON_KERNELS_MLP_REFERENCE_H_
