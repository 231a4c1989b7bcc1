// EdgeService over gRPC: a thin, stateless adapter from RPCs to the
// ModelUpdater, which owns the running model's Recommender (each call keeps
// the runtime it started on, across a model switch). It uses the synchronous
// API: the app on the device issues few concurrent calls, each handler's only
// wait (the cloud's Scores) is bounded by the call's deadline, and the sync
// server's thread pool grows with load; the callback API would save threads the
// device does not need. Deadline: the caller's, else --default_timeout_ms.
#ifndef DUET_EDGE_EDGE_SERVICE_IMPL_H_
#define DUET_EDGE_EDGE_SERVICE_IMPL_H_

#include "absl/time/time.h"
#include "duet/v1/edge.grpc.pb.h"
#include "edge/model_updater.h"

namespace duet::edge {

class EdgeServiceImpl final : public duet::v1::EdgeService::Service {
 public:
  EdgeServiceImpl(ModelUpdater* updater, absl::Duration default_timeout)
      : updater_(updater), default_timeout_(default_timeout) {}

  grpc::Status Recommend(grpc::ServerContext* context,
                         const duet::v1::RecommendRequest* request,
                         duet::v1::RecommendResponse* response) override;
  grpc::Status RecordInteraction(
      grpc::ServerContext* context,
      const duet::v1::RecordInteractionRequest* request,
      duet::v1::RecordInteractionResponse* response) override;
  grpc::Status UpdateProfile(
      grpc::ServerContext* context,
      const duet::v1::UpdateProfileRequest* request,
      duet::v1::UpdateProfileResponse* response) override;
  grpc::Status GetState(grpc::ServerContext* context,
                        const duet::v1::GetStateRequest* request,
                        duet::v1::EdgeState* response) override;

 private:
  absl::Time Deadline(const grpc::ServerContext& context) const;

  ModelUpdater* const updater_;
  const absl::Duration default_timeout_;
};

}  // namespace duet::edge

#endif  // DUET_EDGE_EDGE_SERVICE_IMPL_H_
