// The fleet's side of a model release: its simulated devices follow the
// version the cloud announces for each of them (Scores.target, a
// QueryError's target), as duet-edge does. A version is downloaded once for
// the whole fleet (GetEdgeModel into a temporary directory, checked by
// edge::EdgeModelFetch, then loaded); each device then switches on a
// background thread — a UserState of the new model holding the device's
// history items and profile, its rows fetched at the new version
// (GetItemEmbeddings), RebuildScratchpad — while its queries keep running
// on the old runtime; its interactions wait only for the swap itself.
// Thread-safe.
#ifndef DUET_TOOLS_LOADGEN_FLEET_RELEASE_H_
#define DUET_TOOLS_LOADGEN_FLEET_RELEASE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/base/mutex.h"
#include "common/model/model.h"
#include "edge/cloud_client.h"
#include "edge/recommender.h"
#include "edge/user_model.h"
#include "edge/user_state.h"
#include "tools/loadgen/summary.h"

namespace duet::loadgen {

// One model version the fleet runs: its edge part and UserModel.
struct FleetModel {
  ~FleetModel();  // removes a downloaded directory, after the model
  std::string downloaded_dir;  // empty for the model given at start
  std::unique_ptr<common::Model> owned;
  const common::Model* model = nullptr;
  std::unique_ptr<edge::UserModel> user_model;
};

// One simulated device. Queries take runtime(); interactions hold
// write_mu, which a switch takes for its final step.
struct FleetDevice {
  struct Runtime {
    std::shared_ptr<const FleetModel> version;
    std::unique_ptr<edge::UserState> state;
    std::unique_ptr<edge::Recommender> recommender;
  };
  std::string id;  // "fleet-<d>", BeginQuery.device_id
  edge::CloudClient* cloud = nullptr;
  common::Mutex write_mu;

  std::shared_ptr<Runtime> runtime() const {
    common::MutexLock lock(&mu);
    return current;
  }
  mutable common::Mutex mu;
  std::shared_ptr<Runtime> current ABSL_GUARDED_BY(mu);
};

class FleetRelease {
 public:
  struct Options {
    edge::CloudClient* cloud = nullptr;  // downloads and row fetches
    edge::Recommender::Options recommender;
    int batch_items = 256;  // items per GetItemEmbeddings
    absl::Duration call_timeout = absl::Seconds(30);
  };
  explicit FleetRelease(Options options);
  // Stops the switching thread (a device mid-switch stays on its version).
  ~FleetRelease();

  // A Recommender for `device` on `version` whose hooks report the
  // device's announced targets here.
  std::unique_ptr<edge::Recommender> MakeRecommender(FleetDevice* device,
                                                     const FleetModel& version,
                                                     edge::UserState* state);
  // Starts following targets; `devices` must outlive this.
  void Start();
  void OnTarget(FleetDevice* device, const duet::v1::ModelTarget& target);
  ModelSwitches switches() const;

 private:
  void Run();
  // The fleet's copy of `target` (downloaded on first use).
  absl::StatusOr<std::shared_ptr<const FleetModel>> Version(
      const duet::v1::ModelTarget& target);
  absl::Status Switch(FleetDevice* device,
                      std::shared_ptr<const FleetModel> version);
  const Options options_;
  mutable common::Mutex mu_;
  // Devices waiting to switch, by the target announced to them.
  std::map<FleetDevice*, duet::v1::ModelTarget> pending_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::shared_ptr<const FleetModel>> versions_
      ABSL_GUARDED_BY(mu_);  // by fingerprint
  absl::Time retry_download_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  ModelSwitches switches_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  edge::CallCanceller download_cancel_;  // cancelled by the destructor
  std::thread thread_;
};

}  // namespace duet::loadgen

#endif  // DUET_TOOLS_LOADGEN_FLEET_RELEASE_H_
