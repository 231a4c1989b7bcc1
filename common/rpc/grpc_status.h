// The one conversion between absl::Status and grpc::Status, used at the RPC
// edges of duet-cloud, duet-edge and the tools (STYLE.md "Errors"): absl and
// gRPC share their code numbering, so codes map one-to-one.
#ifndef DUET_COMMON_RPC_GRPC_STATUS_H_
#define DUET_COMMON_RPC_GRPC_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace duet::common {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

}  // namespace duet::common

#endif  // DUET_COMMON_RPC_GRPC_STATUS_H_
