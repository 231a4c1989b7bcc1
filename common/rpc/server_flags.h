// The flags both daemons (duet-cloud, duet-edge) share, defined once:
// --model, --tls_cert, --tls_key, --tls_client_ca, --max_candidates,
// --default_timeout_ms and --shutdown_grace_s. Each daemon keeps its own
// --listen and --metrics_listen (their default ports differ). Only the
// daemons' mains use this file, so no other binary gets these flags.
#ifndef DUET_COMMON_RPC_SERVER_FLAGS_H_
#define DUET_COMMON_RPC_SERVER_FLAGS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rpc/tls.h"

namespace duet::common {

// __FILE__ of the file defining the shared flags, for ParseFlagsOrExit's
// list of files whose flags --help shows.
extern const char kServerFlagsFile[];

struct ServerFlags {
  std::string model_dir;
  ServerTlsOptions tls;
  int max_candidates = 0;
  absl::Duration default_timeout;
  absl::Duration shutdown_grace;
};

// The shared flags' values, after ParseFlagsOrExit. INVALID_ARGUMENT naming
// the flag when --model is missing or a value is out of range (the daemon
// then exits 2).
absl::StatusOr<ServerFlags> ReadServerFlags();

}  // namespace duet::common

#endif  // DUET_COMMON_RPC_SERVER_FLAGS_H_
