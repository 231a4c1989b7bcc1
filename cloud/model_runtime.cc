#include "cloud/model_runtime.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "absl/synchronization/notification.h"
#include "common/catalog.h"
#include "common/status_macros.h"

namespace duet::cloud {

absl::StatusOr<std::shared_ptr<ModelRuntime>> ModelRuntime::Create(
    std::unique_ptr<const common::Model> model, const Options& options,
    common::ThreadPool* pool) {
  if (model == nullptr || !model->has_cloud()) {
    return absl::InvalidArgumentError(
        "the scoring runtime needs a model with its cloud part loaded");
  }
  auto runtime = std::shared_ptr<ModelRuntime>(
      new ModelRuntime(std::move(model), options));
  RETURN_IF_ERROR(runtime->Init(pool));
  return runtime;
}

absl::Status ModelRuntime::Init(common::ThreadPool* pool) {
  const Options& o = options_;
  const int top_rows = static_cast<int>(std::max<int64_t>(
      {o.placement.max_hot_rows, o.placement.force_hot_rows, 0}));
  const std::vector<TableStats> stats =
      LookupEngine::SampleStats(*model_, o.placement_sample_items, top_rows);
  ASSIGN_OR_RETURN(const PlacementPlan plan,
                   TablePlacement::Plan(stats, o.placement));
  ASSIGN_OR_RETURN(engine_, LookupEngine::Create(model_.get(), plan, pool));
  if (o.item_cache_entries > 0) {
    ItemCache::Options co;
    co.capacity = o.item_cache_entries;
    co.width = model_->dims().item_out;
    cache_ = std::make_unique<ItemCache>(co);
  }
  item_model_ = std::make_unique<ItemModel>(model_.get(), engine_.get(), pool,
                                            cache_.get());
  ASSIGN_OR_RETURN(combined_, CombinedTop::Create(model_.get()));
  if (model_->has_edge() && model_->has_user_tables()) {
    monolithic_ = std::make_unique<common::MonolithicModel>(model_.get());
  }

  // Calibration runs on the pool, as queries do, over fixed pseudo-random
  // candidates with the cache bypassed.
  const common::ModelDims& d = model_->dims();
  const int max_n = o.max_candidates;
  std::vector<int64_t> ids(max_n);
  for (int i = 0; i < max_n; ++i) {
    ids[i] = static_cast<int64_t>(
        common::Mix(i) % static_cast<uint64_t>(model_->catalog().num_items()));
  }
  std::vector<float> v(static_cast<size_t>(max_n) * d.item_out, 0.5f);
  std::vector<float> u(d.user_out, 0.25f), ctr(max_n);
  auto on_pool = [pool](const std::function<absl::Status()>& fn)
      -> absl::StatusOr<absl::Duration> {
    absl::Notification done;
    absl::Status status;
    absl::Duration took;
    pool->Schedule([&] {
      const absl::Time t0 = absl::Now();
      status = fn();
      took = absl::Now() - t0;
      done.Notify();
    });
    done.WaitForNotification();
    if (!status.ok()) return status;
    return took;
  };
  StrategySelector::Options so;
  so.force_lookup = o.force_lookup;
  so.force_user = o.force_user;
  so.max_n = max_n;
  so.budget = o.calibration_budget;
  ASSIGN_OR_RETURN(
      selector_,
      StrategySelector::Create(
          so,
          [&](int choice, int n) {
            return on_pool([&] {
              return item_model_->ComputeUncached(
                  ids.data(), n, static_cast<LookupStrategy>(choice), v.data());
            });
          },
          [&](int choice, int n) {
            return on_pool([&] {
              return combined_->Score(u.data(), v.data(), n,
                                      static_cast<UserStrategy>(choice),
                                      ctr.data());
            });
          }));

  absl::MutexLock lock(&buffers_mu_);
  for (int i = 0; i < o.buffer_sets; ++i) {
    free_buffers_.push_back(std::make_unique<QueryBuffers>(max_n, d));
  }
  return absl::OkStatus();
}

std::unique_ptr<ModelRuntime::QueryBuffers> ModelRuntime::TakeBuffers() const {
  {
    absl::MutexLock lock(&buffers_mu_);
    if (!free_buffers_.empty()) {
      auto b = std::move(free_buffers_.back());
      free_buffers_.pop_back();
      return b;
    }
  }
  // All sets are held by finished queries whose last task has not run yet.
  return std::make_unique<QueryBuffers>(options_.max_candidates,
                                        model_->dims());
}

void ModelRuntime::ReturnBuffers(std::unique_ptr<QueryBuffers> b) const {
  if (b == nullptr) return;
  absl::MutexLock lock(&buffers_mu_);
  if (static_cast<int>(free_buffers_.size()) < options_.buffer_sets) {
    free_buffers_.push_back(std::move(b));
  }
}

}  // namespace duet::cloud
