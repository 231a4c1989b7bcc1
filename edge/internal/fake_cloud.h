// An in-process CloudClient for tests: scores with common::SplitModel on the
// full model (user vector dequantized like the cloud does), relays the
// user-table rows of returned items, counts every call and records their
// order. Serves more versions with Serve() (rows and scores by the
// requests' model_version; 0: the newest), announces `target` in Scores,
// streams a served version's edge part from its directory (GetEdgeModel;
// `mutate_chunk` lets a test corrupt it) and answers GetModelStatus.
// Thread-safe.
#ifndef DUET_EDGE_INTERNAL_FAKE_CLOUD_H_
#define DUET_EDGE_INTERNAL_FAKE_CLOUD_H_

#include <algorithm>
#include <atomic>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/mutex.h"
#include "common/kernels/quantize.h"
#include "common/kernels/top_k.h"
#include "common/model/model.h"
#include "common/model/model_config.h"
#include "common/model/reference_model.h"
#include "edge/cloud_client.h"
#include "edge/internal/test_model.h"
#include "edge/user_state.h"
#include "gtest/gtest.h"

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

// Expects `got` to hold the history of `items` (oldest first) as a state of
// `model` fed their rows would: the same item ids and, per user table, the
// same pooled sum of the filled slots (within 1e-4; slot order may differ).
inline void ExpectHistoryOf(const common::Model& model,
                            const std::vector<int64_t>& items,
                            const UserState& got) {
  auto fed = NewInlineUserState(model);
  for (int64_t item : items) fed->PushInteraction(item, ItemRows(model, item));
  const UserStateData a = got.Export(), b = fed->Export();
  EXPECT_EQ(a.history_items, b.history_items);
  const int d = model.config().embedding_dim();
  ASSERT_EQ(a.tables.size(), b.tables.size());
  for (size_t t = 0; t < b.tables.size(); ++t) {
    ASSERT_EQ(a.tables[t].filled, b.tables[t].filled) << t;
    std::vector<double> x(d), y(d);
    for (int i = 0; i < b.tables[t].filled; ++i) {
      for (int k = 0; k < d; ++k) {
        x[k] += a.tables[t].slots[i * d + k];
        y[k] += b.tables[t].slots[i * d + k];
      }
    }
    for (int k = 0; k < d; ++k) EXPECT_NEAR(x[k], y[k], 1e-4) << t;
  }
}

class FakeCloud : public CloudClient {
 public:
  explicit FakeCloud(const common::Model* model) { Serve(model); }

  std::atomic<int> begins{0}, vectors{0}, embedding_calls{0},
      edge_model_calls{0}, status_calls{0};
  std::atomic<bool> available{true};
  // Bytes per GetEdgeModel data chunk.
  std::atomic<int64_t> chunk_bytes{1 << 20};

  // Also serves `model` (a version of the same name); the newest is the
  // default of requests with model_version 0.
  void Serve(const common::Model* model) {
    common::MutexLock lock(&mu_);
    served_[model->config().version()] = model;
  }
  // Announced in every Scores and QueryError from now on (nullptr: none).
  void SetTarget(const common::Model* model) {
    common::MutexLock lock(&mu_);
    target_ = model;
  }
  // Called on every chunk (the config one first) before it is delivered
  // (may block, or change the chunk).
  void SetChunkHook(std::function<void(duet::v1::EdgeModelChunk*)> hook) {
    common::MutexLock lock(&mu_);
    chunk_hook_ = std::move(hook);
  }

  // Called with every GetItemEmbeddings request before it is answered (may
  // call back into the edge).
  void SetEmbeddingsHook(
      std::function<void(const duet::v1::GetItemEmbeddingsRequest&)> hook) {
    common::MutexLock lock(&mu_);
    embeddings_hook_ = std::move(hook);
  }

  std::vector<std::string> events() {
    common::MutexLock lock(&mu_);
    return events_;
  }
  std::vector<duet::v1::BeginQuery> begun() {
    common::MutexLock lock(&mu_);
    return begun_;
  }
  std::vector<duet::v1::GetItemEmbeddingsRequest> embedding_requests() {
    common::MutexLock lock(&mu_);
    return embedding_requests_;
  }

  absl::StatusOr<std::unique_ptr<CloudQuery>> BeginQuery(
      duet::v1::BeginQuery begin, absl::Time) override {
    if (!available) return absl::UnavailableError("cloud is not connected");
    begin.set_query_id(++next_id_);
    ++begins;
    Record(absl::StrCat("begin ", begin.query_id()));
    const common::Model* model;
    duet::v1::ModelTarget target;
    {
      common::MutexLock lock(&mu_);
      begun_.push_back(begin);
      model = ServedLocked(begin.model_version());
      target = TargetLocked();
    }
    return std::unique_ptr<CloudQuery>(
        new Query(this, std::move(begin), model, target));
  }

  absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> GetItemEmbeddings(
      const duet::v1::GetItemEmbeddingsRequest& request, absl::Time) override {
    if (!available) return absl::UnavailableError("cloud is not connected");
    ++embedding_calls;
    const common::Model* model;
    std::function<void(const duet::v1::GetItemEmbeddingsRequest&)> hook;
    {
      common::MutexLock lock(&mu_);
      embedding_requests_.push_back(request);
      model = ServedLocked(request.model_version());
      hook = embeddings_hook_;
    }
    if (hook) hook(request);
    if (model == nullptr) return NotServed(request.model_version());
    duet::v1::GetItemEmbeddingsResponse response;
    response.set_model_version(model->config().version());
    response.set_model_fingerprint(model->fingerprint());
    for (int64_t id : request.item_ids()) {
      auto* e = response.add_items();
      e->set_item_id(id);
      const std::vector<float> rows = ItemRows(*model, id);
      e->mutable_rows()->Assign(rows.begin(), rows.end());
    }
    return response;
  }

  absl::Status GetEdgeModel(const duet::v1::GetEdgeModelRequest& request,
                            absl::Time, const EdgeModelChunkFn& on_chunk,
                            CallCanceller* canceller) override {
    if (!available) return absl::UnavailableError("cloud is not connected");
    ++edge_model_calls;
    const common::Model* model;
    std::function<void(duet::v1::EdgeModelChunk*)> hook;
    {
      common::MutexLock lock(&mu_);
      model = request.model_version() == 0
                  ? target_
                  : ServedLocked(request.model_version());
      hook = chunk_hook_;
    }
    if (model == nullptr) return NotServed(request.model_version());
    duet::v1::EdgeModelChunk first;
    auto config = common::ReadConfig(model->dir() + "/" + common::kConfigFile);
    if (!config.ok()) return config.status();
    *first.mutable_config() = *config;
    std::vector<std::string> files = {common::kEdgeFile};
    const std::string int8_file = common::Int8TensorFile(*config);
    if (!int8_file.empty() && int8_file != common::kEdgeFile) {
      files.push_back(int8_file);
    }
    first.mutable_files()->Assign(files.begin(), files.end());
    if (hook) hook(&first);
    if (absl::Status s = on_chunk(first); !s.ok()) return s;
    for (const std::string& name : files) {
      std::ifstream in(model->dir() + "/" + name, std::ios::binary);
      std::stringstream bytes;
      bytes << in.rdbuf();
      const std::string data = bytes.str();
      for (size_t offset = 0; offset < data.size();
           offset += static_cast<size_t>(chunk_bytes.load())) {
        duet::v1::EdgeModelChunk chunk;
        chunk.set_file(name);
        chunk.set_offset(static_cast<int64_t>(offset));
        chunk.set_data(data.substr(offset, chunk_bytes.load()));
        if (hook) hook(&chunk);
        if (!available) return absl::UnavailableError("the stream broke");
        if (canceller != nullptr && canceller->cancelled()) {
          return absl::CancelledError("GetEdgeModel: cancelled");
        }
        if (absl::Status s = on_chunk(chunk); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<duet::v1::ModelStatus> GetModelStatus(
      const duet::v1::GetModelStatusRequest&, absl::Time) override {
    if (!available) return absl::UnavailableError("cloud is not connected");
    ++status_calls;
    common::MutexLock lock(&mu_);
    duet::v1::ModelStatus status;
    for (auto it = served_.rbegin(); it != served_.rend(); ++it) {
      duet::v1::ServedVersion* v = status.add_versions();
      v->set_version(it->first);
      v->set_signature(it->second->config().signature());
      v->set_state("AVAILABLE");
      status.set_model_name(it->second->config().name());
    }
    *status.mutable_target() = TargetLocked();
    return status;
  }

  std::string ConnectionState() const override {
    return available ? "READY" : "TRANSIENT_FAILURE";
  }

 private:
  class Query : public CloudQuery {
   public:
    Query(FakeCloud* cloud, duet::v1::BeginQuery begin,
          const common::Model* model, duet::v1::ModelTarget target)
        : cloud_(cloud),
          begin_(std::move(begin)),
          model_(model),
          target_(std::move(target)) {}
    uint64_t id() const override { return begin_.query_id(); }
    absl::Status SendUserVector(const duet::v1::UserVector& v) override {
      ++cloud_->vectors;
      cloud_->Record(absl::StrCat("vector ", v.query_id()));
      vector_ = v;
      return absl::OkStatus();
    }
    absl::StatusOr<duet::v1::Scores> Await(absl::Time) override {
      if (model_ == nullptr) return NotServed(begin_.model_version());
      const common::Model& m = *model_;
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
      if (target_.version() != 0) *scores.mutable_target() = target_;
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
    const common::Model* model_;
    duet::v1::ModelTarget target_;
    duet::v1::UserVector vector_;
  };

  static absl::Status NotServed(uint32_t version) {
    return absl::FailedPreconditionError(
        absl::StrCat("model version ", version, " is not served"));
  }
  const common::Model* ServedLocked(uint32_t version)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (served_.empty()) return nullptr;
    if (version == 0) return served_.rbegin()->second;
    auto it = served_.find(version);
    return it == served_.end() ? nullptr : it->second;
  }
  duet::v1::ModelTarget TargetLocked() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    duet::v1::ModelTarget t;
    if (target_ != nullptr) {
      t.set_version(target_->config().version());
      t.set_fingerprint(target_->fingerprint());
    }
    return t;
  }

  void Record(std::string e) {
    common::MutexLock lock(&mu_);
    events_.push_back(std::move(e));
  }

  std::atomic<uint64_t> next_id_{0};
  common::Mutex mu_;
  std::vector<std::string> events_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, const common::Model*> served_ ABSL_GUARDED_BY(mu_);
  const common::Model* target_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::function<void(duet::v1::EdgeModelChunk*)> chunk_hook_
      ABSL_GUARDED_BY(mu_);
  std::function<void(const duet::v1::GetItemEmbeddingsRequest&)>
      embeddings_hook_ ABSL_GUARDED_BY(mu_);
  std::vector<duet::v1::BeginQuery> begun_ ABSL_GUARDED_BY(mu_);
  std::vector<duet::v1::GetItemEmbeddingsRequest> embedding_requests_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace duet::edge::internal

#endif  // DUET_EDGE_INTERNAL_FAKE_CLOUD_H_
