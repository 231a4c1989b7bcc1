// The duet-edge process: loads the model's edge part (the downloaded
// version models/CURRENT names, else --model), restores the user's state
// from --state_dir, connects to the cloud, and serves EdgeService,
// grpc.health.v1 and server reflection, plus /metrics on its own port.
// A ModelUpdater follows the version the cloud announces for this device
// (download, verify, switch between queries; health stays SERVING).
// A state of another version of the model is migrated (edge/state_store.h):
// health is NOT_SERVING and queries UNAVAILABLE until a HistoryRebuilder has
// refetched the history's rows from the cloud. Create fails (with the
// precise status) on a bad model, corrupt or foreign state, bad TLS files
// (common/rpc/tls.h), or a port in use. Shutdown is graceful and idempotent.
#ifndef DUET_EDGE_EDGE_SERVER_H_
#define DUET_EDGE_EDGE_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rpc/tls.h"

namespace duet::edge {

// The device id duet-edge generates once when --device_id is not given.
inline constexpr char kDeviceIdFile[] = "device_id";

struct EdgeServerOptions {
  std::string model_dir;
  std::string cloud_target;
  common::ClientTlsOptions cloud_tls;  // --cloud_tls_*; empty: plaintext
  int cloud_streams = 4;               // see GrpcCloudClient::Options
  absl::Duration cloud_stream_max_age = absl::Seconds(60);  // zero: never
  // HTTP/2 keepalive to the cloud (GrpcCloudClient::Options); zero time: off.
  absl::Duration cloud_keepalive_time = absl::Seconds(10);
  absl::Duration cloud_keepalive_timeout = absl::Seconds(5);
  std::string listen = "127.0.0.1:50061";
  common::ServerTlsOptions tls;  // --tls_*, for `listen`; empty: plaintext
  std::string metrics_listen = "127.0.0.1:9092";  // empty: no /metrics
  std::string state_dir;
  bool reset_state = false;
  std::string user_precision = "int8";  // int8 | fp32
  // auto (what common::Int8Kernels() recommends here) | full |
  // reduced-weights | reduced-activations
  std::string int8_arithmetic = "auto";
  std::string wire = "int8";  // int8 | fp32
  int max_candidates = 1024;
  absl::Duration default_timeout = absl::Seconds(2);
  int relay_cache_items = 256;
  double uplink_mbps = 0;
  absl::Duration uplink_rtt = absl::ZeroDuration();
  int snapshot_every = 1000;
  bool verify_checksums = true;
  // Model releases (ModelUpdater): the device's id for the release policy
  // (empty: <state_dir>/device_id, generated once); whether to download
  // and switch to the announced version; the GetModelStatus poll (zero:
  // never).
  std::string device_id;
  bool model_updates = true;
  absl::Duration model_check_interval = absl::Seconds(60);
};

// INVALID_ARGUMENT naming the flag when an option is missing or out of range
// (no I/O: the daemon checks its command line with it before starting).
absl::Status ValidateEdgeServerOptions(const EdgeServerOptions& options);

class EdgeServer {
 public:
  static absl::StatusOr<std::unique_ptr<EdgeServer>> Create(
      const EdgeServerOptions& options);
  ~EdgeServer();

  // The port EdgeService listens on (resolves ":0").
  int port() const;
  // Stops accepting calls, lets running ones finish until `grace` passes
  // (then cancels them), and stops the cloud session.
  void Shutdown(absl::Duration grace);
  // Blocks until Shutdown completes.
  void Wait();

 private:
  struct Impl;
  explicit EdgeServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace duet::edge

#endif  // DUET_EDGE_EDGE_SERVER_H_
