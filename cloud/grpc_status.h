// The one conversion from absl::Status to grpc::Status at duet-cloud's RPC
// edge (STYLE.md "Errors"): absl and gRPC codes share their numbering.
#ifndef DUET_CLOUD_GRPC_STATUS_H_
#define DUET_CLOUD_GRPC_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace duet::cloud {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

}  // namespace duet::cloud

#endif  // DUET_CLOUD_GRPC_STATUS_H_
