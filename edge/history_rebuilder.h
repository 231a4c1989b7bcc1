// Rebuilds the scratchpad after StateStore migrated a state of another model
// (DESIGN §3 "Releases": rows are a cache of the history items): fetches
// the rows of the history items with GetItemEmbeddings (`batch_items` per
// call, each with its own deadline), each response checked to be of this
// edge's model (its version and fingerprint: a cloud still on the old model
// is retried), then UserState::RebuildScratchpad and StateStore::Compact
// (the state is persisted under the new signature).
// Retries with capped exponential backoff until it succeeds or is
// destroyed; the item ids stay on disk meanwhile. Until done, status() is
// UNAVAILABLE saying why (Recommender refuses queries and writes with it).
// Borrows everything; runs on its own thread. Thread-safe.
#ifndef DUET_EDGE_HISTORY_REBUILDER_H_
#define DUET_EDGE_HISTORY_REBUILDER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/base/mutex.h"
#include "edge/cloud_client.h"
#include "edge/state_store.h"
#include "edge/user_model.h"
#include "edge/user_state.h"

namespace duet::edge {

class HistoryRebuilder {
 public:
  struct Options {
    int batch_items = 256;  // items per GetItemEmbeddings (cloud's max is N)
    absl::Duration call_timeout = absl::Seconds(5);
    absl::Duration initial_backoff = absl::Milliseconds(100);
    absl::Duration max_backoff = absl::Seconds(5);
    // Called once on the rebuilder's thread after the state is persisted,
    // just before status() turns OK.
    std::function<void()> on_done;
  };
  struct Report {
    int items = 0;
    int calls = 0;            // GetItemEmbeddings calls of the successful pass
    int64_t bytes = 0;        // their response bytes
    int attempts = 0;         // passes, including failed ones
    absl::Duration duration;  // from Start to persisted
    absl::Duration pass_duration;  // of the successful pass alone
  };

  HistoryRebuilder(const UserModel* user_model, CloudClient* cloud,
                   UserState* state, StateStore* store, Options options);
  // Stops retrying and joins (waits at most for one call's deadline).
  ~HistoryRebuilder();

  void Start();
  // Stops retrying and joins; status() stays UNAVAILABLE unless it had
  // finished. Start may be called again (a model switch that stopped it
  // and then did not happen).
  void Stop();
  // OK once rebuilt and persisted; UNAVAILABLE with the progress before.
  absl::Status status() const;
  bool WaitUntilDone(absl::Duration timeout) const;
  Report report() const;

 private:
  void Run();
  // One pass: fetch every batch (of this model), import, persist.
  absl::Status Attempt(Report* report);

  const UserModel* const user_model_;
  CloudClient* const cloud_;
  UserState* const state_;
  StateStore* const store_;
  const Options options_;
  const std::vector<int64_t> items_;
  mutable common::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  Report report_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace duet::edge

#endif  // DUET_EDGE_HISTORY_REBUILDER_H_
