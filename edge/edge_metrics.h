// The edge's Prometheus metrics (DESIGN.md §6), registered in one registry.
// Thread-safe (prometheus-cpp metrics are).
#ifndef DUET_EDGE_EDGE_METRICS_H_
#define DUET_EDGE_EDGE_METRICS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace duet::edge {

class EdgeMetrics {
 public:
  explicit EdgeMetrics(std::shared_ptr<prometheus::Registry> registry);

  // duet_query_duration_seconds{side="edge",stage}
  prometheus::Histogram& user_model_seconds() { return *user_model_; }
  prometheus::Histogram& cloud_seconds() { return *cloud_; }
  prometheus::Histogram& total_seconds() { return *total_; }
  // duet_queries_total{side="edge",code}
  void CountQuery(absl::StatusCode code);
  prometheus::Counter& uplink_bytes() { return *uplink_bytes_; }
  prometheus::Counter& downlink_bytes() { return *downlink_bytes_; }
  prometheus::Counter& scratchpad_updates() { return *scratchpad_updates_; }
  prometheus::Counter& relay_hits() { return *relay_hits_; }
  prometheus::Counter& embedding_fetches() { return *embedding_fetches_; }
  void MemoRecomputed(absl::Duration took);
  prometheus::Gauge& inflight() { return *inflight_; }
  // duet_cloud_streams_opened_total / duet_cloud_streams_ready: the cloud
  // client's ScoringSession streams (first opens, reconnects, rotations).
  prometheus::Counter& cloud_streams_opened() { return *streams_opened_; }
  prometheus::Gauge& cloud_streams_ready() { return *streams_ready_; }

  // Model updates (ModelUpdater): duet_edge_model_updates_total{result}
  // ("switched": history rebuilt during the switch; "switched_rebuilding":
  // switched, history left to the background rebuilder; "failed": an
  // attempt that will be retried), duet_edge_model_download_bytes_total,
  // duet_edge_model_update_seconds (download start to switched).
  void CountModelUpdate(const std::string& result);
  double model_updates_total(const std::string& result) const;
  prometheus::Counter& model_download_bytes() { return *download_bytes_; }
  prometheus::Histogram& model_update_seconds() { return *update_seconds_; }

  // duet_int8_arithmetic_info{arithmetic,isa,implementation} = 1: how the
  // int8 user top MLP runs on this device (common/kernels/int8_arithmetic.h).
  void SetInt8Arithmetic(const std::string& arithmetic, const std::string& isa,
                         const std::string& implementation);

  const std::shared_ptr<prometheus::Registry>& registry() const {
    return registry_;
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* queries_;
  prometheus::Family<prometheus::Counter>* model_updates_;
  prometheus::Counter* download_bytes_;
  prometheus::Histogram* update_seconds_;
  prometheus::Histogram *user_model_, *cloud_, *total_, *memo_seconds_;
  prometheus::Counter *uplink_bytes_, *downlink_bytes_, *scratchpad_updates_,
      *memo_recomputes_, *relay_hits_, *embedding_fetches_, *streams_opened_;
  prometheus::Gauge *inflight_, *streams_ready_;
};

}  // namespace duet::edge

#endif  // DUET_EDGE_EDGE_METRICS_H_
