#include "edge/model_updater.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/model/model_config.h"
#include "edge/edge_model_fetch.h"
#include "edge/item_rows.h"

namespace duet::edge {
namespace {

bool OnModel(const common::Model& model, const duet::v1::ModelTarget& t) {
  return t.version() == model.config().version() &&
         (t.fingerprint() == 0 || t.fingerprint() == model.fingerprint());
}

std::string Mb(int64_t bytes) {
  return absl::StrFormat("%.1f", static_cast<double>(bytes) / 1e6);
}

int64_t Ms(absl::Duration d) { return absl::ToInt64Milliseconds(d); }

// The last path component of `path`.
std::string BaseName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

ModelUpdater::ModelUpdater(Options options, ModelStore store)
    : options_(std::move(options)), models_(std::move(store)) {}

absl::StatusOr<std::unique_ptr<ModelUpdater>> ModelUpdater::Create(
    Options options) {
  ModelStore models(options.runtime.store.dir);
  std::unique_ptr<ModelUpdater> u(
      new ModelUpdater(std::move(options), std::move(models)));
  const Options& o = u->options_;
  if (absl::Status s = u->models_.RemoveTemporaries(); !s.ok()) {
    std::fprintf(stderr, "duet-edge: WARNING: %s\n", s.ToString().c_str());
  }
  // CURRENT, when usable, is the model the state was last committed with.
  std::unique_ptr<common::Model> model;
  std::string running_dir;  // in models/; empty for --model
  absl::StatusOr<std::string> current = u->models_.Current();
  if (current.ok()) {
    absl::StatusOr<std::unique_ptr<common::Model>> loaded =
        EdgeRuntime::LoadModel(*current, o.runtime);
    absl::StatusOr<duet::v1::ModelConfig> given =
        common::ReadConfig(absl::StrCat(o.model_dir, "/", common::kConfigFile));
    if (!loaded.ok()) {
      u->startup_report_ = absl::StrCat(
          "model from --model ", o.model_dir, ": ", u->models_.dir(),
          "/CURRENT names a model that does not load (",
          loaded.status().ToString(), ")");
    } else if (given.ok() && given->name() != (*loaded)->config().name()) {
      u->startup_report_ = absl::StrCat(
          "model from --model ", o.model_dir, ": ", u->models_.dir(),
          "/CURRENT names model ", (*loaded)->config().name(),
          ", --model holds ", given->name());
    } else {
      model = *std::move(loaded);
      running_dir = BaseName(*current);
      u->startup_report_ =
          absl::StrCat("model from ", *current, " (downloaded; ",
                       u->models_.dir(), "/CURRENT names it)");
    }
  } else if (absl::IsNotFound(current.status())) {
    u->startup_report_ = absl::StrCat("model from --model ", o.model_dir,
                                      " (no downloaded model)");
  } else {
    u->startup_report_ =
        absl::StrCat("model from --model ", o.model_dir, " (ignored ",
                     current.status().ToString(), ")");
  }
  if (model == nullptr) {
    ASSIGN_OR_RETURN(model, EdgeRuntime::LoadModel(o.model_dir, o.runtime));
  }
  EdgeRuntime::Options first = u->RuntimeOptions();
  first.store.reset = o.runtime.store.reset;
  ASSIGN_OR_RETURN(std::unique_ptr<EdgeRuntime> rt,
                   EdgeRuntime::Create(std::move(model), first));
  common::MutexLock lock(&u->mu_);
  u->runtime_ = std::move(rt);
  u->running_dir_ = std::move(running_dir);
  return u;
}

ModelUpdater::~ModelUpdater() {
  {
    common::MutexLock lock(&mu_);
    stop_ = true;
  }
  download_cancel_.Cancel();  // a download in flight ends now
  if (thread_.joinable()) thread_.join();
}

EdgeRuntime::Options ModelUpdater::RuntimeOptions() {
  EdgeRuntime::Options o = options_.runtime;
  o.store.reset = false;  // --reset_state applies to start-up only
  o.recommender.device_id = options_.device_id;
  o.hooks.on_target = [this](const duet::v1::ModelTarget& t) { OnTarget(t); };
  o.hooks.on_model_refused = [this](const absl::Status& s) {
    OnModelRefused(s);
  };
  std::function<void()> done = options_.runtime.rebuild.on_done;
  o.rebuild.on_done = [this, done] {
    if (done) done();
    if (options_.on_serving) options_.on_serving(true);
  };
  o.rebuild.batch_items = options_.batch_items;
  return o;
}

void ModelUpdater::Start() {
  std::shared_ptr<EdgeRuntime> rt = runtime();
  if (options_.on_model) options_.on_model(rt->model().config());
  if (rt->rebuilder() != nullptr) {
    if (options_.on_serving) options_.on_serving(false);
    rt->StartRebuild();
  }
  {
    common::MutexLock lock(&mu_);
    poll_soon_ = options_.check_interval > absl::ZeroDuration();
  }
  thread_ = std::thread([this] { Run(); });
}

std::shared_ptr<EdgeRuntime> ModelUpdater::runtime() const {
  common::MutexLock lock(&mu_);
  return runtime_;
}

absl::StatusOr<duet::v1::RecommendResponse> ModelUpdater::Recommend(
    const duet::v1::RecommendRequest& request, absl::Time deadline) const {
  return runtime()->recommender().Recommend(request, deadline);
}

absl::StatusOr<duet::v1::RecordInteractionResponse>
ModelUpdater::RecordInteraction(
    const duet::v1::RecordInteractionRequest& request, absl::Time deadline) {
  common::ReaderMutexLock gate(&write_gate_);
  return runtime()->recommender().RecordInteraction(request, deadline);
}

absl::StatusOr<duet::v1::UpdateProfileResponse> ModelUpdater::UpdateProfile(
    const duet::v1::UpdateProfileRequest& request) {
  common::ReaderMutexLock gate(&write_gate_);
  return runtime()->recommender().UpdateProfile(request);
}

duet::v1::EdgeState ModelUpdater::GetState() const {
  std::shared_ptr<EdgeRuntime> rt = runtime();
  duet::v1::EdgeState s = rt->recommender().GetState();
  common::MutexLock lock(&mu_);
  s.set_target_model_version(target_.version());
  std::string update = status_;
  if (update.empty() && rt->rebuilder() != nullptr &&
      !rt->rebuilder()->status().ok()) {
    update = absl::StrCat("rebuilding history for v",
                          rt->model().config().version());
  }
  s.set_model_update(update);
  return s;
}

void ModelUpdater::OnTarget(const duet::v1::ModelTarget& target) {
  if (target.version() == 0) return;
  common::MutexLock lock(&mu_);
  if (target.version() == target_.version() &&
      target.fingerprint() == target_.fingerprint()) {
    return;
  }
  target_ = target;
  wake_ = true;
  retry_at_ = absl::InfinitePast();  // a new target is tried at once
}

void ModelUpdater::OnModelRefused(const absl::Status&) {
  common::MutexLock lock(&mu_);
  // Every query fails while the version is not served: one question a
  // second is enough.
  const absl::Time now = absl::Now();
  if (poll_soon_ || now - last_refused_poll_ < absl::Seconds(1)) return;
  last_refused_poll_ = now;
  poll_soon_ = true;
  wake_ = true;
}

std::string ModelUpdater::update_status() const {
  common::MutexLock lock(&mu_);
  return status_;
}

ModelUpdater::Stats ModelUpdater::stats() const {
  common::MutexLock lock(&mu_);
  return stats_;
}

bool ModelUpdater::WaitForVersion(uint32_t version,
                                  absl::Duration timeout) const {
  common::MutexLock lock(&mu_);
  auto on = [this, version]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return runtime_->model().config().version() == version;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&on), timeout);
}

void ModelUpdater::SetStatus(const std::string& status) {
  common::MutexLock lock(&mu_);
  status_ = status;
}

absl::Status ModelUpdater::PollStatus() {
  duet::v1::GetModelStatusRequest request;
  request.set_device_id(options_.device_id);
  ASSIGN_OR_RETURN(duet::v1::ModelStatus status,
                   options_.runtime.cloud->GetModelStatus(
                       request, absl::Now() + options_.call_timeout));
  if (status.has_target()) OnTarget(status.target());
  return absl::OkStatus();
}

void ModelUpdater::Run() {
  absl::Duration backoff = options_.initial_backoff;
  absl::Time next_poll = absl::InfiniteFuture();
  std::string last_poll_error;
  while (true) {
    bool poll;
    duet::v1::ModelTarget target;
    {
      common::MutexLock lock(&mu_);
      // A retry that fell due while this thread was busy (or descheduled)
      // is due now: its deadline is kept even when it has already passed.
      const absl::Time wake_at = retry_at_ == absl::InfinitePast()
                                     ? next_poll
                                     : std::min(next_poll, retry_at_);
      auto woken = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stop_ || wake_ || poll_soon_;
      };
      mu_.AwaitWithDeadline(absl::Condition(&woken), wake_at);
      if (stop_) return;
      wake_ = false;
      poll = poll_soon_ || absl::Now() >= next_poll;
      poll_soon_ = false;
    }
    if (poll) {
      const absl::Status polled = PollStatus();
      if (!polled.ok() && polled.ToString() != last_poll_error) {
        std::fprintf(stderr, "duet-edge: model status poll failed: %s\n",
                     polled.ToString().c_str());
      }
      last_poll_error = polled.ok() ? "" : polled.ToString();
      next_poll = options_.check_interval > absl::ZeroDuration()
                      ? absl::Now() + options_.check_interval
                      : absl::InfiniteFuture();
    }
    const std::shared_ptr<EdgeRuntime> rt = runtime();
    {
      common::MutexLock lock(&mu_);
      target = target_;
      if (target.version() == 0 || OnModel(rt->model(), target)) {
        status_.clear();
        retry_at_ = absl::InfinitePast();
        backoff = options_.initial_backoff;
        continue;
      }
      if (!options_.updates) {
        status_ = absl::StrCat("target v", target.version(),
                               " announced; not updating (--model_updates "
                               "is false)");
        continue;
      }
      if (absl::Now() < retry_at_) continue;
      retry_at_ = absl::InfinitePast();  // this attempt is the retry
    }
    const absl::Status s = Update(target);
    if (s.ok()) {
      backoff = options_.initial_backoff;
      continue;
    }
    if (options_.metrics != nullptr)
      options_.metrics->CountModelUpdate("failed");
    std::fprintf(stderr,
                 "duet-edge: model update: to v%u failed (retrying in %s): "
                 "%s\n",
                 target.version(), absl::FormatDuration(backoff).c_str(),
                 s.ToString().c_str());
    common::MutexLock lock(&mu_);
    ++stats_.failures;
    status_ = absl::StrCat("failed: ", s.ToString(), " (retrying in ",
                           absl::FormatDuration(backoff), ")");
    retry_at_ = absl::Now() + backoff;
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

absl::StatusOr<std::string> ModelUpdater::Install(
    const duet::v1::ModelTarget& target) {
  // A directory of this exact version already downloaded (an interrupted
  // switch, a rollback) is used when it still loads with its checksums.
  if (target.fingerprint() != 0) {
    const std::string path = models_.PathOf(
        absl::StrFormat("%d-%016x", target.version(), target.fingerprint()));
    if (EdgeRuntime::LoadModel(path, options_.runtime).ok()) return path;
  }
  SetStatus(absl::StrCat("downloading v", target.version()));
  duet::v1::GetEdgeModelRequest request;
  request.set_device_id(options_.device_id);
  request.set_model_version(target.version());
  request.set_model_fingerprint(target.fingerprint());
  const absl::Time start = absl::Now();
  int64_t counted = 0;
  auto progress = [this, &counted, &target](int64_t received, int64_t total) {
    if (options_.metrics != nullptr) {
      options_.metrics->model_download_bytes().Increment(
          static_cast<double>(received - counted));
    }
    common::MutexLock lock(&mu_);
    stats_.download_bytes += received - counted;
    counted = received;
    status_ = absl::StrCat("downloading v", target.version(), " (",
                           Mb(received), " of ", Mb(total), " MB)");
  };
  CloudClient* cloud = options_.runtime.cloud;
  const absl::Time deadline = absl::Now() + options_.download_timeout;
  ASSIGN_OR_RETURN(
      std::string path, models_.Install([&](const std::string& dir) {
        return EdgeModelFetch::Download(cloud, request, deadline, dir, progress,
                                        &download_cancel_);
      }));
  std::fprintf(stderr,
               "duet-edge: model update: downloaded v%u (%lld bytes in %lld "
               "ms) into %s\n",
               target.version(), static_cast<long long>(counted),
               static_cast<long long>(Ms(absl::Now() - start)), path.c_str());
  return path;
}

absl::Status ModelUpdater::Update(const duet::v1::ModelTarget& target) {
  const absl::Time start = absl::Now();
  std::fprintf(stderr,
               "duet-edge: model update: target v%u (signature %016llx), "
               "running %s\n",
               target.version(),
               static_cast<unsigned long long>(target.fingerprint()),
               common::ModelLabel(runtime()->model().config()).c_str());
  ASSIGN_OR_RETURN(const std::string path, Install(target));
  ASSIGN_OR_RETURN(std::unique_ptr<common::Model> model,
                   EdgeRuntime::LoadModel(path, options_.runtime));
  const common::Model& running = runtime()->model();
  if (model->config().name() != running.config().name()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the cloud's target is ", common::ModelLabel(model->config()),
        ", a model other than the running ",
        common::ModelLabel(running.config())));
  }
  return Switch(std::move(model), path, start);
}

absl::Status ModelUpdater::Switch(std::unique_ptr<common::Model> model,
                                  const std::string& dir, absl::Time started) {
  const uint32_t version = model->config().version();
  const absl::Time switch_start = absl::Now();
  const std::shared_ptr<EdgeRuntime> old = runtime();
  // 1. Rows of the history at the new version while the old one serves.
  SetStatus(
      absl::StrCat("switching to v", version, ": fetching the history's rows"));
  const std::vector<int64_t> items = old->state().history_items();
  ItemRowsOptions fetch;
  fetch.batch_items = options_.batch_items;
  fetch.call_timeout = options_.call_timeout;
  CloudClient& cloud = *options_.runtime.cloud;
  // Outlives `model`'s move into the new runtime, which owns it then.
  const common::Model* target = model.get();
  ItemRows known;
  RETURN_IF_ERROR(FetchItemRows(cloud, *target, items, fetch, &known));
  const std::string name = BaseName(dir);
  const absl::Time locked = absl::Now();
  std::unique_ptr<EdgeRuntime> next;
  std::string previous;
  bool rebuilding;
  absl::Time switched;
  {
    // 2. No write from here to the swap.
    common::MutexLock gate(&write_gate_);
    // Two stores must not write one directory: an unfinished rebuild of the
    // old runtime stops (and resumes if this switch does not happen).
    if (old->rebuilder() != nullptr) old->rebuilder()->Stop();
    // Nor may the old runtime's background compaction still be writing it.
    old->recommender().WaitForCompaction();
    // Items interacted with since the prefetch are fetched here.
    auto rows = [&](const std::vector<int64_t>& history)
        -> absl::StatusOr<std::vector<std::vector<float>>> {
      RETURN_IF_ERROR(FetchItemRows(cloud, *target, history, fetch, &known));
      return RowsInOrder(known, history);
    };
    absl::StatusOr<std::unique_ptr<EdgeRuntime>> created =
        EdgeRuntime::Create(std::move(model), RuntimeOptions(), rows);
    absl::Status s = created.status();
    // 3. The commit point: from here a restart runs the new version.
    if (s.ok()) s = models_.SetCurrent(name);
    if (!s.ok()) {
      if (old->rebuilder() != nullptr) old->StartRebuild();
      return s;
    }
    next = *std::move(created);
    // 4. The state under the new signature.
    if (const absl::Status persisted = next->Persist(); !persisted.ok()) {
      std::fprintf(stderr,
                   "duet-edge: model update: persisting the rebuilt state "
                   "failed (%s); rebuilding the history in the background\n",
                   persisted.ToString().c_str());
      next.reset();
      ASSIGN_OR_RETURN(std::unique_ptr<common::Model> again,
                       EdgeRuntime::LoadModel(dir, options_.runtime));
      ASSIGN_OR_RETURN(next,
                       EdgeRuntime::Create(std::move(again), RuntimeOptions()));
    }
    rebuilding = next->rebuilder() != nullptr;
    if (options_.on_model) options_.on_model(next->model().config());
    if (options_.on_serving) options_.on_serving(!rebuilding);
    next->StartRebuild();
    {
      common::MutexLock lock(&mu_);
      previous = running_dir_;
    }
    // The previous version stays for a roll-back; older ones go. Done (and
    // counted) before the swap publishes the switch.
    if (absl::Status pruned = models_.Prune({name, previous}); !pruned.ok()) {
      std::fprintf(stderr, "duet-edge: WARNING: pruning old models: %s\n",
                   pruned.ToString().c_str());
    }
    switched = absl::Now();
    if (options_.metrics != nullptr) {
      options_.metrics->CountModelUpdate(rebuilding ? "switched_rebuilding"
                                                    : "switched");
      options_.metrics->model_update_seconds().Observe(
          absl::ToDoubleSeconds(switched - started));
    }
    std::shared_ptr<EdgeRuntime> swapped = std::move(next);
    common::MutexLock lock(&mu_);
    runtime_ = swapped;
    running_dir_ = name;
    status_.clear();
    ++stats_.switches;
  }
  std::fprintf(stderr,
               "duet-edge: model update: switched to v%u (history %zu items "
               "rebuilt in %lld ms%s; writes held %lld ms; %lld ms since the "
               "download began)\n",
               version, items.size(),
               static_cast<long long>(Ms(switched - switch_start)),
               rebuilding ? ", left to the background rebuilder" : "",
               static_cast<long long>(Ms(switched - locked)),
               static_cast<long long>(Ms(switched - started)));
  return absl::OkStatus();
}

}  // namespace duet::edge
