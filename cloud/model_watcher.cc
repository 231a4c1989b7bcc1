#include "cloud/model_watcher.h"

#include <sys/stat.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/model/model_config.h"

namespace duet::cloud {

absl::StatusOr<std::unique_ptr<ModelWatcher>> ModelWatcher::Create(
    ScoringCore* core, Options options) {
  if (!options.load.parts.cloud) {
    return absl::InvalidArgumentError(
        "ModelWatcher must load the cloud part of the model");
  }
  if (options.poll_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("reload poll interval must be >= 0");
  }
  auto watcher =
      std::unique_ptr<ModelWatcher>(new ModelWatcher(core, std::move(options)));
  watcher->config_path_ =
      absl::StrCat(watcher->options_.dir, "/", common::kConfigFile);
  watcher->thread_ = std::thread([w = watcher.get()] { w->Loop(); });
  return watcher;
}

ModelWatcher::~ModelWatcher() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void ModelWatcher::Trigger() {
  absl::MutexLock lock(&mu_);
  triggered_ = true;
}

int64_t ModelWatcher::reloads_ok() const {
  absl::MutexLock lock(&mu_);
  return ok_;
}

int64_t ModelWatcher::reloads_failed() const {
  absl::MutexLock lock(&mu_);
  return failed_;
}

ModelWatcher::FileState ModelWatcher::Stat() const {
  FileState state;
  struct stat st;
  if (::stat(config_path_.c_str(), &st) != 0) return state;
  state.exists = true;
  state.inode = st.st_ino;
  state.mtime_ns =
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  state.size = st.st_size;
  return state;
}

void ModelWatcher::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

void ModelWatcher::Loop() {
  const bool polling = options_.poll_interval > absl::ZeroDuration();
  while (true) {
    bool force;
    {
      absl::MutexLock lock(&mu_);
      auto wake = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stop_ || triggered_;
      };
      if (polling) {
        clock_->AwaitWithDeadline(&mu_, absl::Condition(&wake),
                                  clock_->Now() + options_.poll_interval);
      } else {
        mu_.Await(absl::Condition(&wake));
      }
      if (stop_) return;
      force = triggered_;
      triggered_ = false;
    }
    CheckNow(force);
  }
}

ModelWatcher::Result ModelWatcher::Fail(absl::Status status) {
  core_->metrics().CountReload(false);
  {
    absl::MutexLock lock(&mu_);
    ++failed_;
  }
  Log(absl::StrCat("model reload from ", options_.dir,
                   " FAILED, still serving ",
                   common::ModelLabel(core_->runtime()->model().config()), ": ",
                   status.ToString()));
  return {Outcome::kFailed, std::move(status)};
}

ModelWatcher::Result ModelWatcher::CheckNow(bool force) {
  absl::MutexLock check_lock(&check_mu_);
  const FileState state = Stat();
  if (!force && state == seen_) return {};
  // Remembered before the attempt: a failed version is not retried on
  // every poll, only after the next change (or a forced check).
  seen_ = state;
  if (!state.exists) {
    return Fail(absl::NotFoundError(
        absl::StrCat(config_path_, " does not exist (or cannot be read)")));
  }
  absl::StatusOr<duet::v1::ModelConfig> config =
      common::ReadConfig(config_path_);
  if (!config.ok()) return Fail(config.status());
  const std::shared_ptr<ModelRuntime> serving = core_->runtime();
  const duet::v1::ModelConfig& old_config = serving->model().config();
  if (config->signature() == old_config.signature()) {
    if (force) {
      Log(absl::StrCat("model reload: ", config_path_, " names ",
                       common::ModelLabel(*config),
                       ", which is already serving; nothing to do"));
    }
    return {};
  }
  Log(absl::StrCat("model reload: ", common::ModelLabel(*config), " found in ",
                   options_.dir, ", loading beside ",
                   common::ModelLabel(old_config)));
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<common::Model>> model =
      common::Model::Load(options_.dir, options_.load);
  if (!model.ok()) return Fail(model.status());
  const absl::Time loaded = absl::Now();
  absl::StatusOr<std::shared_ptr<ModelRuntime>> fresh =
      core_->Reload(*std::move(model));
  if (!fresh.ok()) return Fail(fresh.status());
  core_->metrics().CountReload(true);
  {
    absl::MutexLock lock(&mu_);
    ++ok_;
  }
  Log(absl::StrFormat(
      "model reloaded: now serving %s (was %s); load + checksums %.2f s, "
      "runtime + calibration %.2f s",
      common::ModelLabel((*fresh)->model().config()),
      common::ModelLabel(old_config), absl::ToDoubleSeconds(loaded - start),
      absl::ToDoubleSeconds(absl::Now() - loaded)));
  if (options_.on_reloaded) options_.on_reloaded((*fresh)->model());
  return {Outcome::kReloaded, absl::OkStatus()};
}

}  // namespace duet::cloud
