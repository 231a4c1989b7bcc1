#include "edge/edge_service_impl.h"

#include <algorithm>

#include "common/rpc/grpc_status.h"

namespace duet::edge {
namespace {

template <typename T>
grpc::Status Reply(absl::StatusOr<T> result, T* response) {
  if (!result.ok()) return common::ToGrpcStatus(result.status());
  *response = *std::move(result);
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

grpc::Status EdgeServiceImpl::Recommend(
    grpc::ServerContext* context, const duet::v1::RecommendRequest* request,
    duet::v1::RecommendResponse* response) {
  return Reply(updater_->Recommend(*request, Deadline(*context)), response);
}

grpc::Status EdgeServiceImpl::RecordInteraction(
    grpc::ServerContext* context,
    const duet::v1::RecordInteractionRequest* request,
    duet::v1::RecordInteractionResponse* response) {
  return Reply(updater_->RecordInteraction(*request, Deadline(*context)),
               response);
}

grpc::Status EdgeServiceImpl::UpdateProfile(
    grpc::ServerContext*, const duet::v1::UpdateProfileRequest* request,
    duet::v1::UpdateProfileResponse* response) {
  return Reply(updater_->UpdateProfile(*request), response);
}

grpc::Status EdgeServiceImpl::GetState(grpc::ServerContext*,
                                       const duet::v1::GetStateRequest*,
                                       duet::v1::EdgeState* response) {
  *response = updater_->GetState();
  return grpc::Status::OK;
}

}  // namespace duet::edge
