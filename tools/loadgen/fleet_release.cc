#include "tools/loadgen/fleet_release.h"

#include <stdlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/model/model_config.h"
#include "edge/edge_model_fetch.h"
#include "edge/item_rows.h"

namespace duet::loadgen {
namespace {

bool IsVersion(const common::Model& model, const duet::v1::ModelTarget& t) {
  return t.version() == model.config().version() &&
         (t.fingerprint() == 0 || t.fingerprint() == model.fingerprint());
}

}  // namespace

FleetModel::~FleetModel() {
  user_model.reset();
  owned.reset();  // unmaps the files before they go
  if (!downloaded_dir.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(downloaded_dir, ignored);
  }
}

FleetRelease::FleetRelease(Options options) : options_(std::move(options)) {}

FleetRelease::~FleetRelease() {
  {
    common::MutexLock lock(&mu_);
    stop_ = true;
  }
  download_cancel_.Cancel();
  if (thread_.joinable()) thread_.join();
}

std::unique_ptr<edge::Recommender> FleetRelease::MakeRecommender(
    FleetDevice* device, const FleetModel& version, edge::UserState* state) {
  edge::Recommender::Hooks hooks;
  hooks.on_target = [this, device](const duet::v1::ModelTarget& t) {
    OnTarget(device, t);
  };
  edge::Recommender::Options o = options_.recommender;
  o.device_id = device->id;
  return std::make_unique<edge::Recommender>(version.user_model.get(),
                                             device->cloud, state, hooks, o);
}

void FleetRelease::Start() {
  thread_ = std::thread([this] { Run(); });
}

void FleetRelease::OnTarget(FleetDevice* device,
                            const duet::v1::ModelTarget& target) {
  if (target.version() == 0) return;
  if (IsVersion(*device->runtime()->version->model, target)) return;
  common::MutexLock lock(&mu_);
  pending_[device] = target;
}

ModelSwitches FleetRelease::switches() const {
  common::MutexLock lock(&mu_);
  return switches_;
}

void FleetRelease::Run() {
  while (true) {
    FleetDevice* device;
    duet::v1::ModelTarget target;
    {
      common::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stop_ ||
               (!pending_.empty() && absl::Now() >= retry_download_at_);
      };
      // Wakes for the download retry time as well as for new targets.
      while (!mu_.AwaitWithDeadline(absl::Condition(&ready),
                                    std::max(retry_download_at_, absl::Now()) +
                                        absl::Milliseconds(100))) {
      }
      if (stop_) return;
      device = pending_.begin()->first;
      target = pending_.begin()->second;
      pending_.erase(pending_.begin());
    }
    absl::StatusOr<std::shared_ptr<const FleetModel>> version = Version(target);
    if (!version.ok()) {
      std::fprintf(stderr,
                   "duet-loadgen: fleet: downloading model v%u failed "
                   "(retrying in 1 s): %s\n",
                   target.version(), version.status().ToString().c_str());
      common::MutexLock lock(&mu_);
      pending_.emplace(device, target);
      retry_download_at_ = absl::Now() + absl::Seconds(1);
      continue;
    }
    const uint32_t from = device->runtime()->version->model->config().version();
    const absl::Status s = Switch(device, *version);
    common::MutexLock lock(&mu_);
    if (s.ok()) {
      ++switches_.switched[absl::StrCat("v", from, "\u2192v",
                                        (*version)->model->config().version())];
    } else {
      ++switches_.failed;
      std::fprintf(stderr, "duet-loadgen: fleet: %s failed to switch: %s\n",
                   device->id.c_str(), s.ToString().c_str());
    }
  }
}

absl::StatusOr<std::shared_ptr<const FleetModel>> FleetRelease::Version(
    const duet::v1::ModelTarget& target) {
  {
    common::MutexLock lock(&mu_);
    for (const auto& [key, version] : versions_) {
      if (IsVersion(*version->model, target)) return version;
    }
  }
  auto version = std::make_shared<FleetModel>();
  char pattern[] = "/tmp/duet-fleet-model-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) {
    return absl::UnavailableError("cannot create a temporary directory");
  }
  version->downloaded_dir = pattern;
  duet::v1::GetEdgeModelRequest request;
  request.set_model_version(target.version());
  request.set_model_fingerprint(target.fingerprint());
  const absl::Time start = absl::Now();
  int64_t bytes = 0;
  RETURN_IF_ERROR(edge::EdgeModelFetch::Download(
                      options_.cloud, request, absl::Now() + absl::Minutes(5),
                      version->downloaded_dir,
                      [&bytes](int64_t received, int64_t) { bytes = received; },
                      &download_cancel_)
                      .status());
  common::LoadOptions load;
  load.parts.cloud = false;
  ASSIGN_OR_RETURN(version->owned,
                   common::Model::Load(version->downloaded_dir, load));
  version->model = version->owned.get();
  ASSIGN_OR_RETURN(version->user_model,
                   edge::UserModel::Create(version->model, {}));
  std::fprintf(
      stderr,
      "duet-loadgen: fleet: downloaded %s for the fleet (%lld bytes "
      "in %lld ms)\n",
      common::ModelLabel(version->model->config()).c_str(),
      static_cast<long long>(bytes),
      static_cast<long long>(absl::ToInt64Milliseconds(absl::Now() - start)));
  common::MutexLock lock(&mu_);
  versions_[version->model->fingerprint()] = version;
  return std::shared_ptr<const FleetModel>(version);
}

absl::Status FleetRelease::Switch(FleetDevice* device,
                                  std::shared_ptr<const FleetModel> version) {
  const common::Model& model = *version->model;
  const std::shared_ptr<FleetDevice::Runtime> old = device->runtime();
  // The rows first, while the device queries and interacts on `old`.
  edge::ItemRowsOptions fetch;
  fetch.batch_items = options_.batch_items;
  fetch.call_timeout = options_.call_timeout;
  edge::ItemRows rows;
  RETURN_IF_ERROR(edge::FetchItemRows(
      *device->cloud, model, old->state->history_items(), fetch, &rows));

  common::MutexLock writes(&device->write_mu);
  const edge::UserStateData before = old->state->Export();
  // Items interacted with since the fetch.
  RETURN_IF_ERROR(edge::FetchItemRows(*device->cloud, model,
                                      before.history_items, fetch, &rows));
  edge::UserState::Options so;
  so.executor = [](std::function<void()> f) { f(); };
  ASSIGN_OR_RETURN(std::unique_ptr<edge::UserState> state,
                   edge::UserState::Create(&model, std::move(so)));
  // As StateStore migrates a state: items, counters and profile carry
  // over; rows and memo are the new model's.
  edge::UserStateData data = state->Export();
  data.history_items = before.history_items;
  data.interactions_total = before.interactions_total;
  if (before.profile.size() == data.profile.size()) {
    data.profile = before.profile;
    data.profile_version = before.profile_version;
  }
  RETURN_IF_ERROR(state->Import(data));
  ASSIGN_OR_RETURN(const std::vector<std::vector<float>> history,
                   edge::RowsInOrder(rows, before.history_items));
  RETURN_IF_ERROR(state->RebuildScratchpad(history));
  auto next = std::make_shared<FleetDevice::Runtime>();
  next->recommender = MakeRecommender(device, *version, state.get());
  next->state = std::move(state);
  next->version = std::move(version);
  common::MutexLock lock(&device->mu);
  device->current = std::move(next);
  return absl::OkStatus();
}

}  // namespace duet::loadgen
