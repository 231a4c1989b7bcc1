// ModelWatcher: hot model reload for duet-cloud. Watches DIR/model.pbtxt
// (inode, mtime, size) every poll interval; when it changed and names a
// signature other than the serving model's, loads the model (checksums
// verified, on the watcher's own thread while queries keep running) and
// hands it to ScoringCore::Reload, which swaps it in atomically. Trigger()
// (SIGHUP) checks at once, even when nothing seems to have changed.
// Every attempt is logged; its result is counted in
// duet_model_reloads_total{result}. A failed attempt keeps the old model and
// is not retried until model.pbtxt changes again or Trigger() is called.
// model.pbtxt must be written last (the generator does: weights first, then
// an atomic rename), and weight files must be replaced by rename, never
// rewritten in place: the serving model memory-maps them.
// Thread-safe. Borrows the core, which must outlive the watcher.
#ifndef DUET_CLOUD_MODEL_WATCHER_H_
#define DUET_CLOUD_MODEL_WATCHER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cloud/scoring_core.h"
#include "common/base/clock.h"
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
    // One line per event (loaded, failed, unchanged on Trigger). May be empty.
    std::function<void(const std::string&)> log;
    // After a successful swap, with the new model (e.g. duet_model_info).
    std::function<void(const common::Model&)> on_reloaded;
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
  FileState Stat() const;
  void Loop();
  void Log(const std::string& line) const;
  Result Fail(absl::Status status);

  ScoringCore* const core_;
  const Options options_;
  common::Clock* const clock_;
  std::string config_path_;

  absl::Mutex check_mu_;  // one check at a time
  FileState seen_ ABSL_GUARDED_BY(check_mu_);

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool triggered_ ABSL_GUARDED_BY(mu_) = false;
  int64_t ok_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t failed_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_MODEL_WATCHER_H_
