// Fp32Mlp: fp32 layers straight onto the shared matmul stack. Int8Mlp is in
// int8_mlp.cc, the oneDNN machinery in internal/matmul_stack.cc.
#include "common/kernels/mlp.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/kernels/internal/matmul_stack.h"
#include "common/kernels/internal/mlp_shared.h"
#include "common/kernels/internal/onednn.h"
#include "dnnl.hpp"

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
using internal::ValidateShapes;

}  // namespace

struct Fp32Mlp::Impl {
  std::unique_ptr<MatmulStack> stack;
  MlpShape shape;
};

Fp32Mlp::Fp32Mlp(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Fp32Mlp::~Fp32Mlp() = default;

absl::StatusOr<std::unique_ptr<Fp32Mlp>> Fp32Mlp::Create(
    const std::vector<LinearLayer>& layers, Activation last_activation) {
  RETURN_IF_ERROR(ValidateShapes(layers, "fp32"));
  std::vector<LayerSpec> specs(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    const LinearLayer& src = layers[l];
    LayerSpec& s = specs[l];
    s.in = src.in;
    s.out = src.out;
    const auto* w = reinterpret_cast<const uint8_t*>(src.weight);
    s.weights.assign(w, w + int64_t{src.in} * src.out * sizeof(float));
    s.bias = src.bias != nullptr
                 ? std::vector<float>(src.bias, src.bias + src.out)
                 : std::vector<float>(src.out, 0.0f);
    s.post_op = l + 1 < layers.size()
                    ? std::optional(dnnl::algorithm::eltwise_relu)
                    : LastPostOp(last_activation);
  }
  auto impl = std::make_unique<Impl>();
  ASSIGN_OR_RETURN(impl->stack, MatmulStack::Create(std::move(specs)));
  impl->shape = MlpShape::Of(layers);
  return std::unique_ptr<Fp32Mlp>(new Fp32Mlp(std::move(impl)));
}

absl::Status Fp32Mlp::Run(const float* in, int64_t m, float* out) const {
  RETURN_IF_ERROR(CheckRows(m, "fp32"));
  PinOneDnnToCallingThread();
  try {
    impl_->stack->Run(GetThreadState(), in, m, out);
  } catch (const dnnl::error& e) {
    return DnnlError(e, "run the fp32 MLP");
  }
  return absl::OkStatus();
}

absl::Status Fp32Mlp::Prepare(int64_t max_m) const {
  RETURN_IF_ERROR(CheckRows(max_m, "fp32"));
  PinOneDnnToCallingThread();
  try {
    impl_->stack->Prepare(max_m);
  } catch (const dnnl::error& e) {
    return DnnlError(e, "create the fp32 MLP's primitives");
  }
  return absl::OkStatus();
}

std::vector<int64_t> Fp32Mlp::PreparedRowCounts() const {
  return impl_->stack->PlannedRowCounts();
}

int Fp32Mlp::in_dim() const { return impl_->shape.in_dim; }
int Fp32Mlp::out_dim() const { return impl_->shape.out_dim; }
int Fp32Mlp::num_layers() const { return impl_->shape.num_layers; }
int64_t Fp32Mlp::Flops(int64_t m) const {
  return 2 * m * impl_->shape.macs_per_row;
}

}  // namespace duet::common
