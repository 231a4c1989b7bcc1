#include "common/rpc/server_flags.h"

#include "absl/flags/flag.h"
#include "absl/status/status.h"

ABSL_FLAG(std::string, model, "",
          "Model directory (model.pbtxt + weight files); required. duet-edge "
          "reads only the edge part.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate (chain): serve over TLS (needs --tls_key). Empty: "
          "plaintext, logged as a WARNING.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: require and verify client certificates signed by "
          "it (mutual TLS); clients without one are refused.");
ABSL_FLAG(int, max_candidates, 1024, "Candidates per query at most.");
ABSL_FLAG(int, default_timeout_ms, 2000,
          "Deadline of a query whose client set none (no gRPC deadline and, "
          "on the cloud, BeginQuery.timeout_us = 0), in milliseconds.");
ABSL_FLAG(int, shutdown_grace_s, 10,
          "On SIGTERM/SIGINT: health turns NOT_SERVING, new calls are "
          "refused, and running ones get this many seconds to finish.");

namespace duet::common {

const char kServerFlagsFile[] = __FILE__;

absl::StatusOr<ServerFlags> ReadServerFlags() {
  ServerFlags f;
  f.model_dir = absl::GetFlag(FLAGS_model);
  if (f.model_dir.empty()) {
    return absl::InvalidArgumentError("--model is required");
  }
  f.tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  f.tls.key_file = absl::GetFlag(FLAGS_tls_key);
  f.tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  f.max_candidates = absl::GetFlag(FLAGS_max_candidates);
  f.default_timeout =
      absl::Milliseconds(absl::GetFlag(FLAGS_default_timeout_ms));
  const int grace_s = absl::GetFlag(FLAGS_shutdown_grace_s);
  if (grace_s < 0) {
    return absl::InvalidArgumentError("--shutdown_grace_s must be >= 0");
  }
  f.shutdown_grace = absl::Seconds(grace_s);
  return f;
}

}  // namespace duet::common
