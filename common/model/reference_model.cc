#include "common/model/reference_model.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_format.h"
#include "common/base/scratch.h"
#include "common/base/status_macros.h"

namespace duet::common {
namespace {

// Grow-only thread-local buffers: after warm-up no call allocates.
struct Scratch {
  std::vector<float> a, b, c, d, e, f;
  std::vector<int64_t> ids;
  std::vector<int32_t> offsets;
};
Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

absl::Status CheckFinite(const std::vector<float>& v, const char* field) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s[%d] is %f, features must be finite", field, i, v[i]));
    }
  }
  return absl::OkStatus();
}

// Copies an [n, w] block into columns [col, col + w) of an [n, stride] matrix.
void CopyColumns(const float* src, int64_t n, int w, float* dst, int stride,
                 int col) {
  if (w == 0) return;
  for (int64_t r = 0; r < n; ++r) {
    std::memcpy(dst + r * stride + col, src + r * w, w * sizeof(float));
  }
}

}  // namespace

absl::Status ValidateUserInputs(const Model& model, const UserInputs& user) {
  const ModelDims& d = model.dims();
  if (static_cast<int>(user.static_features.size()) != d.static_in) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "static_features has %d values, model %s expects %d",
        user.static_features.size(), ModelLabel(model.config()), d.static_in));
  }
  if (static_cast<int>(user.dynamic_features.size()) != d.dynamic_in) {
    return absl::InvalidArgumentError(
        absl::StrFormat("dynamic_features has %d values, model %s expects %d",
                        user.dynamic_features.size(),
                        ModelLabel(model.config()), d.dynamic_in));
  }
  RETURN_IF_ERROR(CheckFinite(user.static_features, "static_features"));
  RETURN_IF_ERROR(CheckFinite(user.dynamic_features, "dynamic_features"));
  for (size_t i = 0; i < user.history.size(); ++i) {
    if (!model.catalog().Contains(user.history[i])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "history_item_ids[%d] is %d, valid item ids are [0, %d)", i,
          user.history[i], model.catalog().num_items()));
    }
  }
  return absl::OkStatus();
}

void PoolHistory(const Model& model, absl::Span<const int64_t> history,
                 float* pooled) {
  const auto& c = model.config();
  const int dim = c.embedding_dim();
  for (int t = 0; t < c.user_tables_size(); ++t) {
    const size_t len =
        std::min<size_t>(c.user_tables(t).history_length(), history.size());
    std::vector<int64_t> keys(len);
    for (size_t i = 0; i < len; ++i) {
      keys[i] =
          model.catalog().HistoryKey(history[history.size() - len + i], t);
    }
    const int32_t offsets[2] = {0, static_cast<int32_t>(len)};
    EmbeddingBagSum(model.user_table(t), keys.data(), offsets, 1,
                    pooled + t * dim, dim, /*accumulate=*/false);
  }
}

Int8ItemTables::Int8ItemTables(const Model& model) {
  const int dim = model.config().embedding_dim();
  for (int t = 0; t < model.num_item_tables(); ++t) {
    const EmbeddingTable& fp32 = model.item_table(t);
    AlignedBuffer<uint8_t> rows(static_cast<size_t>(fp32.rows) * (dim + 8));
    QuantizeRowwiseInt8(static_cast<const float*>(fp32.data), fp32.rows, dim,
                        rows.data());
    views_.push_back(EmbeddingTable::Int8Rowwise(rows.data(), fp32.rows, dim));
    rows_.push_back(std::move(rows));
  }
}

int64_t Int8ItemTables::bytes() const {
  int64_t total = 0;
  for (const EmbeddingTable& t : views_) {
    total += t.rows * static_cast<int64_t>(t.row_stride());
  }
  return total;
}

void GatherItemFeatures(const Model& model, const int64_t* candidates, int n,
                        float* out, const std::vector<EmbeddingTable>* tables) {
  const Catalog& catalog = model.catalog();
  const int dim = model.config().embedding_dim();
  const int stride = model.dims().item_top_in;
  std::vector<int64_t>& ids = ThreadScratch().ids;
  for (int t = 0; t < model.num_item_tables(); ++t) {
    const int bag = catalog.lookups_per_item(t);
    int64_t* p = GrowTo(ids, static_cast<size_t>(n) * bag);
    for (int j = 0; j < n; ++j)
      catalog.ItemSparseIds(candidates[j], t, p + j * bag);
    EmbeddingBagSumFixed(tables != nullptr ? (*tables)[t] : model.item_table(t),
                         p, n, bag, out + t * dim, stride,
                         /*accumulate=*/false);
  }
}

absl::Status MonolithicModel::Score(const UserInputs& user,
                                    absl::Span<const int64_t> candidates,
                                    float* ctr) const {
  const Model& m = *model_;
  const ModelDims& d = m.dims();
  const auto& c = m.config();
  const int dim = c.embedding_dim();
  const int64_t n = static_cast<int64_t>(candidates.size());
  Scratch& s = ThreadScratch();

  // Bottom MLPs over every candidate row: the server does not know the rows
  // are identical.
  float* x_user = GrowTo(s.a, n * d.user_top_in);
  float* rows = GrowTo(s.b, n * std::max(d.static_in, d.dynamic_in));
  float* z = GrowTo(s.c, n * std::max(d.static_out, d.dynamic_out));
  for (int64_t r = 0; r < n; ++r) {
    std::copy(user.static_features.begin(), user.static_features.end(),
              rows + r * d.static_in);
  }
  RETURN_IF_ERROR(RunOrIdentity(m.static_bottom(), rows, n, d.static_in, z));
  CopyColumns(z, n, d.static_out, x_user, d.user_top_in, 0);
  for (int64_t r = 0; r < n; ++r) {
    std::copy(user.dynamic_features.begin(), user.dynamic_features.end(),
              rows + r * d.dynamic_in);
  }
  RETURN_IF_ERROR(RunOrIdentity(m.dynamic_bottom(), rows, n, d.dynamic_in, z));
  CopyColumns(z, n, d.dynamic_out, x_user, d.user_top_in, d.static_out);

  // User-history lookups, once per candidate row.
  for (int t = 0; t < c.user_tables_size(); ++t) {
    const size_t len = std::min<size_t>(c.user_tables(t).history_length(),
                                        user.history.size());
    int64_t* ids = GrowTo(s.ids, n * len);
    int32_t* offsets = GrowTo(s.offsets, n + 1);
    for (size_t i = 0; i < len; ++i) {
      ids[i] = m.catalog().HistoryKey(
          user.history[user.history.size() - len + i], t);
    }
    // An empty history pools to zeros (and leaves `ids` null: no memcpy).
    for (int64_t r = 1; r < n && len > 0; ++r) {
      std::memcpy(ids + r * len, ids, len * sizeof(int64_t));
    }
    for (int64_t r = 0; r <= n; ++r) offsets[r] = static_cast<int32_t>(r * len);
    EmbeddingBagSum(m.user_table(t), ids, offsets, n,
                    x_user + d.static_out + d.dynamic_out + t * dim,
                    d.user_top_in, /*accumulate=*/false);
  }
  float* x_comb = GrowTo(s.d, n * d.combined_in);
  float* u = GrowTo(s.e, n * d.user_out);
  RETURN_IF_ERROR(m.user_top().Run(x_user, n, u));
  CopyColumns(u, n, d.user_out, x_comb, d.combined_in, 0);

  // Item side.
  float* f = GrowTo(s.f, n * std::max(d.item_top_in, d.item_out));
  GatherItemFeatures(m, candidates.data(), static_cast<int>(n), f);
  float* v = GrowTo(s.b, n * d.item_out);
  RETURN_IF_ERROR(RunOrIdentity(m.item_top(), f, n, d.item_top_in, v));
  CopyColumns(v, n, d.item_out, x_comb, d.combined_in, d.user_out);
  return m.combined_top().Run(x_comb, n, ctr);
}

absl::Status SplitModel::UserVector(const float* static_features,
                                    const float* dynamic_features,
                                    const float* pooled, bool int8,
                                    float* u) const {
  const Model& m = *model_;
  const ModelDims& d = m.dims();
  Scratch& s = ThreadScratch();
  float* x = GrowTo(s.a, d.user_top_in);
  RETURN_IF_ERROR(
      RunOrIdentity(m.static_bottom(), static_features, 1, d.static_in, x));
  RETURN_IF_ERROR(RunOrIdentity(m.dynamic_bottom(), dynamic_features, 1,
                                d.dynamic_in, x + d.static_out));
  std::memcpy(x + d.static_out + d.dynamic_out, pooled,
              d.pooled * sizeof(float));
  return int8 ? m.user_top_int8().Run(x, 1, u) : m.user_top().Run(x, 1, u);
}

absl::Status SplitModel::ScoreItems(const float* u,
                                    absl::Span<const int64_t> candidates,
                                    float* ctr) const {
  const Model& m = *model_;
  const ModelDims& d = m.dims();
  const int64_t n = static_cast<int64_t>(candidates.size());
  Scratch& s = ThreadScratch();
  float* f = GrowTo(s.a, n * d.item_top_in);
  GatherItemFeatures(m, candidates.data(), static_cast<int>(n), f,
                     item_tables_);
  float* v = GrowTo(s.b, n * d.item_out);
  RETURN_IF_ERROR(RunOrIdentity(m.item_top(), f, n, d.item_top_in, v));
  float* x = GrowTo(s.c, n * d.combined_in);
  for (int64_t r = 0; r < n; ++r) {
    std::memcpy(x + r * d.combined_in, u, d.user_out * sizeof(float));
  }
  CopyColumns(v, n, d.item_out, x, d.combined_in, d.user_out);
  return m.combined_top().Run(x, n, ctr);
}

}  // namespace duet::common
