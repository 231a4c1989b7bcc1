// ScoringCore: the cloud side of Duet without any RPC code. Owns the worker
// pool and the current ModelRuntime (model, placement, lookup engine, item
// cache, item model, combined top, strategy selector), and runs queries on
// the pool:
//  * Begin() validates and admits a query (bounded in flight, else
//    RESOURCE_EXHAUSTED at once) under the current runtime, which the query
//    keeps to the end, and starts its item side immediately — or queues it
//    for the item-side batcher, which runs the queued item sides of one
//    runtime as one pass (item_batch_max_candidates);
//  * ProvideUserVector() checks the model version, dequantizes u and, once
//    the item side is done, runs the combined top MLP + top-k + relay;
//  * every admitted query ends exactly once through its Done callback: with
//    Scores, the first error, CANCELLED (Cancel) or DEADLINE_EXCEEDED (its
//    deadline passed; pending work for it is skipped).
// MonolithicScore and GetItemEmbeddings (scoring_side_rpcs.cc) run on the
// same pool. User vectors are checked by user_vector_checks.h.
// Several model versions are served side by side (ServedModels): each query
// is routed by the model version its BeginQuery (or user vector) names and
// keeps that runtime to the end. AddVersion() builds a runtime for a new
// model while queries keep running and puts it beside the others;
// ApplyVersionPolicy() retires versions the policy no longer keeps once they
// have been idle for its grace period.
// Thread-safe. Done callbacks run on pool threads, the deadline thread or
// the caller's thread (ProvideUserVector, Cancel), and must not call back
// into the same query.
#ifndef DUET_CLOUD_SCORING_CORE_H_
#define DUET_CLOUD_SCORING_CORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "cloud/cloud_metrics.h"
#include "cloud/model_runtime.h"
#include "cloud/release_policy.h"
#include "cloud/served_models.h"
#include "common/base/batch_queue.h"
#include "common/base/clock.h"
#include "common/base/deadline_queue.h"
#include "common/base/mutex.h"
#include "common/base/thread_pool.h"
#include "common/model/model.h"
#include "duet/v1/scoring.pb.h"

namespace duet::common {
class EnergyMeter;
}  // namespace duet::common

namespace duet::cloud {

struct ScoringCoreOptions {
  int workers = 0;  // 0: std::thread::hardware_concurrency()
  int max_inflight = 64;
  int max_candidates = 1024;
  absl::Duration default_timeout = absl::Seconds(2);
  std::optional<LookupStrategy> force_lookup;  // nullopt: selector decides
  std::optional<UserStrategy> force_user;
  PlacementOptions placement;  // num_workers is set from `workers`
  // Catalog items sampled for the planner's access statistics.
  int64_t placement_sample_items = 20000;
  int64_t item_cache_entries = 100000;           // 0 disables the cache
  CacheMode item_cache_mode = CacheMode::kAuto;  // see CachePolicy
  // fp32 or int8 item embedding tables (ModelRuntime::Options).
  ItemEmbeddingPrecision item_embeddings = ItemEmbeddingPrecision::kFp32;
  absl::Duration calibration_budget = absl::Seconds(3);
  // The selector's calibration for a reloaded model: it runs beside live
  // queries, so it is kept shorter.
  absl::Duration reload_calibration_budget = absl::Milliseconds(500);
  // Prepares every version before it takes traffic: its oneDNN primitives
  // for each candidate count (ModelRuntime::Options::prepare_kernels) and,
  // for a release of the newest version's architecture, that version's
  // calibration instead of a new one beside live queries. false: the
  // behaviour before (calibration on the pool, primitives built by the
  // first queries), kept for comparisons.
  bool warmup = true;
  // Queries of at most this many candidates run on the calling (gRPC)
  // thread instead of the worker pool: the item side in Begin, the combine
  // in ProvideUserVector. 0: every query runs on the pool. Tiny queries
  // then pay no thread hand-off (docs/BENCHMARKS.md, small queries).
  int inline_max_candidates = 0;
  // Cross-query batching of the item side: concurrent queries of at most
  // this many candidates (each) go through one queue, and a worker runs the
  // item sides of the queued queries of one model version as one pass of up
  // to this many candidates (the item model's MLPs then see one larger M),
  // then splits the rows back. 0: off, every item side runs alone. Takes
  // precedence over inline_max_candidates for the item side. At most
  // max_candidates.
  int item_batch_max_candidates = 0;
  // How long the worker that takes the oldest queued item side waits for
  // more to fill the batch (Triton's max_queue_delay); never past the point
  // where a queued query has used half of its time to the deadline. Zero:
  // greedy, a batch is what queued while the workers were busy.
  absl::Duration item_batch_max_queue_delay = absl::ZeroDuration();
  // Precomputed item side (ModelRuntime::Options): bytes of rows per
  // version, 0: none. The first version builds it while serving; a
  // reloaded one builds it before it is served.
  int64_t item_table_budget_bytes = 0;
  ItemTablePrecisionChoice item_table_precision =
      ItemTablePrecisionChoice::kAuto;
  // Called once per version when its item table's build ends (on the build
  // thread; the server logs it). May be empty.
  std::function<void(const ModelRuntime::ItemTableStatus&)> on_item_table_built;
  // Which versions stay served (latest K or a list) and the idle grace
  // period before one outside the policy is retired.
  VersionPolicy versions;
  // Null: a private registry (tests).
  std::shared_ptr<prometheus::Registry> registry;
  // Deadlines and stage timings; null: the real clock. Tests pass a
  // FakeClock to expire queries without sleeping.
  common::Clock* clock = nullptr;
  // Per-query energy attribution (duet_query_energy_joules{side="cloud"}):
  // the CPU time of each query's compute, on every worker it ran on. Not
  // owned; may be null.
  common::EnergyMeter* energy = nullptr;
};

class ScoringCore {
 public:
  class Query;
  using Done = std::function<void(absl::StatusOr<duet::v1::Scores>)>;
  using MonolithicDone =
      std::function<void(absl::StatusOr<duet::v1::ScoreResponse>)>;
  using EmbeddingsDone =
      std::function<void(absl::StatusOr<duet::v1::GetItemEmbeddingsResponse>)>;

  // The model needs its cloud and user_tables parts (the latter for the
  // relay, MonolithicScore and GetItemEmbeddings; MonolithicScore also
  // needs the edge part). Calibrates the selector before returning.
  static absl::StatusOr<std::unique_ptr<ScoringCore>> Create(
      std::unique_ptr<const common::Model> model, ScoringCoreOptions options);
  // Stops admission, fails open queries with UNAVAILABLE, joins the pool.
  ~ScoringCore();

  // A query's shape as BeginQuery carries it; unary Score builds one from
  // its own request, without copying the candidates.
  struct QuerySpec {
    uint64_t query_id = 0;
    absl::Span<const int64_t> candidates;  // read during Begin only
    int top_k = 0;
    int relay_top = 0;
    int64_t timeout_us = 0;          // 0: the default timeout
    uint32_t model_version = 0;      // 0: the newest served version
    uint64_t model_fingerprint = 0;  // 0: any of model_version
    static QuerySpec Of(const duet::v1::BeginQuery& begin);
  };

  // Validates and admits; starts the item side (on the pool, or here for a
  // query of at most inline_max_candidates). Never calls `done` itself: an
  // error of an item side run here is reported from the pool. On error
  // nothing started and `done` is dropped. `deadline` is absl::InfiniteFuture()
  // for "use spec.timeout_us or the default".
  absl::StatusOr<std::shared_ptr<Query>> Begin(const QuerySpec& spec,
                                               absl::Time deadline, Rpc rpc,
                                               Done done);
  absl::StatusOr<std::shared_ptr<Query>> Begin(
      const duet::v1::BeginQuery& begin, absl::Time deadline, Rpc rpc,
      Done done) {
    return Begin(QuerySpec::Of(begin), deadline, rpc, std::move(done));
  }
  // Completes `query` (on this thread for a query of at most
  // inline_max_candidates whose item side is done, else on the pool) or
  // fails it ( a vector of another model version than
  // the query was routed to is FAILED_PRECONDITION, bad length / NaN / Inf /
  // bad quantization is INVALID_ARGUMENT, a second vector for the query
  // INVALID_ARGUMENT).
  void ProvideUserVector(const std::shared_ptr<Query>& query,
                         const duet::v1::UserVector& user_vector);
  // Ends the query with CANCELLED (no-op if it already ended).
  void Cancel(const std::shared_ptr<Query>& query);
  // The checks ProvideUserVector applies, without a query, against the
  // served version the vector names (FAILED_PRECONDITION when none).
  absl::Status ValidateUserVector(const duet::v1::UserVector& uv) const;

  void MonolithicScore(const duet::v1::MonolithicScoreRequest& request,
                       absl::Time deadline, MonolithicDone done);
  void GetItemEmbeddings(const duet::v1::GetItemEmbeddingsRequest& request,
                         absl::Time deadline, EmbeddingsDone done);

  // Graceful shutdown: new queries get UNAVAILABLE; waits until none is in
  // flight or `deadline`; returns how many were still in flight.
  int Drain(absl::Time deadline);

  // Builds a runtime for `model` (placement, engine, a fresh item cache,
  // selector calibrated within options.reload_calibration_budget) while
  // queries keep running, reads its edge part (for GetEdgeModel) and serves
  // it beside the versions already served; then applies the version policy
  // with the versions pinned last. On error nothing changes.
  // ALREADY_EXISTS when its signature is served. Serialized.
  absl::StatusOr<std::shared_ptr<ModelRuntime>> AddVersion(
      std::unique_ptr<const common::Model> model);
  // Enforces options.versions at the clock's now, never retiring `pinned`
  // (e.g. the release policy's targets); returns the versions retired.
  std::vector<ServedModels::Retired> ApplyVersionPolicy(
      const std::vector<uint32_t>& pinned);

  const ServedModels& served() const { return *served_; }
  // The release policy (which version devices should run); its versions are
  // pinned (never retired while named). Applies the version policy.
  void SetReleasePolicy(std::shared_ptr<const ReleasePolicy> policy);
  std::shared_ptr<const ReleasePolicy> release_policy() const;
  // The version `device_id` should run (Scores.target), or nullopt when the
  // policy names a version that is not served.
  std::optional<duet::v1::ModelTarget> TargetFor(
      std::string_view device_id) const;
  // The newest served version: queries that name no version get it.
  std::shared_ptr<ModelRuntime> runtime() const;
  // Of the newest runtime: valid until it is retired.
  const common::Model& model() const { return runtime()->model(); }
  const PlacementPlan& placement() const { return runtime()->placement(); }
  const StrategySelector& selector() const { return runtime()->selector(); }

  const ScoringCoreOptions& options() const { return options_; }
  CloudMetrics& metrics() { return *metrics_; }
  common::ThreadPool& pool() { return *pool_; }
  int inflight() const { return inflight_.load(); }

 private:
  explicit ScoringCore(ScoringCoreOptions options)
      : options_(std::move(options)) {}
  absl::Status Init(std::unique_ptr<const common::Model> model);
  ModelRuntime::Options RuntimeOptions(
      absl::Duration calibration,
      const ModelRuntime* calibrated_like = nullptr) const;
  void SetCacheBreakEven(const ModelRuntime& rt);
  // Adds `rt` to served_ with its edge part and its query counter.
  void Serve(std::shared_ptr<ModelRuntime> rt);
  // served_->Apply with pinned_, counted and published.
  std::vector<ServedModels::Retired> RetireOutsidePolicy()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(reload_mu_);
  // duet_model_versions from served_.
  void PublishVersions();
  absl::Status ValidateBegin(const QuerySpec& spec,
                             const ModelRuntime& rt) const;
  absl::Status Admit(Rpc rpc);
  void Release();
  // A query its holder dropped before it ended: counted CANCELLED, slot
  // freed, no reply.
  void Abandon(Rpc rpc);
  // `defer`: hand the rest to the pool — an error's Finish and the combine
  // (Begin must not end the query itself; a batch's later queries must not
  // wait behind its first one's combine).
  void RunItemSide(const std::shared_ptr<Query>& q, bool defer = false);
  // The runtime's ComputeItemSide with the selector's strategy and the
  // cache policy's choice, counted in the metrics.
  absl::Status ComputeItemSide(const ModelRuntime& rt,
                               const int64_t* candidates, int n,
                               ModelRuntime::QueryBuffers* b,
                               LookupStrategy* strategy,
                               ModelRuntime::ItemSideCounts* counts);
  // Records a query's finished item side (timings, or the error) and starts
  // its combine when its user vector is there.
  void ItemSideDone(const std::shared_ptr<Query>& q, absl::Status status,
                    absl::Time pick, absl::Time done, LookupStrategy strategy,
                    int cache_hits, int batch_queries, bool defer);
  // The batcher's pool task: takes a batch of queued item sides and runs it.
  void RunItemBatch();
  // Several queries' item sides (one runtime) as one ComputeItemSide.
  void RunBatchedItemSide(const std::vector<std::shared_ptr<Query>>& queries);
  bool RunsInline(const Query& q) const;
  void RunCombine(const std::shared_ptr<Query>& q);
  // The combined top MLP, top-k and relay of a query whose two sides are done.
  absl::StatusOr<duet::v1::Scores> Combine(Query& q);
  void Finish(Query& q, absl::StatusOr<duet::v1::Scores> result);
  // Ends the expired queries with DEADLINE_EXCEEDED (the deadline queue's
  // callback).
  void Expire(std::vector<std::weak_ptr<Query>> expired);
  // The side RPCs' ending (scoring_side_rpcs.cc): Reject counts a request
  // refused before admission; RunSideRpc admits, runs `work` on the pool
  // (DEADLINE_EXCEEDED when the deadline passed before a worker picked it
  // up), counts the result, frees the slot and replies.
  template <typename Response>
  void Reject(Rpc rpc, absl::Status status,
              const std::function<void(absl::StatusOr<Response>)>& done);
  template <typename Response>
  void RunSideRpc(
      Rpc rpc, absl::Time deadline,
      std::function<absl::StatusOr<Response>(absl::Time start, absl::Time pick)>
          work,
      std::function<void(absl::StatusOr<Response>)> done);
  static void FillRelay(
      const common::Model& model, const int64_t* items, int n,
      google::protobuf::RepeatedPtrField<duet::v1::ItemEmbeddings>* out);

  ScoringCoreOptions options_;
  // Shared with the item table builders, which may outlive the core.
  std::shared_ptr<CloudMetrics> metrics_;
  std::unique_ptr<common::ThreadPool> pool_;

  std::unique_ptr<ServedModels> served_;
  common::Mutex reload_mu_;  // serializes AddVersion and ApplyVersionPolicy
  std::vector<uint32_t> pinned_ ABSL_GUARDED_BY(reload_mu_);
  mutable common::Mutex release_mu_;
  std::shared_ptr<const ReleasePolicy> release_ ABSL_GUARDED_BY(release_mu_) =
      std::make_shared<const ReleasePolicy>();

  std::atomic<int> inflight_{0};
  std::atomic<bool> draining_{false};

  common::Clock* clock_ = nullptr;
  std::unique_ptr<common::DeadlineQueue<std::weak_ptr<Query>>> deadlines_;
  // Null unless item_batch_max_candidates > 0.
  std::unique_ptr<common::BatchQueue<std::shared_ptr<Query>>> item_batches_;

  friend class Query;
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_SCORING_CORE_H_
