// ModelWatcher: model releases for duet-cloud. Every poll interval (and at
// once on Trigger(), SIGHUP) it checks the model directory in one of two
// layouts:
//  * single: DIR/model.pbtxt. When it names a signature that is not served,
//    the model is loaded (checksums verified, on the watcher's thread while
//    queries keep running) and served BESIDE the versions already served
//    (ScoringCore::AddVersion). While model.pbtxt is absent (a generator
//    removes it before writing a new version) the watcher waits: not a
//    failure.
//  * versioned: DIR/<version>/model.pbtxt (TF Serving's layout, no
//    DIR/model.pbtxt). The versions the policy wants — the latest
//    keep_latest by number, or its explicit list — are loaded when not
//    served.
// It also reads the release policy (DIR/release.pbtxt unless another path
// is given; absent: every device's target is the newest version) and then
// applies the version policy, which retires versions outside it once idle
// for the grace period. Each file is re-read only when its (inode, mtime,
// size) changed, or on Trigger(). Every attempt is logged; results are
// counted in duet_model_reloads_total{result}. A failed load keeps what is
// served and is not retried until the file changes again or Trigger().
// model.pbtxt must be written last (the generator does: weights first, then
// an atomic rename), and weight files must be replaced by rename, never
// rewritten in place: the serving model memory-maps them.
// Thread-safe. Borrows the core, which must outlive the watcher.
#ifndef DUET_CLOUD_MODEL_WATCHER_H_
#define DUET_CLOUD_MODEL_WATCHER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cloud/scoring_core.h"
#include "common/base/clock.h"
#include "common/base/mutex.h"
#include "common/model/model.h"

namespace duet::cloud {

class ModelWatcher {
 public:
  struct Options {
    std::string dir;
    // Zero: no polling; only Trigger() and CheckNow() reload.
    absl::Duration poll_interval = absl::Seconds(1);
    // The poll interval runs on it; null: the real clock.
    common::Clock* clock = nullptr;
    common::LoadOptions load;  // parts must include cloud
    // Empty: DIR/release.pbtxt.
    std::string release_policy_path;
    // One line per event (loaded, failed, unchanged on Trigger). May be empty.
    std::function<void(const std::string&)> log;
    // After a version was added or retired (e.g. duet_model_info, health).
    std::function<void()> on_versions_changed;
  };

  enum class Outcome { kUnchanged, kReloaded, kFailed };
  struct Result {
    Outcome outcome = Outcome::kUnchanged;
    absl::Status status;  // the failure, for kFailed
  };

  // Starts watching; the first poll compares model.pbtxt's signature with
  // the serving model's (equal: nothing to do).
  static absl::StatusOr<std::unique_ptr<ModelWatcher>> Create(ScoringCore* core,
                                                              Options options);
  ~ModelWatcher();  // stops and joins the polling thread
  ModelWatcher(const ModelWatcher&) = delete;
  ModelWatcher& operator=(const ModelWatcher&) = delete;

  // Asks the watcher's thread to check now, even if model.pbtxt looks
  // unchanged on disk. Returns at once (safe from a signal-waiting thread).
  void Trigger();
  // One check on the calling thread (tests).
  // `force` ignores the remembered file state.
  Result CheckNow(bool force);

  int64_t reloads_ok() const;
  int64_t reloads_failed() const;

 private:
  struct FileState {
    bool exists = false;
    uint64_t inode = 0;
    int64_t mtime_ns = 0;
    int64_t size = 0;
    bool operator==(const FileState& o) const {
      return exists == o.exists && inode == o.inode && mtime_ns == o.mtime_ns &&
             size == o.size;
    }
  };
  ModelWatcher(ScoringCore* core, Options options)
      : core_(core),
        options_(std::move(options)),
        clock_(options_.clock != nullptr ? options_.clock
                                         : common::Clock::Real()) {}
  static FileState Stat(const std::string& path);
  void Loop();
  void Log(const std::string& line) const;
  Result Fail(absl::Status status, const std::string& what);
  // Loads DIR-or-version-dir `dir` when `force` or its model.pbtxt changed
  // since the last check and its signature is not served.
  Result CheckModelDir(const std::string& dir, bool force)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(check_mu_);
  void CheckReleasePolicy(bool force) ABSL_EXCLUSIVE_LOCKS_REQUIRED(check_mu_);

  ScoringCore* const core_;
  const Options options_;
  common::Clock* const clock_;
  std::string release_path_;

  common::Mutex check_mu_;  // one check at a time
  // By model.pbtxt (or release policy) path.
  std::map<std::string, FileState> seen_ ABSL_GUARDED_BY(check_mu_);
  bool waiting_logged_ ABSL_GUARDED_BY(check_mu_) = false;

  mutable common::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool triggered_ ABSL_GUARDED_BY(mu_) = false;
  int64_t ok_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t failed_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

// The version subdirectories of `dir` (DIR/<n>/model.pbtxt, n a decimal
// number > 0), newest first; empty when `dir` has its own model.pbtxt.
std::vector<std::pair<uint32_t, std::string>> VersionDirs(
    const std::string& dir);
// The directory duet-cloud loads first: `dir` in the single layout, else
// the newest version directory `policy` wants. NOT_FOUND saying what was
// looked for when there is none.
absl::StatusOr<std::string> InitialModelDir(const std::string& dir,
                                            const VersionPolicy& policy);

}  // namespace duet::cloud

#endif  // DUET_CLOUD_MODEL_WATCHER_H_
