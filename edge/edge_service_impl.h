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

// Each method is a streamed unary method (the generated
// WithStreamedUnaryMethod_*): the handler reads its request itself, so bytes
// that do not parse get INVALID_ARGUMENT naming the message type
// (common/rpc/message_bytes.h), not gRPC's INTERNAL with no message.
class EdgeServiceImpl final
    : public duet::v1::EdgeService::StreamedUnaryService {
 public:
  EdgeServiceImpl(ModelUpdater* updater, absl::Duration default_timeout)
      : updater_(updater), default_timeout_(default_timeout) {}

  grpc::Status StreamedRecommend(
      grpc::ServerContext* context,
      grpc::ServerUnaryStreamer<duet::v1::RecommendRequest,
                                duet::v1::RecommendResponse>* stream) override;
  grpc::Status StreamedRecordInteraction(
      grpc::ServerContext* context,
      grpc::ServerUnaryStreamer<duet::v1::RecordInteractionRequest,
                                duet::v1::RecordInteractionResponse>* stream)
      override;
  grpc::Status StreamedUpdateProfile(
      grpc::ServerContext* context,
      grpc::ServerUnaryStreamer<duet::v1::UpdateProfileRequest,
                                duet::v1::UpdateProfileResponse>* stream)
      override;
  grpc::Status StreamedGetState(
      grpc::ServerContext* context,
      grpc::ServerUnaryStreamer<duet::v1::GetStateRequest, duet::v1::EdgeState>*
          stream) override;

 private:
  absl::Time Deadline(const grpc::ServerContext& context) const;

  ModelUpdater* const updater_;
  const absl::Duration default_timeout_;
};

}  // namespace duet::edge

#endif  // DUET_EDGE_EDGE_SERVICE_IMPL_H_
