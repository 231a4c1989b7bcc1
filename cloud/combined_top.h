// CombinedTop: y_j = sigmoid(CombinedTopMLP([u, v_j])) for the N candidates
// of a query, with the user's contribution to the first layer either
//   kLoad:      a = W_u u + b once per query, then W_v v_j + a per row, or
//   kRecompute: rows [u, v_j] through the full first layer (batched GEMM),
// (DESIGN.md §2 and §5.3). Both give the same CTRs up to float rounding.
// Owns copies of the first layer's two column blocks W_u and W_v.
// Immutable after Create and thread-safe (per-thread scratch buffers).
#ifndef DUET_CLOUD_COMBINED_TOP_H_
#define DUET_CLOUD_COMBINED_TOP_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/kernels/mlp.h"
#include "common/model/model.h"

namespace duet::cloud {

enum class UserStrategy { kLoad, kRecompute };
const char* UserStrategyName(UserStrategy s);  // "load" | "recompute"

class CombinedTop {
 public:
  // Needs the cloud part of `model`, which must outlive this object.
  static absl::StatusOr<std::unique_ptr<CombinedTop>> Create(
      const common::Model* model);

  // u: [user_out]; v: [n, item_out] row-major; ctr: [n].
  absl::Status Score(const float* u, const float* v, int n,
                     UserStrategy strategy, float* ctr) const;

  // z = W_v v for n rows (the first layer's item contribution, no bias):
  // what a precomputed ItemTable of form kFirstLayer stores. z: [n, hidden].
  absl::Status ItemContribution(const float* v, int n, float* z) const;
  // Memory load from precomputed contributions: a = W_u u + b once, then
  // y_j = Rest(ReLU(z_j + a)) (sigmoid(z_j + a) for a single layer). z:
  // [n, first_layer_out()], overwritten.
  absl::Status ScoreContributions(const float* u, float* z, int n,
                                  float* ctr) const;
  int first_layer_out() const { return hidden_; }

  // Builds the oneDNN primitives of every strategy for up to max_n
  // candidates (Fp32Mlp::Prepare).
  absl::Status Prepare(int max_n) const;

  // Multiply-adds x 2 of one query under each strategy (for the selector's
  // log and the roofline estimate).
  int64_t Flops(int n, UserStrategy strategy) const;

 private:
  explicit CombinedTop(const common::Model* model) : model_(model) {}
  absl::Status ScoreLoad(const float* u, const float* v, int n,
                         float* ctr) const;
  // a = W_u u + b into a: [hidden].
  absl::Status UserContribution(const float* u, float* a) const;
  // ctr from z = W_v v (overwritten) and a.
  absl::Status FinishLoad(const float* a, float* z, int n, float* ctr) const;
  absl::Status ScoreRecompute(const float* u, const float* v, int n,
                              float* ctr) const;

  const common::Model* model_;
  int user_out_ = 0, item_out_ = 0, hidden_ = 0;
  bool single_layer_ = false;  // the first layer is also the last
  // u -> W_u u + b: first_u_ when the first layer is hidden, else the loop
  // over w_u_ [hidden, user_out] and bias_ [hidden].
  std::unique_ptr<common::Fp32Mlp> first_u_;
  std::vector<float> w_u_, bias_;
  std::unique_ptr<common::Fp32Mlp> first_v_;  // v -> W_v v (no activation)
  std::unique_ptr<common::Fp32Mlp> rest_;     // layers 1.. (null if none)
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_COMBINED_TOP_H_
