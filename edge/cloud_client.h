// The edge's view of duet-cloud (the seam between the core and gRPC):
// start a query (BeginQuery, so the cloud begins the item side at once),
// send its user vector, await its scores; fetch user-table rows of items.
// GrpcCloudClient implements it over ScoringSession streams; tests use a
// fake. Implementations are thread-safe and never block past a deadline.
#ifndef DUET_EDGE_CLOUD_CLIENT_H_
#define DUET_EDGE_CLOUD_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "duet/v1/scoring.pb.h"

namespace duet::edge {

// One open query. Destroying it before Await returned abandons the query
// (the cloud is told to cancel it).
class CloudQuery {
 public:
  virtual ~CloudQuery() = default;
  // The id the query travels under (BeginQuery.query_id).
  virtual uint64_t id() const = 0;
  // `vector.query_id` is set by the caller to id().
  virtual absl::Status SendUserVector(const duet::v1::UserVector& vector) = 0;
  // The Scores, the cloud's QueryError as a status, UNAVAILABLE if the
  // connection broke, DEADLINE_EXCEEDED at `deadline`.
  virtual absl::StatusOr<duet::v1::Scores> Await(absl::Time deadline) = 0;
};

class CloudClient {
 public:
  virtual ~CloudClient() = default;
  // Sends `begin` (its query_id is assigned here). UNAVAILABLE at once when
  // the cloud is not connected.
  virtual absl::StatusOr<std::unique_ptr<CloudQuery>> BeginQuery(
      duet::v1::BeginQuery begin, absl::Time deadline) = 0;
  virtual absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> GetItemEmbeddings(
      const std::vector<int64_t>& item_ids, absl::Time deadline) = 0;
  // "READY", "CONNECTING", "TRANSIENT_FAILURE", "IDLE", "SHUTDOWN".
  virtual std::string ConnectionState() const = 0;
};

}  // namespace duet::edge

#endif  // DUET_EDGE_CLOUD_CLIENT_H_
