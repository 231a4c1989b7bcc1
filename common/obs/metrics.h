// Prometheus plumbing shared by duet-edge and duet-cloud: the /metrics
// endpoint, standard histogram buckets, build/model info gauges and the
// process_* metrics prometheus-cpp does not provide. Names follow DESIGN.md §6
// (base units, `_total` counters, histograms rather than summaries).
#ifndef DUET_COMMON_OBS_METRICS_H_
#define DUET_COMMON_OBS_METRICS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/base/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace duet::common {

// 1-2-5 series from 1e`min_exponent` to 1e`max_exponent` inclusive, e.g.
// (-5, 1) -> {1e-5, 2e-5, 5e-5, 1e-4, ..., 5, 10}. Each bound is the double
// nearest its decimal value, so `le` labels print cleanly. Requires
// -22 <= min_exponent <= max_exponent <= 22.
std::vector<double> OneTwoFiveBuckets(int min_exponent, int max_exponent);

// Buckets for every duration histogram: 10 µs .. 10 s (19 bounds, seconds).
std::vector<double> LatencyBucketsSeconds();

// `address` ("host:port", "[v6]:port") with its port replaced by `port`: what
// a server asked for port 0 bound, for the startup logs of the /metrics and
// gRPC listeners. An address without a numeric ":port" suffix ("unix:/path")
// is returned unchanged.
std::string WithBoundPort(absl::string_view address, int port);

// Serves GET /metrics (Prometheus text format) for one shared Registry, plus
// the process_* metrics of a ProcessCollector. Owns the civetweb exposer and
// keeps the registry alive; thread-safe. Stops serving on destruction.
class MetricsServer {
 public:
  struct Options {
    // "host:port"; "[::1]:port" for IPv6; port 0 picks a free port.
    std::string listen_address = "0.0.0.0:9464";
    int num_threads = 2;
  };

  // Fails with InvalidArgument on a malformed address, Unavailable when the
  // port is in use, PermissionDenied for a privileged port; the message names
  // the address.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Create(
      const Options& options);

  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The registry scraped at /metrics; families built here appear there.
  const std::shared_ptr<prometheus::Registry>& registry() const {
    return registry_;
  }
  // The port actually bound (differs from the option when it was 0).
  int bound_port() const { return bound_port_; }
  const std::string& listen_address() const { return listen_address_; }
  // listen_address() with bound_port(): "127.0.0.1:43117".
  std::string bound_address() const {
    return WithBoundPort(listen_address_, bound_port_);
  }

  // Serves another collectable at /metrics for as long as it is alive.
  void RegisterCollectable(const std::weak_ptr<prometheus::Collectable>& c);

 private:
  MetricsServer(std::string listen_address,
                std::unique_ptr<prometheus::Exposer> exposer, int bound_port);

  const std::string listen_address_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> process_collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  const int bound_port_;
};

// process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes and process_start_time_seconds, read from
// procfs on every Collect() (a scrape), as client_golang's process collector
// does. A file that cannot be read drops its family from that scrape only.
// Thread-safe; `proc_root` is a seam so tests use a fake tree.
class ProcessCollector : public prometheus::Collectable {
 public:
  explicit ProcessCollector(std::string proc_root = "/proc");

  std::vector<prometheus::MetricFamily> Collect() const override;

  // Unix seconds at which the process started (from <proc>/self/stat and the
  // boot time in <proc>/stat); the construction time if procfs is unreadable.
  double start_time_seconds() const { return start_time_seconds_; }

 private:
  const std::string proc_root_;
  const double start_time_seconds_;
};

// The info-style gauges (value 1, data in labels): duet_build_info{version,
// side} and duet_model_info{name,version,signature}. The latter has at most
// one series, replaced by SetModel on every (re)load. Thread-safe.
class InfoMetrics {
 public:
  struct Options {
    std::string side;     // "edge" | "cloud" | a tool's name
    std::string version;  // build version, e.g. "0.1.0"
  };

  // Fails with InvalidArgument when side or version is empty, or when a
  // family of the same name but another type already exists in `registry`.
  static absl::StatusOr<std::unique_ptr<InfoMetrics>> Create(
      std::shared_ptr<prometheus::Registry> registry, const Options& options);

  void SetModel(const std::string& name, const std::string& version,
                const std::string& signature);

 private:
  InfoMetrics(std::shared_ptr<prometheus::Registry> registry,
              prometheus::Family<prometheus::Gauge>* model_family);

  const std::shared_ptr<prometheus::Registry> registry_;  // keeps families
  prometheus::Family<prometheus::Gauge>* const model_family_;
  common::Mutex mu_;
  prometheus::Gauge* model_gauge_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace duet::common

#endif  // DUET_COMMON_OBS_METRICS_H_
