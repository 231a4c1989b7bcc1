// The one place edge code converts between absl::Status and grpc::Status
// (absl codes map one-to-one onto gRPC codes).
#ifndef DUET_EDGE_STATUS_CONVERSION_H_
#define DUET_EDGE_STATUS_CONVERSION_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace duet::edge {

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

}  // namespace duet::edge

#endif  // DUET_EDGE_STATUS_CONVERSION_H_
