// SessionMultiplexer: the state of one ScoringSession stream, without RPC
// code. Routes BeginQuery / UserVector / CancelQuery messages to the
// ScoringCore by query id and emits exactly one SessionResponse per
// BeginQuery (Scores or QueryError), plus a QueryError for a UserVector
// naming no open query (NOT_FOUND). A bad query never ends the stream.
// Thread-safe. `emit` is called with the multiplexer's lock held (so a
// response is queued before open_queries() drops), from any thread; it must
// not call back into the multiplexer.
#ifndef DUET_CLOUD_SESSION_MULTIPLEXER_H_
#define DUET_CLOUD_SESSION_MULTIPLEXER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "cloud/scoring_core.h"
#include "common/base/mutex.h"
#include "duet/v1/scoring.pb.h"

namespace duet::cloud {

class SessionMultiplexer {
 public:
  using Emit = std::function<void(duet::v1::SessionResponse)>;
  // `deadline` bounds every query of the stream (the RPC's deadline).
  SessionMultiplexer(ScoringCore* core, absl::Time deadline, Emit emit)
      : core_(core), deadline_(deadline), emit_(std::move(emit)) {}
  // Cancels what is still open.
  ~SessionMultiplexer();

  void OnRequest(const duet::v1::SessionRequest& request);
  // Ends every open query with CANCELLED (the stream is going away).
  void CancelAll();
  int open_queries() const;

 private:
  void OnBegin(const duet::v1::BeginQuery& begin);
  void OnUserVector(const duet::v1::UserVector& uv);
  void OnCancel(const duet::v1::CancelQuery& cancel);
  void EmitError(uint64_t query_id, const absl::Status& status,
                 const std::optional<duet::v1::ModelTarget>& target =
                     std::nullopt) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<ScoringCore::Query> Find(uint64_t id) const;

  ScoringCore* const core_;
  const absl::Time deadline_;
  const Emit emit_;
  mutable common::Mutex mu_;
  absl::flat_hash_map<uint64_t, std::shared_ptr<ScoringCore::Query>> open_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_SESSION_MULTIPLEXER_H_
