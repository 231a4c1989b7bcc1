#include "cloud/item_model.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "common/base/mutex.h"
#include "common/base/scratch.h"

namespace duet::cloud {
namespace {

struct ItemScratch {
  std::vector<float> f, v;
  std::vector<int64_t> miss_ids;
  std::vector<int32_t> miss_rows;
};
ItemScratch& Scratch() {
  thread_local ItemScratch scratch;
  return scratch;
}

// First error of a parallel section.
class FirstError {
 public:
  void Set(absl::Status s) {
    if (s.ok() || failed_.exchange(true)) return;
    common::MutexLock lock(&mu_);
    status_ = std::move(s);
  }
  absl::Status Get() {
    if (!failed_.load()) return absl::OkStatus();
    common::MutexLock lock(&mu_);
    return status_;
  }

 private:
  std::atomic<bool> failed_{false};
  common::Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::Status ItemModel::ComputeUncached(const int64_t* candidates, int n,
                                        LookupStrategy strategy,
                                        float* v) const {
  if (n <= 0) return absl::OkStatus();
  const common::ModelDims& d = model_->dims();
  const common::Fp32Mlp* top = model_->item_top();
  // With no item top layers v_j is f_j: gather straight into v.
  float* f =
      top == nullptr
          ? v
          : common::GrowTo(Scratch().f, static_cast<size_t>(n) * d.item_top_in);
  const int chunks = engine_->NumChunks(n);
  const int per = (n + chunks - 1) / chunks;
  FirstError error;
  if (strategy == LookupStrategy::kTable) {
    engine_->Gather(candidates, n, LookupStrategy::kTable, f);
    if (top == nullptr) return absl::OkStatus();
    pool_->ParallelFor(chunks, [&](int c) {
      const int begin = c * per, end = std::min(n, begin + per);
      if (begin >= end) return;
      error.Set(top->Run(f + static_cast<size_t>(begin) * d.item_top_in,
                         end - begin,
                         v + static_cast<size_t>(begin) * d.item_out));
    });
    return error.Get();
  }
  // Batch-level: each chunk gathers and runs the item top MLP on its own
  // rows while they are still in cache.
  pool_->ParallelFor(chunks, [&](int c) {
    const int begin = c * per, end = std::min(n, begin + per);
    if (begin >= end) return;
    float* fc = f + static_cast<size_t>(begin) * d.item_top_in;
    engine_->GatherRows(candidates + begin, end - begin, fc);
    if (top != nullptr) {
      error.Set(top->Run(fc, end - begin,
                         v + static_cast<size_t>(begin) * d.item_out));
    }
  });
  return error.Get();
}

absl::Status ItemModel::Compute(const int64_t* candidates, int n,
                                LookupStrategy strategy, bool use_cache,
                                float* v, int* cache_hits) const {
  if (cache_hits != nullptr) *cache_hits = 0;
  if (cache_ == nullptr || !use_cache) {
    return ComputeUncached(candidates, n, strategy, v);
  }
  const int width = model_->dims().item_out;
  const uint64_t fp = model_->fingerprint();
  ItemScratch& s = Scratch();
  int64_t* miss_ids = common::GrowTo(s.miss_ids, n);
  int32_t* miss_rows = common::GrowTo(s.miss_rows, n);
  int misses = 0;
  for (int j = 0; j < n; ++j) {
    if (!cache_->Lookup(candidates[j], fp,
                        v + static_cast<size_t>(j) * width)) {
      miss_ids[misses] = candidates[j];
      miss_rows[misses] = j;
      ++misses;
    }
  }
  if (cache_hits != nullptr) *cache_hits = n - misses;
  if (misses == 0) return absl::OkStatus();
  float* vm = common::GrowTo(s.v, static_cast<size_t>(misses) * width);
  absl::Status status = ComputeUncached(miss_ids, misses, strategy, vm);
  if (!status.ok()) return status;
  for (int i = 0; i < misses; ++i) {
    const float* row = vm + static_cast<size_t>(i) * width;
    std::memcpy(v + static_cast<size_t>(miss_rows[i]) * width, row,
                width * sizeof(float));
    cache_->Insert(miss_ids[i], fp, row);
  }
  return absl::OkStatus();
}

}  // namespace duet::cloud
