// CloudMetrics: the Prometheus series of duet-cloud (DESIGN.md §6), built in
// a caller-provided registry. Series of fixed label sets are created up
// front so recording is a pointer dereference plus an atomic add.
// Thread-safe.
#ifndef DUET_CLOUD_CLOUD_METRICS_H_
#define DUET_CLOUD_CLOUD_METRICS_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "cloud/combined_top.h"
#include "cloud/lookup_engine.h"
#include "cloud/table_placement.h"
#include "common/base/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace duet::cloud {

enum class Rpc {
  kScoringSession,
  kScore,
  kMonolithicScore,
  kGetItemEmbeddings,
  kGetEdgeModel,
  kGetModelStatus
};
inline constexpr int kNumRpcs = 6;
const char* RpcName(Rpc rpc);

enum class Stage { kQueue, kItemModel, kUserWait, kCombine, kTotal };
inline constexpr int kNumStages = 5;

class CloudMetrics {
 public:
  explicit CloudMetrics(std::shared_ptr<prometheus::Registry> registry);

  void ObserveStage(Rpc rpc, Stage stage, double seconds);
  void CountQuery(Rpc rpc, absl::StatusCode code);
  void AddCandidates(int64_t n) {
    candidates_->Increment(static_cast<double>(n));
  }
  void AddInflight(double delta) { inflight_->Increment(delta); }
  // reason: "inflight" (admission bound) | "shutdown".
  void CountRejected(const char* reason);
  void CountLookup(LookupStrategy s) {
    lookup_[static_cast<int>(s)]->Increment();
  }
  void CountUser(UserStrategy s) { user_[static_cast<int>(s)]->Increment(); }
  void CountCache(int64_t hits, int64_t misses);
  // A query's item side went through the cache or bypassed it.
  void CountCacheQuery(bool used) {
    (used ? cache_used_ : cache_bypassed_)->Increment();
  }
  // The runtime's break-even hit ratio (CachePolicy), 0 for "always".
  void SetCacheBreakEven(double ratio) { cache_break_even_->Set(ratio); }
  void SetCacheEntries(int64_t n) {
    cache_entries_->Set(static_cast<double>(n));
  }
  // The precomputed item side of one model version (ItemTable), labelled
  // {version}: duet_item_table_coverage_ratio (items covered so far /
  // catalog), duet_item_table_build_progress_ratio (rows built / planned),
  // duet_item_table_build_seconds, duet_item_table_bytes.
  void SetItemTable(uint32_t version, int64_t num_items, int64_t built,
                    int64_t planned, int64_t bytes, double seconds);
  // Removes a retired version's item-table series (its table is gone).
  void RemoveItemTable(uint32_t version);
  // duet_item_table_candidates_total{source="table"|"computed"}.
  void CountItemTable(int64_t from_table, int64_t computed) {
    if (from_table > 0) table_rows_->Increment(static_cast<double>(from_table));
    if (computed > 0) computed_rows_->Increment(static_cast<double>(computed));
  }
  // duet_item_batch_queries / duet_item_batch_candidates: one observation
  // per pass of the item-side batcher (ScoringCore).
  void ObserveItemBatch(int queries, int candidates) {
    batch_queries_->Observe(queries);
    batch_candidates_->Observe(candidates);
  }
  // duet_placement_tables{mode} and duet_placement_table_info{table,mode};
  // a new plan (model reload) replaces the previous plan's series.
  void SetPlacement(const PlacementPlan& plan);
  // duet_model_reloads_total{result="ok"|"failed"}.
  void CountReload(bool ok) {
    (ok ? reloads_ok_ : reloads_failed_)->Increment();
  }
  // duet_model_version_queries_total{version}: the counter of one version's
  // routed queries (kept across its retirement: counters never go back).
  prometheus::Counter* VersionQueries(uint32_t version);
  // duet_model_versions{version,signature,state}: 1 per served version;
  // replaces the previous set.
  struct ServedVersion {
    uint32_t version = 0;
    std::string signature;
    std::string state;
  };
  void SetServedVersions(const std::vector<ServedVersion>& versions);
  // duet_model_versions_retired_total.
  void CountRetired(int n) { retired_->Increment(n); }
  // duet_edge_model_bytes_sent_total: GetEdgeModel's payload.
  void AddEdgeModelBytes(int64_t n) {
    edge_model_bytes_->Increment(static_cast<double>(n));
  }

  const std::shared_ptr<prometheus::Registry>& registry() const {
    return registry_;
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::array<std::array<prometheus::Histogram*, kNumStages>, kNumRpcs> stage_{};
  prometheus::Family<prometheus::Counter>* queries_ = nullptr;
  prometheus::Family<prometheus::Counter>* rejected_ = nullptr;
  prometheus::Counter* candidates_ = nullptr;
  prometheus::Gauge* inflight_ = nullptr;
  std::array<prometheus::Counter*, 2> lookup_{}, user_{};
  prometheus::Counter* cache_hits_ = nullptr;
  prometheus::Counter* cache_misses_ = nullptr;
  prometheus::Counter* cache_used_ = nullptr;
  prometheus::Counter* cache_bypassed_ = nullptr;
  prometheus::Gauge* cache_break_even_ = nullptr;
  prometheus::Gauge* cache_entries_ = nullptr;
  prometheus::Family<prometheus::Gauge>* table_coverage_ = nullptr;
  prometheus::Family<prometheus::Gauge>* table_progress_ = nullptr;
  prometheus::Family<prometheus::Gauge>* table_seconds_ = nullptr;
  prometheus::Family<prometheus::Gauge>* table_bytes_ = nullptr;
  prometheus::Counter* table_rows_ = nullptr;
  prometheus::Counter* computed_rows_ = nullptr;
  prometheus::Histogram* batch_queries_ = nullptr;
  prometheus::Histogram* batch_candidates_ = nullptr;
  prometheus::Family<prometheus::Gauge>* placement_tables_ = nullptr;
  prometheus::Family<prometheus::Gauge>* placement_info_ = nullptr;
  common::Mutex placement_mu_;
  std::vector<prometheus::Gauge*> placement_series_
      ABSL_GUARDED_BY(placement_mu_);
  prometheus::Counter* reloads_ok_ = nullptr;
  prometheus::Counter* reloads_failed_ = nullptr;
  prometheus::Family<prometheus::Counter>* version_queries_ = nullptr;
  prometheus::Family<prometheus::Gauge>* versions_ = nullptr;
  common::Mutex versions_mu_;
  std::vector<prometheus::Gauge*> version_series_ ABSL_GUARDED_BY(versions_mu_);
  prometheus::Counter* retired_ = nullptr;
  prometheus::Counter* edge_model_bytes_ = nullptr;
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_CLOUD_METRICS_H_
