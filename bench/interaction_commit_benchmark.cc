// Durable interactions per second on the edge at 1, 8 and 64 concurrent
// writers (RecordInteraction with the rows at hand: no RPC), side by side:
//   per_record_sync — what duet-edge did before group commit: one writer at
//                     a time appends its log record and fdatasyncs it;
//   group_commit    — Recommender::RecordInteraction: writers queued behind
//                     a sync share the next one (edge/recommender.h).
// Both write a real interactions.log in a temporary directory (on the file
// system of $TMPDIR), rm2's rows (24 tables x 64 floats), compaction every
// 1000 records. Run:
//   build/bench/interaction_commit_benchmark --benchmark_counters_tabular=true
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "common/base/mutex.h"
#include "common/model/model.h"
#include "common/model/test_util.h"
#include "edge/cloud_client.h"
#include "edge/recommender.h"
#include "edge/state_store.h"
#include "edge/user_model.h"
#include "edge/user_state.h"

namespace duet::edge {
namespace {

// A cloud that answers GetItemEmbeddings from the model's own user tables.
class LocalRows : public CloudClient {
 public:
  explicit LocalRows(const common::Model* m) : m_(m) {}
  absl::StatusOr<std::unique_ptr<CloudQuery>> BeginQuery(duet::v1::BeginQuery,
                                                         absl::Time) override {
    return absl::UnimplementedError("no queries here");
  }
  absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> GetItemEmbeddings(
      const duet::v1::GetItemEmbeddingsRequest& request, absl::Time) override {
    duet::v1::GetItemEmbeddingsResponse r;
    r.set_model_version(m_->config().version());
    r.set_model_fingerprint(m_->fingerprint());
    const int d = m_->config().embedding_dim();
    for (int64_t item : request.item_ids()) {
      duet::v1::ItemEmbeddings* e = r.add_items();
      e->set_item_id(item);
      for (int t = 0; t < m_->config().user_tables_size(); ++t) {
        const float* row = static_cast<const float*>(m_->user_table(t).data) +
                           m_->catalog().HistoryKey(item, t) * d;
        e->mutable_rows()->Add(row, row + d);
      }
    }
    return r;
  }
  absl::Status GetEdgeModel(const duet::v1::GetEdgeModelRequest&, absl::Time,
                            const EdgeModelChunkFn&, CallCanceller*) override {
    return absl::UnimplementedError("no models here");
  }
  absl::StatusOr<duet::v1::ModelStatus> GetModelStatus(
      const duet::v1::GetModelStatusRequest&, absl::Time) override {
    return absl::UnimplementedError("no status here");
  }
  std::string ConnectionState() const override { return "READY"; }

 private:
  const common::Model* m_;
};

// One edge: model, state on disk, recommender. Rebuilt per benchmark run.
struct Edge {
  common::TempDir model_dir, state_dir;
  std::unique_ptr<common::Model> model;
  std::unique_ptr<UserModel> user_model;
  std::unique_ptr<UserState> state;
  std::unique_ptr<StateStore> store;
  std::unique_ptr<LocalRows> cloud;
  std::unique_ptr<Recommender> recommender;
  common::Mutex serial;  // per_record_sync's one-writer-at-a-time

  Edge() {
    if (!common::GenerateTestModel("rm2", 0.001, model_dir.path()).ok()) {
      std::abort();
    }
    common::LoadOptions lo;
    lo.parts.user_tables = true;
    model = *common::Model::Load(model_dir.path(), lo);
    user_model = *UserModel::Create(model.get(), {});
    UserState::Options so;
    so.executor = [](std::function<void()> f) { f(); };
    state = *UserState::Create(model.get(), so);
    StateStore::Options o;
    o.dir = state_dir.path();
    store = *StateStore::Open(o, *model, state.get());
    cloud = std::make_unique<LocalRows>(model.get());
    Recommender::Hooks hooks;
    hooks.store = store.get();
    Recommender::Options ro;
    ro.relay_cache_items = 0;
    recommender = std::make_unique<Recommender>(user_model.get(), cloud.get(),
                                                state.get(), hooks, ro);
  }
};

Edge* edge = nullptr;

void Setup(const benchmark::State&) { edge = new Edge(); }
void Teardown(const benchmark::State&) {
  delete edge;
  edge = nullptr;
}

void BM_PerRecordSync(benchmark::State& state) {
  int64_t item = state.thread_index();
  for (auto _ : state) {
    duet::v1::GetItemEmbeddingsRequest get;
    get.add_item_ids(item);
    auto rows = edge->cloud->GetItemEmbeddings(get, absl::InfiniteFuture());
    const std::vector<float> r(rows->items(0).rows().begin(),
                               rows->items(0).rows().end());
    common::MutexLock lock(&edge->serial);
    if (!edge->store->AppendInteraction(item, r).ok()) std::abort();
    edge->state->PushInteraction(item, r);
    if (edge->store->ShouldCompact()) {
      if (!edge->store->Compact(edge->state->Export()).ok()) std::abort();
    }
    item = (item + 64) % edge->model->catalog().num_items();
  }
  state.counters["interactions/s"] =
      benchmark::Counter(state.iterations(), benchmark::Counter::kIsRate);
}

void BM_GroupCommit(benchmark::State& state) {
  int64_t item = state.thread_index();
  duet::v1::RecordInteractionRequest request;
  for (auto _ : state) {
    request.set_item_id(item);
    if (!edge->recommender->RecordInteraction(request, absl::InfiniteFuture())
             .ok()) {
      std::abort();
    }
    item = (item + 64) % edge->model->catalog().num_items();
  }
  state.counters["interactions/s"] =
      benchmark::Counter(state.iterations(), benchmark::Counter::kIsRate);
}

// Both at 1, 8 and 64 writers, each run on a fresh edge.
void Writers(benchmark::internal::Benchmark* b) {
  b->Setup(Setup)
      ->Teardown(Teardown)
      ->Threads(1)
      ->Threads(8)
      ->Threads(64)
      ->UseRealTime()
      ->MinTime(2);
}
BENCHMARK(BM_PerRecordSync)->Apply(Writers);
BENCHMARK(BM_GroupCommit)->Apply(Writers);

}  // namespace
}  // namespace duet::edge

BENCHMARK_MAIN();
