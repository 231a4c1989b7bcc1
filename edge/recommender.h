// The edge's request flow for one device (one UserState), independent of
// gRPC so the daemon's service and the load generator's fleet mode share it:
// Recommend validates, sends BeginQuery BEFORE running the user model (the
// cloud starts the item side meanwhile), runs the user model, sends the
// quantized user vector and awaits the Scores; RecordInteraction takes the
// item's rows from the relay cache (no RPC) or fetches them once, logs them
// durably (if a StateStore is given; concurrent writes share one sync, and
// a snapshot is written by a background thread once the log is long) and
// pushes them into the scratchpad; a client interaction_id makes a retry a
// no-op;
// UpdateProfile persists s and starts the background memo recompute.
// Every BeginQuery names this edge's model (version, fingerprint) and device;
// a version the cloud announces for the device (Scores.target, a
// QueryError's target) goes to Hooks::on_target, and a query the cloud
// refuses as FAILED_PRECONDITION (e.g. this version retired) to
// Hooks::on_model_refused: the owner (ModelUpdater) decides what to do.
// Borrows everything it is given. Thread-safe.
#ifndef DUET_EDGE_RECOMMENDER_H_
#define DUET_EDGE_RECOMMENDER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/base/mutex.h"
#include "common/model/model.h"
#include "common/obs/energy_meter.h"
#include "duet/v1/edge.pb.h"
#include "edge/cloud_client.h"
#include "edge/edge_metrics.h"
#include "edge/history_rebuilder.h"
#include "edge/relay_cache.h"
#include "edge/state_store.h"
#include "edge/user_model.h"
#include "edge/user_state.h"

namespace duet::edge {

// RecordInteractionRequest.interaction_id's bound.
inline constexpr size_t kMaxInteractionIdBytes = 128;

class Recommender {
 public:
  struct Options {
    int max_candidates = 1024;
    int relay_cache_items = 256;  // 0: no relay cache, no relay requested
    std::string device_id;  // BeginQuery.device_id (the release policy's key)
  };
  // Optional collaborators (nullptr: not used).
  struct Hooks {
    StateStore* store = nullptr;  // persistence of interactions and profile
    EdgeMetrics* metrics = nullptr;
    common::EnergyMeter* energy = nullptr;
    // While it is not done (a model change), Recommend, RecordInteraction
    // and UpdateProfile fail with its UNAVAILABLE status: the scratchpad
    // holds no rows of this model yet.
    const HistoryRebuilder* rebuilder = nullptr;
    // Called on the query's thread with every target the cloud announces
    // (also when it equals this model); must be cheap and not block.
    std::function<void(const duet::v1::ModelTarget&)> on_target;
    // Called on the query's thread when the cloud refused a query with
    // FAILED_PRECONDITION (its message names the versions it serves).
    std::function<void(const absl::Status&)> on_model_refused;
  };

  Recommender(const UserModel* user_model, CloudClient* cloud, UserState* state,
              Hooks hooks, const Options& options);
  // Waits for a background compaction.
  ~Recommender();
  Recommender(const Recommender&) = delete;
  Recommender& operator=(const Recommender&) = delete;

  // Returns once no compaction runs; the next starts only with a later
  // write. Call under the owner's write gate before another StateStore
  // opens the state directory (a model switch).
  void WaitForCompaction();

  absl::StatusOr<duet::v1::RecommendResponse> Recommend(
      const duet::v1::RecommendRequest& request, absl::Time deadline);
  absl::StatusOr<duet::v1::RecordInteractionResponse> RecordInteraction(
      const duet::v1::RecordInteractionRequest& request, absl::Time deadline);
  absl::StatusOr<duet::v1::UpdateProfileResponse> UpdateProfile(
      const duet::v1::UpdateProfileRequest& request);
  duet::v1::EdgeState GetState() const;

  // INVALID_ARGUMENT naming the field (context_features, candidate_ids,
  // top_k), else OK.
  absl::Status ValidateRecommend(
      const duet::v1::RecommendRequest& request) const;

  const RelayCache& relay_cache() const { return relay_cache_; }
  const UserModel& user_model() const { return *user_model_; }
  UserState& state() const { return *state_; }

 private:
  absl::Status Serving() const {
    return hooks_.rebuilder != nullptr ? hooks_.rebuilder->status()
                                       : absl::OkStatus();
  }
  absl::StatusOr<duet::v1::RecommendResponse> RecommendImpl(
      const duet::v1::RecommendRequest& request, absl::Time deadline);
  // Hands a failed query's target / refusal to the hooks; returns `status`.
  absl::Status ReportRefusal(absl::Status status) const;

  const UserModel* const user_model_;
  const common::Model& model_;
  CloudClient* const cloud_;
  UserState* const state_;
  const Hooks hooks_;
  const Options options_;
  RelayCache relay_cache_;
  // A write waiting for its group commit: an interaction (rows) or a
  // profile update (profile).
  struct Write {
    int64_t item = 0;
    const std::vector<float>* rows = nullptr;
    const std::string* id = nullptr;
    const std::vector<float>* profile = nullptr;
    const Write* same_id = nullptr;  // an earlier write of this id in the batch
    bool done = false;
    bool duplicate = false;
    absl::Status status;
    uint64_t sequence = 0;  // interactions_total, or the profile version
  };
  // Queues `w` and returns when it is committed: the writer at the front
  // commits the batch of interactions queued behind it with one log write
  // and one sync (group commit), then applies them in log order.
  void Commit(Write* w);
  void CommitBatchLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  void StartCompactionLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  // Orders the writes: the log order is the order the state sees them in.
  common::Mutex write_mu_;
  std::deque<Write*> queue_ ABSL_GUARDED_BY(write_mu_);
  // A snapshot is being written (no write may start meanwhile).
  bool compacting_ ABSL_GUARDED_BY(write_mu_) = false;
  std::thread compactor_;
};

}  // namespace duet::edge

#endif  // DUET_EDGE_RECOMMENDER_H_
