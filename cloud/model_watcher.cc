#include "cloud/model_watcher.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <utility>

#include "absl/strings/numbers.h"
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
  watcher->release_path_ =
      watcher->options_.release_policy_path.empty()
          ? absl::StrCat(watcher->options_.dir, "/", kReleasePolicyFile)
          : watcher->options_.release_policy_path;
  watcher->thread_ = std::thread([w = watcher.get()] { w->Loop(); });
  return watcher;
}

ModelWatcher::~ModelWatcher() {
  {
    common::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void ModelWatcher::Trigger() {
  common::MutexLock lock(&mu_);
  triggered_ = true;
}

int64_t ModelWatcher::reloads_ok() const {
  common::MutexLock lock(&mu_);
  return ok_;
}

int64_t ModelWatcher::reloads_failed() const {
  common::MutexLock lock(&mu_);
  return failed_;
}

ModelWatcher::FileState ModelWatcher::Stat(const std::string& path) {
  FileState state;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return state;
  state.exists = true;
  state.inode = st.st_ino;
  state.mtime_ns =
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  state.size = st.st_size;
  return state;
}

std::vector<std::pair<uint32_t, std::string>> VersionDirs(
    const std::string& dir) {
  std::vector<std::pair<uint32_t, std::string>> out;
  struct stat st;
  if (::stat(absl::StrCat(dir, "/", common::kConfigFile).c_str(), &st) == 0) {
    return out;
  }
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (const struct dirent* e = ::readdir(d)) {
    uint32_t version = 0;
    if (!absl::SimpleAtoi(e->d_name, &version) || version == 0 ||
        absl::StrCat(version) != e->d_name) {
      continue;
    }
    const std::string sub = absl::StrCat(dir, "/", e->d_name);
    if (::stat(absl::StrCat(sub, "/", common::kConfigFile).c_str(), &st) == 0) {
      out.emplace_back(version, sub);
    }
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  return out;
}

namespace {

// The version directories `policy` wants, newest first.
std::vector<std::pair<uint32_t, std::string>> WantedDirs(
    const std::string& dir, const VersionPolicy& policy) {
  std::vector<std::pair<uint32_t, std::string>> wanted;
  for (auto& [version, path] : VersionDirs(dir)) {
    const bool want =
        policy.versions.empty()
            ? static_cast<int>(wanted.size()) < policy.keep_latest
            : std::find(policy.versions.begin(), policy.versions.end(),
                        version) != policy.versions.end();
    if (want) wanted.emplace_back(version, std::move(path));
  }
  return wanted;
}

}  // namespace

absl::StatusOr<std::string> InitialModelDir(const std::string& dir,
                                            const VersionPolicy& policy) {
  struct stat st;
  if (::stat(absl::StrCat(dir, "/", common::kConfigFile).c_str(), &st) == 0) {
    return dir;
  }
  const auto wanted = WantedDirs(dir, policy);
  if (wanted.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "no model in ", dir, ": neither ", dir, "/", common::kConfigFile,
        " nor ", dir, "/<version>/", common::kConfigFile,
        policy.versions.empty() ? "" : " for the versions asked for"));
  }
  return wanted.front().second;
}

void ModelWatcher::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

void ModelWatcher::Loop() {
  const bool polling = options_.poll_interval > absl::ZeroDuration();
  while (true) {
    bool force;
    {
      common::MutexLock lock(&mu_);
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

ModelWatcher::Result ModelWatcher::Fail(absl::Status status,
                                        const std::string& what) {
  core_->metrics().CountReload(false);
  {
    common::MutexLock lock(&mu_);
    ++failed_;
  }
  Log(absl::StrCat("model load from ", what, " FAILED, still serving ",
                   core_->served().Describe(), ": ", status.ToString()));
  return {Outcome::kFailed, std::move(status)};
}

void ModelWatcher::CheckReleasePolicy(bool force) {
  const FileState state = Stat(release_path_);
  auto seen = seen_.find(release_path_);
  if (!force && seen != seen_.end() && seen->second == state) return;
  const bool had = seen != seen_.end() && seen->second.exists;
  seen_[release_path_] = state;
  if (!state.exists) {
    if (had) {
      Log(absl::StrCat(release_path_,
                       " removed: every device's target is the newest "
                       "served version"));
    }
    core_->SetReleasePolicy(std::make_shared<const ReleasePolicy>());
    return;
  }
  absl::StatusOr<ReleasePolicy> policy = ReleasePolicy::ReadFile(release_path_);
  if (!policy.ok()) {
    Log(absl::StrCat("release policy NOT changed (still: ",
                     core_->release_policy()->Describe(),
                     "): ", policy.status().ToString()));
    return;
  }
  Log(absl::StrCat("release policy from ", release_path_, ": ",
                   policy->Describe()));
  core_->SetReleasePolicy(
      std::make_shared<const ReleasePolicy>(*std::move(policy)));
}

ModelWatcher::Result ModelWatcher::CheckModelDir(const std::string& dir,
                                                 bool force) {
  const std::string config_path = absl::StrCat(dir, "/", common::kConfigFile);
  const FileState state = Stat(config_path);
  FileState& seen = seen_[config_path];
  if (state.exists && !force && state == seen) return {};
  // Remembered before the attempt: a failed version is not retried on
  // every poll, only after the next change (or a forced check).
  seen = state;
  if (!state.exists) {
    // A generator removes model.pbtxt before it writes the next version.
    if (!waiting_logged_) {
      Log(absl::StrCat(config_path,
                       " is absent (a new version being "
                       "written?); waiting, still serving ",
                       core_->served().Describe()));
      waiting_logged_ = true;
    }
    return {};
  }
  waiting_logged_ = false;
  absl::StatusOr<duet::v1::ModelConfig> config =
      common::ReadConfig(config_path);
  if (!config.ok()) return Fail(config.status(), dir);
  if (core_->served().Contains(config->signature())) {
    if (force) {
      Log(absl::StrCat("model check: ", config_path, " names ",
                       common::ModelLabel(*config),
                       ", which is already served; nothing to do"));
    }
    return {};
  }
  Log(absl::StrCat("model release: ", common::ModelLabel(*config), " found in ",
                   dir, ", loading beside ", core_->served().Describe()));
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<common::Model>> model =
      common::Model::Load(dir, options_.load);
  if (!model.ok()) return Fail(model.status(), dir);
  const absl::Time loaded = absl::Now();
  absl::StatusOr<std::shared_ptr<ModelRuntime>> fresh =
      core_->AddVersion(*std::move(model));
  if (!fresh.ok()) return Fail(fresh.status(), dir);
  core_->metrics().CountReload(true);
  {
    common::MutexLock lock(&mu_);
    ++ok_;
  }
  Log(absl::StrFormat(
      "model loaded: %s; load + checksums %.2f s, runtime %.2f s (%s); "
      "serving %s",
      common::ModelLabel((*fresh)->model().config()),
      absl::ToDoubleSeconds(loaded - start),
      absl::ToDoubleSeconds(absl::Now() - loaded),
      (*fresh)->WarmupDebugString(), core_->served().Describe()));
  return {Outcome::kReloaded, absl::OkStatus()};
}

ModelWatcher::Result ModelWatcher::CheckNow(bool force) {
  common::MutexLock check_lock(&check_mu_);
  CheckReleasePolicy(force);
  Result result;
  const auto versioned = WantedDirs(options_.dir, core_->served().policy());
  std::vector<std::string> dirs;
  if (versioned.empty()) {
    dirs.push_back(options_.dir);
  } else {
    for (const auto& [version, path] : versioned) dirs.push_back(path);
  }
  for (const std::string& dir : dirs) {
    Result r = CheckModelDir(dir, force);
    if (r.outcome == Outcome::kFailed && result.outcome != Outcome::kFailed) {
      result = r;
    } else if (r.outcome == Outcome::kReloaded &&
               result.outcome == Outcome::kUnchanged) {
      result = r;
    }
  }
  const std::vector<ServedModels::Retired> retired =
      core_->ApplyVersionPolicy(core_->release_policy()->Pinned());
  for (const ServedModels::Retired& r : retired) {
    Log(absl::StrFormat(
        "model retired: v%d (signature %s) after %d queries and %s idle; "
        "serving %s",
        r.version, r.signature, r.queries,
        absl::FormatDuration(core_->served().policy().grace),
        core_->served().Describe()));
  }
  if ((result.outcome == Outcome::kReloaded || !retired.empty()) &&
      options_.on_versions_changed) {
    options_.on_versions_changed();
  }
  return result;
}

}  // namespace duet::cloud
