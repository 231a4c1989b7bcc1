// CloudServer: the duet-cloud process around a ScoringCore. Loads the model,
// owns the gRPC server (ScoringService, grpc.health.v1, reflection), the
// Prometheus exposer with model info and energy metering, and the lifecycle:
// Run() serves until SIGTERM/SIGINT, then health goes NOT_SERVING, new
// queries are refused, in-flight ones finish within the grace period and
// the server stops. SIGHUP makes the ModelWatcher check the model directory
// at once (it also polls it): a new version is loaded in the background and
// swapped in. Create() must run before any other thread exists (it blocks
// SIGTERM/SIGINT/SIGHUP so only Run() receives them). Health also answers
// per served model version: service "duet.v1.ScoringService/v<N>".
#ifndef DUET_CLOUD_CLOUD_SERVER_H_
#define DUET_CLOUD_CLOUD_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cloud/model_watcher.h"
#include "cloud/scoring_core.h"
#include "cloud/scoring_service_impl.h"
#include "common/base/mutex.h"
#include "common/obs/energy_meter.h"
#include "common/obs/metrics.h"
#include "common/rpc/tls.h"
#include "grpcpp/grpcpp.h"

namespace duet::cloud {

struct CloudServerOptions {
  std::string model_dir;
  std::string listen = "127.0.0.1:50051";
  // TLS / mutual TLS of `listen` (--tls_*); empty: plaintext.
  common::ServerTlsOptions tls;
  std::string metrics_listen = "127.0.0.1:9091";  // empty: no exposer
  bool verify_checksums = true;
  ScoringCoreOptions core;
  int max_connection_age_s = 0;  // 0: connections live forever
  // After the max age's GOAWAY, streams still open get this long before the
  // connection is closed under them.
  int max_connection_age_grace_s = 120;
  absl::Duration shutdown_grace = absl::Seconds(10);
  int max_message_bytes = 8 << 20;
  // Poll model_dir/model.pbtxt for a new version this often; 0: only on
  // SIGHUP.
  int reload_poll_ms = 1000;
  // Empty: model_dir/release.pbtxt (ModelWatcher).
  std::string release_policy;
};

class CloudServer {
 public:
  static absl::StatusOr<std::unique_ptr<CloudServer>> Create(
      CloudServerOptions options);
  ~CloudServer();

  // Blocks until SIGTERM or SIGINT, then shuts down gracefully.
  void Run();
  // Graceful shutdown (idempotent); Run() calls it after a signal.
  void Shutdown();

  int port() const { return port_; }
  ScoringCore& core() { return *core_; }

 private:
  explicit CloudServer(CloudServerOptions options)
      : options_(std::move(options)) {}
  absl::Status Init();
  // After versions were added or retired: duet_model_info (the newest) and
  // one health service name per served version.
  void OnVersionsChanged();

  CloudServerOptions options_;
  std::unique_ptr<common::MetricsServer> metrics_server_;
  std::unique_ptr<common::InfoMetrics> info_;
  std::unique_ptr<common::EnergyMeter> energy_;
  std::unique_ptr<ScoringCore> core_;
  std::unique_ptr<ModelWatcher> watcher_;
  std::unique_ptr<ScoringServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  // Health service names "duet.v1.ScoringService/v<N>" set SERVING.
  common::Mutex health_mu_;
  std::vector<std::string> version_health_ ABSL_GUARDED_BY(health_mu_);
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_CLOUD_SERVER_H_
