// What Fp32Mlp and Int8Mlp share above the matmul stack: shape checks, the
// last layer's post-op, the reported shape and the row-count check. Internal to
// duet_kernels.
#ifndef DUET_COMMON_KERNELS_INTERNAL_MLP_SHARED_H_
#define DUET_COMMON_KERNELS_INTERNAL_MLP_SHARED_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/kernels/mlp.h"
#include "dnnl.hpp"

namespace duet::common::internal {

inline std::optional<dnnl::algorithm> LastPostOp(Activation a) {
  switch (a) {
    case Activation::kRelu:
      return dnnl::algorithm::eltwise_relu;
    case Activation::kSigmoid:
      return dnnl::algorithm::eltwise_logistic;
    case Activation::kNone:
      break;
  }
  return std::nullopt;
}

// Shape checks shared by both MLP kinds (Layer: LinearLayer or
// Int8LinearLayer).
template <typename Layer>
absl::Status ValidateShapes(const std::vector<Layer>& layers,
                            absl::string_view kind) {
  if (layers.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kind, " MLP needs at least one layer, got 0"));
  }
  for (size_t l = 0; l < layers.size(); ++l) {
    if (layers[l].in <= 0 || layers[l].out <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(kind, " MLP layer ", l, " has shape in=", layers[l].in,
                       " out=", layers[l].out, "; both must be positive"));
    }
    if (layers[l].weight == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(kind, " MLP layer ", l, " has no weight"));
    }
    if (l > 0 && layers[l].in != layers[l - 1].out) {
      return absl::InvalidArgumentError(absl::StrCat(
          kind, " MLP layer ", l, " has in=", layers[l].in, " but layer ",
          l - 1, " has out=", layers[l - 1].out, "; they must match"));
    }
  }
  return absl::OkStatus();
}

// The shape both MLP kinds report (in_dim, out_dim, num_layers, and the
// multiply-adds per row behind Flops / Ops).
struct MlpShape {
  template <typename Layer>
  static MlpShape Of(const std::vector<Layer>& layers) {
    MlpShape shape;
    shape.in_dim = layers.front().in;
    shape.out_dim = layers.back().out;
    shape.num_layers = static_cast<int>(layers.size());
    for (const auto& l : layers) shape.macs_per_row += int64_t{l.in} * l.out;
    return shape;
  }

  int in_dim = 0;
  int out_dim = 0;
  int num_layers = 0;
  int64_t macs_per_row = 0;
};

// Run's row-count check, for both MLP kinds.
inline absl::Status CheckRows(int64_t m, absl::string_view kind) {
  if (m >= 1) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(kind, " MLP needs m >= 1 rows, got ", m));
}

}  // namespace duet::common::internal

#endif  // DUET_COMMON_KERNELS_INTERNAL_MLP_SHARED_H_
