#include "edge/edge_runtime.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace duet::edge {

EdgeRuntime::~EdgeRuntime() = default;

absl::StatusOr<std::unique_ptr<common::Model>> EdgeRuntime::LoadModel(
    const std::string& dir, const Options& options) {
  return common::Model::Load(dir, options.load);
}

absl::StatusOr<std::unique_ptr<EdgeRuntime>> EdgeRuntime::Create(
    std::unique_ptr<common::Model> model, const Options& options,
    const RowsFn& rows) {
  std::unique_ptr<EdgeRuntime> rt(new EdgeRuntime());
  rt->model_ = std::move(model);
  ASSIGN_OR_RETURN(rt->user_model_,
                   UserModel::Create(rt->model_.get(), options.user_model));
  ASSIGN_OR_RETURN(rt->state_,
                   UserState::Create(rt->model_.get(), options.state));
  ASSIGN_OR_RETURN(rt->store_, StateStore::Open(options.store, *rt->model_,
                                                rt->state_.get()));
  if (rt->store_->needs_rebuild()) {
    if (rows) {
      ASSIGN_OR_RETURN(const std::vector<std::vector<float>> fetched,
                       rows(rt->state_->history_items()));
      RETURN_IF_ERROR(rt->state_->RebuildScratchpad(fetched));
      rt->needs_persist_ = true;
    } else {
      rt->rebuilder_ = std::make_unique<HistoryRebuilder>(
          rt->user_model_.get(), options.cloud, rt->state_.get(),
          rt->store_.get(), options.rebuild);
    }
  }
  Recommender::Hooks hooks = options.hooks;
  hooks.store = rt->store_.get();
  hooks.rebuilder = rt->rebuilder_.get();
  rt->recommender_ = std::make_unique<Recommender>(
      rt->user_model_.get(), options.cloud, rt->state_.get(), hooks,
      options.recommender);
  return rt;
}

absl::Status EdgeRuntime::Persist() {
  if (!needs_persist_) return absl::OkStatus();
  RETURN_IF_ERROR(store_->Compact(state_->Export()));
  needs_persist_ = false;
  return absl::OkStatus();
}

void EdgeRuntime::StartRebuild() {
  if (rebuilder_ != nullptr) rebuilder_->Start();
}

}  // namespace duet::edge
