// ItemModel: the item tower for the N candidates of a query,
//   v_j = ItemTopMLP(f_j),  f_j gathered by the LookupEngine,
// serving cached v_j from the ItemCache (if any) and computing only the
// misses (compacted into one batch, then scattered back and inserted).
// Borrows everything; immutable and thread-safe.
#ifndef DUET_CLOUD_ITEM_MODEL_H_
#define DUET_CLOUD_ITEM_MODEL_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "cloud/item_cache.h"
#include "cloud/lookup_engine.h"
#include "common/base/thread_pool.h"
#include "common/model/model.h"

namespace duet::cloud {

class ItemModel {
 public:
  // `cache` may be null (every row computed: the paper-faithful path).
  ItemModel(const common::Model* model, const LookupEngine* engine,
            common::ThreadPool* pool, ItemCache* cache)
      : model_(model), engine_(engine), pool_(pool), cache_(cache) {}

  // v: [n, item_out] row-major. Candidate ids must be valid. Parallel on the
  // pool with the caller taking part. Goes through the cache (if any) when
  // use_cache. Sets *cache_hits (may be null).
  absl::Status Compute(const int64_t* candidates, int n,
                       LookupStrategy strategy, bool use_cache, float* v,
                       int* cache_hits) const;

  // Without the cache, whatever the configuration (calibration, benchmarks).
  absl::Status ComputeUncached(const int64_t* candidates, int n,
                               LookupStrategy strategy, float* v) const;

  ItemCache* cache() const { return cache_; }

 private:
  const common::Model* model_;
  const LookupEngine* engine_;
  common::ThreadPool* pool_;
  ItemCache* cache_;
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_ITEM_MODEL_H_
