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

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cloud/cache_policy.h"
#include "cloud/combined_top.h"
#include "cloud/item_cache.h"
#include "cloud/item_model.h"
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
  struct Options {
    int max_candidates = 1024;
    int buffer_sets = 64;  // preallocated query buffers (max in flight)
    std::optional<LookupStrategy> force_lookup;
    std::optional<UserStrategy> force_user;
    PlacementOptions placement;  // num_workers must be the pool's size
    int64_t placement_sample_items = 20000;
    int64_t item_cache_entries = 100000;  // 0: no cache
    CacheMode item_cache_mode = CacheMode::kAuto;
    absl::Duration calibration_budget = absl::Seconds(3);
  };

  // Output buffers of one query, sized for max_candidates and this model.
  struct QueryBuffers {
    QueryBuffers(int max_candidates, const common::ModelDims& d)
        : v(static_cast<size_t>(max_candidates) * d.item_out),
          ctr(max_candidates),
          u(d.user_out) {}
    common::AlignedBuffer<float> v, ctr, u;
  };

  // Needs the cloud part of `model`. Plans the placement, builds the engine
  // and calibrates the selector on `pool` (as queries run) within
  // options.calibration_budget.
  static absl::StatusOr<std::shared_ptr<ModelRuntime>> Create(
      std::unique_ptr<const common::Model> model, const Options& options,
      common::ThreadPool* pool);

  const common::Model& model() const { return *model_; }
  const PlacementPlan& placement() const { return engine_->plan(); }
  const LookupEngine& lookup_engine() const { return *engine_; }
  ItemCache* cache() const { return cache_.get(); }  // null when disabled
  // Null when the cache is disabled.
  CachePolicy* cache_policy() const { return cache_policy_.get(); }
  // The measured costs behind the policy's h*, for the start-up log.
  std::string CacheDebugString() const;
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
  // Measures t_row, c_hit and c_miss (see CachePolicy) and sets the policy.
  absl::Status CalibrateCache(common::ThreadPool* pool);

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

  mutable common::Mutex buffers_mu_;
  mutable std::vector<std::unique_ptr<QueryBuffers>> free_buffers_
      ABSL_GUARDED_BY(buffers_mu_);
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_MODEL_RUNTIME_H_
