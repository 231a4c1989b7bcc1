#include "cloud/combined_top.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/base/status_macros.h"

namespace duet::cloud {
namespace {

struct CombineScratch {
  std::vector<float> a, x, z;
};
CombineScratch& Scratch() {
  thread_local CombineScratch scratch;
  return scratch;
}
float* Grow(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace

const char* UserStrategyName(UserStrategy s) {
  return s == UserStrategy::kLoad ? "load" : "recompute";
}

absl::StatusOr<std::unique_ptr<CombinedTop>> CombinedTop::Create(
    const common::Model* model) {
  auto top = std::unique_ptr<CombinedTop>(new CombinedTop(model));
  const common::ModelDims& d = model->dims();
  const std::vector<common::LinearLayer>& layers = model->combined_top_layers();
  if (layers.empty() || layers[0].in != d.user_out + d.item_out) {
    return absl::InvalidArgumentError(
        "combined top MLP must start with a layer over [u, v_j]");
  }
  const common::LinearLayer& first = layers[0];
  top->user_out_ = d.user_out;
  top->item_out_ = d.item_out;
  top->hidden_ = first.out;
  top->single_layer_ = layers.size() == 1;
  // Split W = [W_u | W_v] column-wise into two row-major matrices; oneDNN
  // keeps its own reordered copy of each. W_u u + b runs once per query: as
  // a oneDNN matmul when the first layer is hidden (a plain loop runs at one
  // dependent add per multiply-add without -ffast-math, which made memory
  // load lose to recompute up to N = 32 on rm4), as a loop when it is the
  // output layer (one dot product: cheaper than a oneDNN call).
  std::vector<float> w_u(static_cast<size_t>(first.out) * d.user_out);
  std::vector<float> w_v(static_cast<size_t>(first.out) * d.item_out);
  for (int o = 0; o < first.out; ++o) {
    const float* row = first.weight + static_cast<size_t>(o) * first.in;
    std::memcpy(w_u.data() + static_cast<size_t>(o) * d.user_out, row,
                d.user_out * sizeof(float));
    std::memcpy(w_v.data() + static_cast<size_t>(o) * d.item_out,
                row + d.user_out, d.item_out * sizeof(float));
  }
  const std::vector<float> zero_bias(first.out, 0.0f);
  if (top->single_layer_) {
    top->w_u_ = std::move(w_u);
    top->bias_.assign(first.bias, first.bias + first.out);
  } else {
    ASSIGN_OR_RETURN(top->first_u_,
                     common::Fp32Mlp::Create(
                         {{d.user_out, first.out, w_u.data(), first.bias}},
                         common::Activation::kNone));
  }
  ASSIGN_OR_RETURN(top->first_v_,
                   common::Fp32Mlp::Create(
                       {{d.item_out, first.out, w_v.data(), zero_bias.data()}},
                       common::Activation::kNone));
  if (!top->single_layer_) {
    std::vector<common::LinearLayer> rest(layers.begin() + 1, layers.end());
    ASSIGN_OR_RETURN(top->rest_, common::Fp32Mlp::Create(
                                     rest, common::Activation::kSigmoid));
  }
  return top;
}

absl::Status CombinedTop::Score(const float* u, const float* v, int n,
                                UserStrategy strategy, float* ctr) const {
  if (n <= 0) return absl::OkStatus();
  return strategy == UserStrategy::kLoad ? ScoreLoad(u, v, n, ctr)
                                         : ScoreRecompute(u, v, n, ctr);
}

absl::Status CombinedTop::UserContribution(const float* u, float* a) const {
  if (first_u_ != nullptr) return first_u_->Run(u, 1, a);
  for (int o = 0; o < hidden_; ++o) {
    const float* w = w_u_.data() + static_cast<size_t>(o) * user_out_;
    float acc = 0;
    for (int i = 0; i < user_out_; ++i) acc += w[i] * u[i];
    a[o] = acc + bias_[o];
  }
  return absl::OkStatus();
}

absl::Status CombinedTop::FinishLoad(const float* a, float* z, int n,
                                     float* ctr) const {
  if (single_layer_) {
    const size_t total = static_cast<size_t>(n) * hidden_;
    for (size_t i = 0; i < total; ++i) {
      ctr[i] = 1.0f / (1.0f + std::exp(-(z[i] + a[i % hidden_])));
    }
    return absl::OkStatus();
  }
  for (int r = 0; r < n; ++r) {
    float* zr = z + static_cast<size_t>(r) * hidden_;
    for (int o = 0; o < hidden_; ++o) zr[o] = std::max(0.0f, zr[o] + a[o]);
  }
  return rest_->Run(z, n, ctr);
}

absl::Status CombinedTop::ScoreLoad(const float* u, const float* v, int n,
                                    float* ctr) const {
  CombineScratch& s = Scratch();
  // a = W_u u + b, once for the whole query.
  float* ap = Grow(s.a, hidden_);
  RETURN_IF_ERROR(UserContribution(u, ap));
  float* z = single_layer_ ? ctr : Grow(s.z, static_cast<size_t>(n) * hidden_);
  RETURN_IF_ERROR(first_v_->Run(v, n, z));
  return FinishLoad(ap, z, n, ctr);
}

absl::Status CombinedTop::ItemContribution(const float* v, int n,
                                           float* z) const {
  if (n <= 0) return absl::OkStatus();
  return first_v_->Run(v, n, z);
}

absl::Status CombinedTop::ScoreContributions(const float* u, float* z, int n,
                                             float* ctr) const {
  if (n <= 0) return absl::OkStatus();
  float* ap = Grow(Scratch().a, hidden_);
  RETURN_IF_ERROR(UserContribution(u, ap));
  return FinishLoad(ap, z, n, ctr);
}

absl::Status CombinedTop::ScoreRecompute(const float* u, const float* v, int n,
                                         float* ctr) const {
  CombineScratch& s = Scratch();
  const int width = user_out_ + item_out_;
  float* x = Grow(s.x, static_cast<size_t>(n) * width);
  for (int r = 0; r < n; ++r) {
    float* xr = x + static_cast<size_t>(r) * width;
    std::memcpy(xr, u, user_out_ * sizeof(float));
    std::memcpy(xr + user_out_, v + static_cast<size_t>(r) * item_out_,
                item_out_ * sizeof(float));
  }
  return model_->combined_top().Run(x, n, ctr);
}

absl::Status CombinedTop::Prepare(int max_n) const {
  if (first_u_ != nullptr) RETURN_IF_ERROR(first_u_->Prepare(1));
  RETURN_IF_ERROR(first_v_->Prepare(max_n));
  if (rest_ != nullptr) RETURN_IF_ERROR(rest_->Prepare(max_n));
  return model_->combined_top().Prepare(max_n);
}

int64_t CombinedTop::Flops(int n, UserStrategy strategy) const {
  const int64_t rest = rest_ != nullptr ? rest_->Flops(n) : 0;
  if (strategy == UserStrategy::kLoad) {
    return 2 * static_cast<int64_t>(hidden_) * user_out_ +
           2 * static_cast<int64_t>(n) * hidden_ * item_out_ + rest;
  }
  return 2 * static_cast<int64_t>(n) * hidden_ * (user_out_ + item_out_) + rest;
}

}  // namespace duet::cloud
