// ModelRuntime: everything in duet-cloud that depends on the model version,
// built as one unit so a reload can swap it atomically: the model, its table
// placement and lookup engine, the item cache (keyed by this model's
// fingerprint), item model, combined top, calibrated strategy selector,
// monolithic evaluator and the pool of per-query buffers. The ScoringCore
// holds the current runtime by shared_ptr and every query keeps the runtime
// it was admitted under, so in-flight queries finish on their own model.
// Immutable after Create except the selector's counters, the cache and the
// buffer pool, which are thread-safe. Borrows the thread pool (it must
// outlive the runtime).
#ifndef DUET_CLOUD_MODEL_RUNTIME_H_
#define DUET_CLOUD_MODEL_RUNTIME_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cloud/cache_policy.h"
#include "cloud/combined_top.h"
#include "cloud/item_cache.h"
#include "cloud/item_model.h"
#include "cloud/item_table.h"
#include "cloud/lookup_engine.h"
#include "cloud/strategy_selector.h"
#include "cloud/table_placement.h"
#include "common/base/aligned_buffer.h"
#include "common/base/mutex.h"
#include "common/base/thread_pool.h"
#include "common/model/model.h"
#include "common/model/reference_model.h"

namespace duet::cloud {

class ModelRuntime {
 public:
  struct ItemTableStatus {
    uint32_t version = 0;
    ItemTable::Plan plan;    // rows 0: no table
    int64_t built_rows = 0;  // covered so far
    int64_t bytes = 0;
    double build_seconds = 0;  // so far, or in all once done
    bool done = false;         // built, failed or stopped (see status)
    absl::Status status;
  };

  struct Options {
    int max_candidates = 1024;
    int buffer_sets = 64;  // preallocated query buffers (max in flight)
    std::optional<LookupStrategy> force_lookup;
    std::optional<UserStrategy> force_user;
    PlacementOptions placement;  // num_workers must be the pool's size
    int64_t placement_sample_items = 20000;
    int64_t item_cache_entries = 100000;  // 0: no cache
    CacheMode item_cache_mode = CacheMode::kAuto;
    // The item embedding tables as the model stores them (fp32) or
    // quantized at load (int8; LookupEngine). Applies to the split path's
    // item side (and with it the cache and the item table); the monolithic
    // baseline reads the model's fp32 rows.
    ItemEmbeddingPrecision item_embeddings = ItemEmbeddingPrecision::kFp32;
    absl::Duration calibration_budget = absl::Seconds(3);
    // Precomputed item side (ItemTable): at most this many bytes of rows,
    // built after Create on a low-priority thread; 0: none.
    int64_t item_table_budget_bytes = 0;
    // fp32 or int8 rows (ItemTable::ChoosePlan): auto takes int8 only when
    // fp32 cannot cover the catalog within the budget.
    ItemTablePrecisionChoice item_table_precision =
        ItemTablePrecisionChoice::kAuto;
    // The items to cover, hottest first; empty: ids from 0 up. Only the
    // first rows the budget allows are used.
    std::vector<int64_t> item_table_order;
    // Called on the build thread after each chunk and at the end.
    std::function<void(const ItemTableStatus&)> on_item_table_progress;
    // A runtime serving on this machine with the same options (a release's
    // serving version), or null. When this model's architecture and table
    // placement equal its (new weights of the same shapes), its selector
    // choices and item-cache costs are reused instead of calibrating on
    // the pool beside its queries: they depend on nothing else. Only read
    // during Create.
    const ModelRuntime* calibrated_like = nullptr;
    // Builds every cloud MLP's oneDNN primitives for 1 .. max_candidates
    // rows during Create, on a low-priority thread, instead of on the first
    // query of each candidate count.
    bool prepare_kernels = true;
  };

  // Output buffers of one query, sized for max_candidates and this model.
  struct QueryBuffers {
    // z_width: the first combined layer's width when the runtime has an
    // item table of form kFirstLayer, else 0.
    QueryBuffers(int max_candidates, const common::ModelDims& d, int z_width)
        : v(static_cast<size_t>(max_candidates) * d.item_out),
          ctr(max_candidates),
          u(d.user_out),
          z(static_cast<size_t>(max_candidates) * z_width),
          miss_ids(max_candidates),
          miss_rows(max_candidates),
          slots(max_candidates) {}
    common::AlignedBuffer<float> v, ctr, u;
    // The item side as first-layer contributions (z, [n, z_width]) instead
    // of v, when the item table holds them.
    common::AlignedBuffer<float> z;
    common::AlignedBuffer<int64_t> miss_ids;
    common::AlignedBuffer<int32_t> miss_rows;
    common::AlignedBuffer<int64_t> slots;  // item-table rows per candidate
    bool has_z = false;                    // set by ComputeItemSide
  };

  // How a query's item side was served.
  struct ItemSideCounts {
    int table_rows = 0;  // from the item table
    int computed = 0;    // the rest (through the cache when used)
    int cache_hits = 0;  // of the computed ones
  };

  // Needs the cloud part of `model`. Plans the placement, builds the engine
  // and calibrates the selector on `pool` (as queries run) within
  // options.calibration_budget.
  // Starts the item table's build (if any) on its own thread before
  // returning; queries do not wait for it.
  static absl::StatusOr<std::shared_ptr<ModelRuntime>> Create(
      std::unique_ptr<const common::Model> model, const Options& options,
      common::ThreadPool* pool);
  // Stops and joins the item table's build.
  ~ModelRuntime();

  // The item side of n candidates into b (b->v, or b->z when the table
  // holds first-layer contributions): rows the item table covers are
  // copied, the rest computed by the item model (through the cache when
  // use_cache). Sets *counts (may be null).
  absl::Status ComputeItemSide(const int64_t* candidates, int n,
                               LookupStrategy strategy, bool use_cache,
                               QueryBuffers* b, ItemSideCounts* counts) const;
  // Rows [first, first + n) of the item side ComputeItemSide left in `from`
  // into rows [0, n) of `to` (a batch of queries split back into them).
  void CopyItemSide(const QueryBuffers& from, int first, int n,
                    QueryBuffers* to) const;
  // b->ctr from b->u and the item side ComputeItemSide left in b. Ignores
  // `strategy` when b holds contributions (memory load from the table).
  absl::Status Combine(int n, UserStrategy strategy, QueryBuffers* b) const;

  // Null when there is no item table (budget 0 or nothing fits).
  const ItemTable* item_table() const { return item_table_.get(); }
  ItemTableStatus item_table_status() const;
  // The chosen form and coverage, for the start-up log.
  std::string ItemTableDebugString() const;
  // Blocks until the item table's build ended (at once when none).
  void WaitForItemTable() const;

  const common::Model& model() const { return *model_; }
  const PlacementPlan& placement() const { return engine_->plan(); }
  const LookupEngine& lookup_engine() const { return *engine_; }
  ItemCache* cache() const { return cache_.get(); }  // null when disabled
  // Null when the cache is disabled.
  CachePolicy* cache_policy() const { return cache_policy_.get(); }
  // The measured costs behind the policy's h*, for the start-up log.
  std::string CacheDebugString() const;
  // How the selector and cache policy were set and how long preparing the
  // kernels took, for the load log: "calibrated in 0.52 s; kernels for N <=
  // 1024 prepared in 0.08 s" or "calibration reused from v1 (same
  // architecture); ...".
  std::string WarmupDebugString() const;
  // The version whose calibration this runtime reused; 0: calibrated.
  uint32_t calibration_from_version() const { return calibration_from_; }
  const ItemModel& item_model() const { return *item_model_; }
  const CombinedTop& combined_top() const { return *combined_; }
  StrategySelector& selector() const { return *selector_; }
  // Null unless the model has its edge and user-table parts.
  const common::MonolithicModel* monolithic() const {
    return monolithic_.get();
  }

  // A recycled buffer set, or a new one when all are taken.
  std::unique_ptr<QueryBuffers> TakeBuffers() const;
  void ReturnBuffers(std::unique_ptr<QueryBuffers> b) const;

 private:
  ModelRuntime(std::unique_ptr<const common::Model> model, Options options)
      : model_(std::move(model)), options_(std::move(options)) {}
  absl::Status Init(common::ThreadPool* pool);
  // Calibrates the selector (and the cache, CalibrateCache) on the pool.
  absl::Status Calibrate(common::ThreadPool* pool);
  // Measures t_row, c_hit and c_miss (see CachePolicy) and sets the policy.
  absl::Status CalibrateCache(common::ThreadPool* pool);
  // The cache policy from row_seconds_, hit_seconds_ and miss_seconds_.
  void SetCachePolicyFromCosts();
  // True when `prior`'s calibration holds for this model (see
  // Options::calibrated_like).
  bool SameArchitecture(const ModelRuntime& prior) const;
  // Every cloud MLP's primitives for 1 .. max_candidates rows.
  absl::Status PrepareKernels() const;
  absl::Status PlanItemTable();
  void BuildItemTable();
  // Item-table rows for n items (the build thread's ComputeRows).
  absl::Status ComputeTableRows(const int64_t* items, int n, float* rows,
                                std::vector<float>* f,
                                std::vector<float>* v) const;
  int z_width() const;

  const std::unique_ptr<const common::Model> model_;
  const Options options_;
  std::unique_ptr<LookupEngine> engine_;
  std::unique_ptr<ItemCache> cache_;
  std::unique_ptr<CachePolicy> cache_policy_;
  // Calibrated per-row costs in seconds (0 when not measured).
  double row_seconds_ = 0, hit_seconds_ = 0, miss_seconds_ = 0;
  std::unique_ptr<ItemModel> item_model_;
  std::unique_ptr<CombinedTop> combined_;
  std::unique_ptr<StrategySelector> selector_;
  std::unique_ptr<common::MonolithicModel> monolithic_;
  uint32_t calibration_from_ = 0;
  double calibration_seconds_ = 0, prepare_seconds_ = 0;

  std::unique_ptr<ItemTable> item_table_;
  std::atomic<bool> stop_build_{false};
  std::atomic<int64_t> build_ns_{0};
  mutable common::Mutex build_mu_;
  absl::Status build_status_ ABSL_GUARDED_BY(build_mu_);
  bool build_done_ ABSL_GUARDED_BY(build_mu_) = false;
  std::thread builder_;  // joined by the destructor

  mutable common::Mutex buffers_mu_;
  mutable std::vector<std::unique_ptr<QueryBuffers>> free_buffers_
      ABSL_GUARDED_BY(buffers_mu_);
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_MODEL_RUNTIME_H_
