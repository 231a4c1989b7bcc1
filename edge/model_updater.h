// Keeps the edge on the model version the cloud announces for this device
// (DESIGN §3 "Releases") and owns the running EdgeRuntime.
//
// Start-up: runs <state_dir>/models/CURRENT when it names a loadable model
// of the same name as --model's, else --model (startup_report() says which
// and why). Targets come from Scores/QueryError (Recommender hooks)
// and from GetModelStatus, polled every check_interval and after the cloud
// refused a query with FAILED_PRECONDITION. When the target differs from
// the running model (and updates are on), a background thread downloads it
// (EdgeModelFetch, installed by ModelStore) and switches:
//  1. prefetch the history items' rows at the new version (no lock);
//  2. block writes (RecordInteraction / UpdateProfile wait; Recommend keeps
//     running on the old runtime), open the state with the new model (the
//     store migrates it in memory), rebuild the scratchpad from the rows
//     (fetching items that arrived since step 1);
//  3. point models/CURRENT at the new directory (the commit point);
//  4. compact the state under the new signature, swap the runtime, unblock.
// A failure before 3 changes nothing on disk: the old version keeps
// serving and the update is retried with capped backoff. A failure to
// persist after 3 falls back to a HistoryRebuilder on the new runtime (what
// a restart does). kill -9 before 3 restarts on the old version, after it
// on the new one, whose StateStore::Open migrates the old state (item ids
// from snapshot and log: every acknowledged interaction is kept).
// Thread-safe; calls keep the runtime they started on alive.
#ifndef DUET_EDGE_MODEL_UPDATER_H_
#define DUET_EDGE_MODEL_UPDATER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/base/mutex.h"
#include "duet/v1/edge.pb.h"
#include "edge/cloud_client.h"
#include "edge/edge_metrics.h"
#include "edge/edge_runtime.h"
#include "edge/model_store.h"

namespace duet::edge {

class ModelUpdater {
 public:
  struct Options {
    std::string
        model_dir;  // --model: when models/CURRENT is absent or unusable
    std::string device_id;
    bool updates = true;  // false: report the target, never download
    // GetModelStatus backstop poll (first one at Start); zero: never (a
    // refused query still asks once).
    absl::Duration check_interval = absl::Seconds(60);
    absl::Duration call_timeout = absl::Seconds(10);
    absl::Duration download_timeout = absl::Minutes(10);
    absl::Duration initial_backoff = absl::Seconds(1);
    absl::Duration max_backoff = absl::Seconds(60);
    int batch_items = 256;  // history items per GetItemEmbeddings
    // Template of every runtime (store.dir is the state directory); the
    // Recommender hooks on_target / on_model_refused are set here.
    EdgeRuntime::Options runtime;
    EdgeMetrics* metrics = nullptr;
    // After start-up and each switch, with the running model's config.
    std::function<void(const duet::v1::ModelConfig&)> on_model;
    // false while queries wait for a history rebuild, true otherwise.
    std::function<void(bool serving)> on_serving;
  };

  // Loads the start-up model and opens the state (errors: the model's,
  // StateStore::Open's). Nothing runs before Start.
  static absl::StatusOr<std::unique_ptr<ModelUpdater>> Create(Options options);
  // Stops the update thread (an update in progress is abandoned: nothing
  // was committed unless it had reached CURRENT) and the rebuilder.
  ~ModelUpdater();

  // Starts the history rebuilder (if the state was migrated) and the
  // update thread.
  void Start();

  std::shared_ptr<EdgeRuntime> runtime() const;
  absl::StatusOr<duet::v1::RecommendResponse> Recommend(
      const duet::v1::RecommendRequest& request, absl::Time deadline) const;
  // Wait while a switch holds writes; then apply to the runtime current.
  absl::StatusOr<duet::v1::RecordInteractionResponse> RecordInteraction(
      const duet::v1::RecordInteractionRequest& request, absl::Time deadline);
  absl::StatusOr<duet::v1::UpdateProfileResponse> UpdateProfile(
      const duet::v1::UpdateProfileRequest& request);
  // The runtime's state plus target_model_version and model_update.
  duet::v1::EdgeState GetState() const;

  // The version announced for this device (Recommender hook; cheap).
  void OnTarget(const duet::v1::ModelTarget& target);
  // A query refused FAILED_PRECONDITION: ask GetModelStatus soon (at most
  // once a second).
  void OnModelRefused(const absl::Status& status);

  // Which model directory start-up chose and why.
  const std::string& startup_report() const { return startup_report_; }
  // "" on target; else what the update does or why it failed.
  std::string update_status() const;
  struct Stats {
    int switches = 0;
    int failures = 0;
    int64_t download_bytes = 0;
  };
  Stats stats() const;
  // Tests: true once the running model is `version` (within `timeout`).
  bool WaitForVersion(uint32_t version, absl::Duration timeout) const;

 private:
  ModelUpdater(Options options, ModelStore store);
  void Run();
  // One update to `target`: download (or reuse) and switch.
  absl::Status Update(const duet::v1::ModelTarget& target);
  absl::StatusOr<std::string> Install(const duet::v1::ModelTarget& target);
  absl::Status Switch(std::unique_ptr<common::Model> model,
                      const std::string& dir, absl::Time started);
  absl::Status PollStatus();
  void SetStatus(const std::string& status);
  EdgeRuntime::Options RuntimeOptions();

  const Options options_;
  ModelStore models_;
  std::string startup_report_;
  // Writers (RecordInteraction, UpdateProfile) hold it shared for a whole
  // call; a switch holds it exclusively from opening the new state to the
  // swap, so no write lands on a runtime being replaced.
  common::Mutex write_gate_;

  mutable common::Mutex mu_;
  std::shared_ptr<EdgeRuntime> runtime_ ABSL_GUARDED_BY(mu_);
  std::string running_dir_ ABSL_GUARDED_BY(mu_);  // directory name in models/
  duet::v1::ModelTarget target_ ABSL_GUARDED_BY(mu_);
  std::string status_ ABSL_GUARDED_BY(mu_);
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool poll_soon_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_refused_poll_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // When the failed target is tried again; InfinitePast: no retry pending.
  absl::Time retry_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  Stats stats_ ABSL_GUARDED_BY(mu_);
  CallCanceller download_cancel_;  // cancelled by the destructor
  std::thread thread_;
};

}  // namespace duet::edge

#endif  // DUET_EDGE_MODEL_UPDATER_H_
