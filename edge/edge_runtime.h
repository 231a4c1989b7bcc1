// One model version running on the edge: the loaded model (edge part), its
// UserModel, the user's UserState restored by a StateStore from the state
// directory, the Recommender over them (with its own relay cache), and,
// when the stored state was of another model and its rows were not at hand,
// the HistoryRebuilder that refetches them (queries UNAVAILABLE until it is
// done). The ModelUpdater swaps whole runtimes between queries; a call
// keeps the runtime it started on alive through its shared_ptr.
// Owns its members; borrows the cloud client and the hooks' collaborators.
// Thread-safe as its parts are (writes must be serialized by the owner
// against a switch, see ModelUpdater).
#ifndef DUET_EDGE_EDGE_RUNTIME_H_
#define DUET_EDGE_EDGE_RUNTIME_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/model.h"
#include "edge/cloud_client.h"
#include "edge/history_rebuilder.h"
#include "edge/recommender.h"
#include "edge/state_store.h"
#include "edge/user_model.h"
#include "edge/user_state.h"

namespace duet::edge {

class EdgeRuntime {
 public:
  struct Options {
    common::LoadOptions load;  // parts.edge is what the edge needs
    UserModel::Options user_model;
    UserState::Options state;
    StateStore::Options store;  // dir, snapshot_every, fs (reset: first start)
    Recommender::Options recommender;
    // store and rebuilder are filled in by Create.
    Recommender::Hooks hooks;
    HistoryRebuilder::Options rebuild;
    CloudClient* cloud = nullptr;
  };
  // The rows (T_u * d floats each) of `items`, in order, at `model`.
  using RowsFn = std::function<absl::StatusOr<std::vector<std::vector<float>>>(
      const std::vector<int64_t>& items)>;

  // Loads the edge part of the model in `dir` as `options.load` says.
  static absl::StatusOr<std::unique_ptr<common::Model>> LoadModel(
      const std::string& dir, const Options& options);

  // Builds a runtime around `model`: opens the state directory (a state of
  // another signature is migrated: nothing on disk changes). When that
  // needs a rebuild and `rows` is given, the scratchpad is rebuilt in
  // memory from rows(history items), and Persist writes it; an error of
  // `rows` or of the rebuild is returned. Without `rows` a HistoryRebuilder
  // is made (not started: StartRebuild). Errors: StateStore::Open's.
  static absl::StatusOr<std::unique_ptr<EdgeRuntime>> Create(
      std::unique_ptr<common::Model> model, const Options& options,
      const RowsFn& rows = nullptr);
  ~EdgeRuntime();

  const common::Model& model() const { return *model_; }
  const UserModel& user_model() const { return *user_model_; }
  UserState& state() const { return *state_; }
  StateStore& store() const { return *store_; }
  Recommender& recommender() const { return *recommender_; }
  // Null unless the history waits for a rebuild.
  HistoryRebuilder* rebuilder() const { return rebuilder_.get(); }
  // Compacts the state rebuilt by Create (the state is then stored under
  // this model's signature); OK at once otherwise.
  absl::Status Persist();
  // Starts the rebuilder, if any.
  void StartRebuild();

 private:
  EdgeRuntime() = default;

  // Destroyed in reverse: the recommender first, the model last.
  std::unique_ptr<common::Model> model_;
  std::unique_ptr<UserModel> user_model_;
  std::unique_ptr<UserState> state_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<HistoryRebuilder> rebuilder_;
  std::unique_ptr<Recommender> recommender_;
  bool needs_persist_ = false;
};

}  // namespace duet::edge

#endif  // DUET_EDGE_EDGE_RUNTIME_H_
