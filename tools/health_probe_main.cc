// duet-health-probe: asks a gRPC server's grpc.health.v1.Health/Check for one
// service and exits 0 iff it answers SERVING (the container HEALTHCHECK of
// duet-cloud and duet-edge; no grpcurl or grpc_health_probe in Debian 12).
//   duet-health-probe --addr 127.0.0.1:50051 [--service NAME] [--timeout_ms
//   1000]
// Exit codes: 0 SERVING, 1 any other status or RPC error, 2 bad usage.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/cli/flags.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:50051",
          "gRPC target of the server to check (host:port or any gRPC target)");
ABSL_FLAG(std::string, service, "",
          "Service name to check; empty means the server as a whole");
ABSL_FLAG(int, timeout_ms, 1000, "Deadline of the Check RPC in milliseconds");

namespace {

const char* ServingStatusName(
    grpc::health::v1::HealthCheckResponse::ServingStatus s) {
  using R = grpc::health::v1::HealthCheckResponse;
  switch (s) {
    case R::SERVING:
      return "SERVING";
    case R::NOT_SERVING:
      return "NOT_SERVING";
    case R::SERVICE_UNKNOWN:
      return "SERVICE_UNKNOWN";
    default:
      return "UNKNOWN";
  }
}

}  // namespace

int main(int argc, char** argv) {
  duet::common::ParseFlagsOrExit(
      argc, argv,
      "Exits 0 iff the gRPC server at --addr reports --service as SERVING "
      "through grpc.health.v1.Health/Check.\n"
      "Usage: duet-health-probe [--addr HOST:PORT] [--service NAME] "
      "[--timeout_ms MS]\n"
      "Exit status: 0 SERVING, 1 any other status or RPC error, 2 bad usage.",
      __FILE__);
  const std::string addr = absl::GetFlag(FLAGS_addr);
  const int timeout_ms = absl::GetFlag(FLAGS_timeout_ms);
  if (addr.empty() || timeout_ms <= 0) {
    duet::common::ExitWithUsageError(absl::StrCat(
        "--addr must be non-empty and --timeout_ms positive (got '", addr,
        "', ", timeout_ms, ")"));
  }

  auto channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(timeout_ms));
  // Fail fast (no wait_for_ready): a refused connection reports UNAVAILABLE
  // with its cause at once; callers such as HEALTHCHECK retry.
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    std::fprintf(stderr, "duet-health-probe: %s: Check failed: code %d: %s\n",
                 addr.c_str(), static_cast<int>(status.error_code()),
                 status.error_message().c_str());
    return 1;
  }
  const char* name = ServingStatusName(response.status());
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    std::fprintf(stderr, "duet-health-probe: %s: service '%s' is %s\n",
                 addr.c_str(), request.service().c_str(), name);
    return 1;
  }
  std::printf("%s\n", name);
  return 0;
}
