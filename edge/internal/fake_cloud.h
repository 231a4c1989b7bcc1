// An in-process CloudClient for tests: scores with common::SplitModel on the
// full model (user vector dequantized like the cloud does), relays the
// user-table rows of returned items, counts every call and records their
// order. Thread-safe.
#ifndef DUET_EDGE_INTERNAL_FAKE_CLOUD_H_
#define DUET_EDGE_INTERNAL_FAKE_CLOUD_H_

#include <atomic>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/kernels/quantize.h"
#include "common/kernels/top_k.h"
#include "common/model/model.h"
#include "common/model/reference_model.h"
#include "edge/cloud_client.h"

namespace duet::edge::internal {

// The rows an interaction with `item` appends (what the cloud relays).
inline std::vector<float> ItemRows(const common::Model& model, int64_t item) {
  const int dim = model.config().embedding_dim();
  std::vector<float> rows(model.dims().pooled);
  for (int t = 0; t < model.config().user_tables_size(); ++t) {
    const common::EmbeddingTable& table = model.user_table(t);
    const float* row = static_cast<const float*>(table.data) +
                       model.catalog().HistoryKey(item, t) * dim;
    std::copy(row, row + dim, rows.begin() + t * dim);
  }
  return rows;
}

class FakeCloud : public CloudClient {
 public:
  explicit FakeCloud(const common::Model* model) : model_(model) {}

  std::atomic<int> begins{0}, vectors{0}, embedding_calls{0};
  std::atomic<bool> available{true};

  std::vector<std::string> events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }

  absl::StatusOr<std::unique_ptr<CloudQuery>> BeginQuery(
      duet::v1::BeginQuery begin, absl::Time) override {
    if (!available) return absl::UnavailableError("cloud is not connected");
    begin.set_query_id(++next_id_);
    ++begins;
    Record(absl::StrCat("begin ", begin.query_id()));
    return std::unique_ptr<CloudQuery>(new Query(this, std::move(begin)));
  }

  absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> GetItemEmbeddings(
      const std::vector<int64_t>& ids, absl::Time) override {
    if (!available) return absl::UnavailableError("cloud is not connected");
    ++embedding_calls;
    duet::v1::GetItemEmbeddingsResponse response;
    response.set_model_version(model_->config().version());
    response.set_model_fingerprint(model_->fingerprint());
    for (int64_t id : ids) {
      auto* e = response.add_items();
      e->set_item_id(id);
      const std::vector<float> rows = ItemRows(*model_, id);
      e->mutable_rows()->Assign(rows.begin(), rows.end());
    }
    return response;
  }

  std::string ConnectionState() const override {
    return available ? "READY" : "TRANSIENT_FAILURE";
  }

 private:
  class Query : public CloudQuery {
   public:
    Query(FakeCloud* cloud, duet::v1::BeginQuery begin)
        : cloud_(cloud), begin_(std::move(begin)) {}
    uint64_t id() const override { return begin_.query_id(); }
    absl::Status SendUserVector(const duet::v1::UserVector& v) override {
      ++cloud_->vectors;
      cloud_->Record(absl::StrCat("vector ", v.query_id()));
      vector_ = v;
      return absl::OkStatus();
    }
    absl::StatusOr<duet::v1::Scores> Await(absl::Time) override {
      const common::Model& m = *cloud_->model_;
      std::vector<float> u(m.dims().user_out);
      if (vector_.fp32_data_size() > 0) {
        u.assign(vector_.fp32_data().begin(), vector_.fp32_data().end());
      } else {
        common::DequantizeAffineInt8(
            reinterpret_cast<const int8_t*>(vector_.int8_data().data()),
            static_cast<int>(u.size()), {vector_.scale(), vector_.zero_point()},
            u.data());
      }
      const auto& ids = begin_.candidate_ids();
      std::vector<float> ctr(ids.size());
      common::SplitModel split(&m);
      if (absl::Status s = split.ScoreItems(u.data(), ids, ctr.data());
          !s.ok()) {
        return s;
      }
      duet::v1::Scores scores;
      scores.set_query_id(begin_.query_id());
      const auto top =
          common::TopK(ids.data(), ctr.data(), ids.size(), begin_.top_k());
      for (size_t i = 0; i < top.size(); ++i) {
        auto* item = scores.add_items();
        item->set_item_id(top[i].item_id);
        item->set_ctr(top[i].ctr);
        if (static_cast<int>(i) < begin_.relay_top()) {
          auto* r = scores.add_relay();
          r->set_item_id(top[i].item_id);
          const std::vector<float> rows = ItemRows(m, top[i].item_id);
          r->mutable_rows()->Assign(rows.begin(), rows.end());
        }
      }
      return scores;
    }

   private:
    FakeCloud* cloud_;
    duet::v1::BeginQuery begin_;
    duet::v1::UserVector vector_;
  };

  void Record(std::string e) {
    absl::MutexLock lock(&mu_);
    events_.push_back(std::move(e));
  }

  const common::Model* model_;
  std::atomic<uint64_t> next_id_{0};
  absl::Mutex mu_;
  std::vector<std::string> events_;
};

}  // namespace duet::edge::internal

#endif  // DUET_EDGE_INTERNAL_FAKE_CLOUD_H_
