// The edge's view of duet-cloud (the seam between the core and gRPC):
// start a query (BeginQuery, so the cloud begins the item side at once),
// send its user vector, await its scores; fetch user-table rows of items at
// a model version; and, for model releases, download a version's edge part
// (GetEdgeModel) and ask which versions are served (GetModelStatus).
// GrpcCloudClient implements it over ScoringSession streams and unary calls
// on the same channel; tests use a fake. Implementations are thread-safe and
// never block past a deadline.
#ifndef DUET_EDGE_CLOUD_CLIENT_H_
#define DUET_EDGE_CLOUD_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "common/base/mutex.h"
#include "duet/v1/scoring.pb.h"

namespace duet::edge {

// A query's error status carries the QueryError's target (the version the
// cloud wants this device on) as a payload of this type URL.
inline constexpr char kModelTargetPayload[] =
    "type.googleapis.com/duet.v1.ModelTarget";

inline void SetTargetPayload(const duet::v1::ModelTarget& target,
                             absl::Status* status) {
  status->SetPayload(kModelTargetPayload,
                     absl::Cord(target.SerializeAsString()));
}
// The target an error status carries, if any.
inline std::optional<duet::v1::ModelTarget> TargetPayload(
    const absl::Status& status) {
  const absl::optional<absl::Cord> payload =
      status.GetPayload(kModelTargetPayload);
  duet::v1::ModelTarget target;
  if (!payload.has_value() || !target.ParseFromString(std::string(*payload))) {
    return std::nullopt;
  }
  return target;
}

// Lets another thread abandon a long call (a download when the daemon
// stops): Cancel makes the call in flight, and every later one, fail
// CANCELLED at once. Thread-safe.
class CallCanceller {
 public:
  void Cancel() {
    std::function<void()> cancel;
    {
      common::MutexLock lock(&mu_);
      cancelled_ = true;
      cancel = cancel_;
    }
    if (cancel) cancel();
  }
  bool cancelled() const {
    common::MutexLock lock(&mu_);
    return cancelled_;
  }
  // For implementations: `cancel` runs on Cancel until Detach; false (and
  // not attached) when already cancelled.
  bool Attach(std::function<void()> cancel) {
    common::MutexLock lock(&mu_);
    if (cancelled_) return false;
    cancel_ = std::move(cancel);
    return true;
  }
  void Detach() {
    common::MutexLock lock(&mu_);
    cancel_ = nullptr;
  }

 private:
  mutable common::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> cancel_ ABSL_GUARDED_BY(mu_);
};

// One open query. Destroying it before Await returned abandons the query
// (the cloud is told to cancel it).
class CloudQuery {
 public:
  virtual ~CloudQuery() = default;
  // The id the query travels under (BeginQuery.query_id).
  virtual uint64_t id() const = 0;
  // `vector.query_id` is set by the caller to id().
  virtual absl::Status SendUserVector(const duet::v1::UserVector& vector) = 0;
  // The Scores, the cloud's QueryError as a status (with its target as a
  // payload, see TargetPayload), UNAVAILABLE if the connection broke,
  // DEADLINE_EXCEEDED at `deadline`.
  virtual absl::StatusOr<duet::v1::Scores> Await(absl::Time deadline) = 0;
};

class CloudClient {
 public:
  virtual ~CloudClient() = default;
  // Sends `begin` (its query_id is assigned here). UNAVAILABLE at once when
  // the cloud is not connected.
  virtual absl::StatusOr<std::unique_ptr<CloudQuery>> BeginQuery(
      duet::v1::BeginQuery begin, absl::Time deadline) = 0;
  // Rows of `request.item_ids` at `request.model_version` (0: the newest
  // served); the response names the model of its rows.
  virtual absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> GetItemEmbeddings(
      const duet::v1::GetItemEmbeddingsRequest& request,
      absl::Time deadline) = 0;
  // Streams the edge part of a version: `on_chunk` sees every chunk in
  // order; an error it returns cancels the stream and is returned. The
  // status of the stream otherwise (DEADLINE_EXCEEDED at `deadline`,
  // CANCELLED once `canceller`, if not null, is cancelled).
  using EdgeModelChunkFn =
      std::function<absl::Status(const duet::v1::EdgeModelChunk&)>;
  virtual absl::Status GetEdgeModel(
      const duet::v1::GetEdgeModelRequest& request, absl::Time deadline,
      const EdgeModelChunkFn& on_chunk, CallCanceller* canceller) = 0;
  virtual absl::StatusOr<duet::v1::ModelStatus> GetModelStatus(
      const duet::v1::GetModelStatusRequest& request, absl::Time deadline) = 0;
  // "READY", "CONNECTING", "TRANSIENT_FAILURE", "IDLE", "SHUTDOWN".
  virtual std::string ConnectionState() const = 0;
};

}  // namespace duet::edge

#endif  // DUET_EDGE_CLOUD_CLIENT_H_
