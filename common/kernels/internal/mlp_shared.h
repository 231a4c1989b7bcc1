// What Fp32Mlp and Int8Mlp share above the matmul stack: shape checks, the
// last layer's post-op and the multiply-add count. Internal to duet_kernels.
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

template <typename Layer>
int64_t MacsPerRow(const std::vector<Layer>& layers) {
  int64_t macs = 0;
  for (const auto& l : layers) macs += int64_t{l.in} * l.out;
  return macs;
}

}  // namespace duet::common::internal

#endif  // DUET_COMMON_KERNELS_INTERNAL_MLP_SHARED_H_
