#include "edge/edge_service_impl.h"

#include <algorithm>

#include "common/rpc/grpc_status.h"
#include "common/rpc/message_bytes.h"

namespace duet::edge {
namespace {

// Reads the request, runs `handle` on it and writes its response.
template <typename Request, typename Response, typename Handle>
grpc::Status Serve(grpc::ServerUnaryStreamer<Request, Response>* stream,
                   Handle handle) {
  Request request;
  if (grpc::Status s = common::ReadUnaryRequest(stream, &request); !s.ok()) {
    return s;
  }
  absl::StatusOr<Response> response = handle(request);
  if (!response.ok()) return common::ToGrpcStatus(response.status());
  stream->Write(*response);  // fails only if the client has gone
  return grpc::Status::OK;
}

}  // namespace

absl::Time EdgeServiceImpl::Deadline(const grpc::ServerContext& context) const {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return absl::Now() + default_timeout_;
  }
  return absl::FromChrono(deadline);
}

grpc::Status EdgeServiceImpl::StreamedRecommend(
    grpc::ServerContext* context,
    grpc::ServerUnaryStreamer<duet::v1::RecommendRequest,
                              duet::v1::RecommendResponse>* stream) {
  return Serve(stream, [&](const duet::v1::RecommendRequest& request) {
    return updater_->Recommend(request, Deadline(*context));
  });
}

grpc::Status EdgeServiceImpl::StreamedRecordInteraction(
    grpc::ServerContext* context,
    grpc::ServerUnaryStreamer<duet::v1::RecordInteractionRequest,
                              duet::v1::RecordInteractionResponse>* stream) {
  return Serve(stream, [&](const duet::v1::RecordInteractionRequest& request) {
    return updater_->RecordInteraction(request, Deadline(*context));
  });
}

grpc::Status EdgeServiceImpl::StreamedUpdateProfile(
    grpc::ServerContext*,
    grpc::ServerUnaryStreamer<duet::v1::UpdateProfileRequest,
                              duet::v1::UpdateProfileResponse>* stream) {
  return Serve(stream, [&](const duet::v1::UpdateProfileRequest& request) {
    return updater_->UpdateProfile(request);
  });
}

grpc::Status EdgeServiceImpl::StreamedGetState(
    grpc::ServerContext*,
    grpc::ServerUnaryStreamer<duet::v1::GetStateRequest, duet::v1::EdgeState>*
        stream) {
  return Serve(stream,
               [&](const duet::v1::GetStateRequest&)
                   -> absl::StatusOr<duet::v1::EdgeState> {
                 return updater_->GetState();
               });
}

}  // namespace duet::edge
