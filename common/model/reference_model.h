// In-process evaluators of the model math (DESIGN.md §2): the monolithic
// baseline, which evaluates every MLP and every user-table lookup for every
// candidate row as a conventional server-side DLRM does, and the split model
// (user part once, item part over N, combined top MLP). They are the oracles
// of correctness tests and, with the same oneDNN and gather kernels as the
// services, the baseline of speed claims.
#ifndef DUET_COMMON_MODEL_REFERENCE_MODEL_H_
#define DUET_COMMON_MODEL_REFERENCE_MODEL_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/base/aligned_buffer.h"
#include "common/kernels/embedding_bag.h"
#include "common/model/model.h"

namespace duet::common {

// A user's raw inputs, as the monolithic server receives them.
struct UserInputs {
  std::vector<float> static_features;   // s
  std::vector<float> dynamic_features;  // c
  std::vector<int64_t> history;         // interacted item ids, oldest first
};

// INVALID_ARGUMENT naming the field: feature counts, NaN/Inf, unknown ids.
absl::Status ValidateUserInputs(const Model& model, const UserInputs& user);

// p_t for every user table (T_u * d floats): the SUM of the rows of user
// table t at the history keys of the last history_length[t] items of
// `history` (fewer if the history is shorter). Needs the user_tables part.
void PoolHistory(const Model& model, absl::Span<const int64_t> history,
                 float* pooled);

// Both evaluators borrow `model` (which must outlive them), are thread-safe
// and reuse thread-local scratch memory (no allocation in steady state).
class MonolithicModel {
 public:
  // Needs all three parts of the model.
  explicit MonolithicModel(const Model* model) : model_(model) {}
  // ctr[j] for candidates[j]. Inputs must be valid (see Validate*).
  absl::Status Score(const UserInputs& user,
                     absl::Span<const int64_t> candidates, float* ctr) const;

 private:
  const Model* model_;
};

// A model's item tables quantized row-wise to int8 (QuantizeRowwiseInt8:
// dim codes + float scale + float bias a row), owning their rows: what
// duet-cloud --item_embeddings int8 gathers. Needs the cloud part; does not
// borrow the model after construction. Immutable and thread-safe.
class Int8ItemTables {
 public:
  explicit Int8ItemTables(const Model& model);
  const std::vector<EmbeddingTable>& tables() const { return views_; }
  int64_t bytes() const;

 private:
  std::vector<AlignedBuffer<uint8_t>> rows_;
  std::vector<EmbeddingTable> views_;
};

class SplitModel {
 public:
  // UserVector needs the edge part; ScoreItems the cloud part. ScoreItems
  // gathers `item_tables` instead of the model's when given (same shapes,
  // e.g. Int8ItemTables::tables(); they must outlive this).
  explicit SplitModel(const Model* model,
                      const std::vector<EmbeddingTable>* item_tables = nullptr)
      : model_(model), item_tables_(item_tables) {}

  // u = UserTopMLP([StaticBottom(s), DynamicBottom(c), pooled]), with the
  // fp32 or the int8 user top MLP.
  absl::Status UserVector(const float* static_features,
                          const float* dynamic_features, const float* pooled,
                          bool int8, float* u) const;
  // ctr[j] = sigmoid(CombinedTop([u, ItemTop(f_j)])).
  absl::Status ScoreItems(const float* u, absl::Span<const int64_t> candidates,
                          float* ctr) const;

 private:
  const Model* model_;
  const std::vector<EmbeddingTable>* item_tables_;
};

// Item features f_j = [f_j1 .. f_jTi] of n candidates into out ([n,
// item_top_in] row-major), with the production gather kernel, from the
// model's item tables or from `tables` (same shapes) when given.
void GatherItemFeatures(const Model& model, const int64_t* candidates, int n,
                        float* out,
                        const std::vector<EmbeddingTable>* tables = nullptr);

}  // namespace duet::common

#endif  // DUET_COMMON_MODEL_REFERENCE_MODEL_H_
